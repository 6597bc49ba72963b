"""train-segmenter: an mmsegmentation model trained on the pseudo masks (docs/METHODS.md §4), the WSSS pipeline's
last training step; without pseudo masks, on the ground truth instead (the fully supervised upper bound).

mmengine's Runner does the training. Every checkpoint is copied into the output store as `last.pth`, and a
re-run resumes from that copy, since the local work dir dies with the pod. At the end the store holds
`checkpoint.pth` (weights and meta, no optimizer), `mmseg_config.py` and `metrics.json` (time, images/s, val
mIoU on the ground truth). Given `init_segmenter` (another train-segmenter's output store), training starts from
its `checkpoint.pth` instead of the preset's initial weights, unless `semi.warm_start` is false; the metrics name
the store (`initialised_from`). Under torchrun (WORLD_SIZE > 1) the same function trains data-parallel; rank 0
alone writes.

With `semi.labelled` set (`wsseg.semi.labelled`), only that subset of train trains on its ground truth; the other images
are left out, labelled by the pseudo masks (`semi.labels: pseudo`), or, with `segmenter.mode: classmix`, read as
unlabelled images. With `segmenter.mode: wilson`, it adds classes to the segmenter `segmenter.wilson.old_checkpoint`
names, from the step's train images (`wsseg.data.splits`) and their image labels alone: the model segments the
classes seen so far, no mask is read, and there is no validation (the seen classes' scores are the evaluate step's).

With `segmenter.self_training`, pseudo masks train two segmenters (`wsseg.wsss.self_training`): the first on the masks
as given, in `first-round/`; its labels of their uncertain band complete them in `relabelled/`, and the second,
the step's model, trains on those.
"""
from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import barrier
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

import wsseg.segmenter.dataset  # noqa: F401  (registers WssegDataset)
from wsseg.classes import ClassList
from wsseg.data import dataset_splits, load_samples
from wsseg.errors import ConfigError
from wsseg.incremental.wilson import seen_classes, step_image_ids
from wsseg.kube.train_job import default_launch
from wsseg.runtime.distributed import join_process_group
from wsseg.runtime.torchrun import world_position
from wsseg.runtime.weights import local_weights
from wsseg.segmenter import configs
from wsseg.segmenter.hooks import RESUME_KEY, StoreCheckpointHook
from wsseg.segmenter.models import is_config_file, listed, pretrained_weights
from wsseg.semi.labelled import SemiSplit, check_semi_settings, split_train
from wsseg.store import ArtifactStore, open_store
from wsseg.wsss.self_training import FIRST_ROUND, RELABELLED, relabel_band

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
MMSEG_CONFIG = "mmseg_config.py"
METRICS = "metrics.json"
# The train images left out, one `<image_id>.txt` each (its problem), written by whichever process met them.
SKIPPED = "skipped"
RESUME_COPY = "resume.pth"
# mmengine 0.10.7 resumes with torch.load's default weights_only=True (torch >= 2.6), which refuses the
# message hub its checkpoints carry (loss histories, pickled with their bound methods). These are exactly the
# globals it needs; the file is this step's own output in its own store.
RESUME_GLOBALS = [HistoryBuffer, getattr, np.dtype, np.ndarray, np.core.multiarray.scalar,
                  np.core.multiarray._reconstruct,
                  *(type(np.dtype(kind)) for kind in (np.float64, np.float32, np.int64))]


def default_config(preset: str) -> dict:
    return dict(configs.default_config(preset), launch=default_launch())


def train_segmenter(data_root, masks: ArtifactStore | None, out: ArtifactStore, config: dict,
                    classes: ClassList, strict: bool = False, init_segmenter: ArtifactStore | None = None) -> dict:
    settings = config["segmenter"]
    rank, world_size = world_position()
    cuda = torch.cuda.is_available()
    # On GPU mmengine's Runner joins the group (and sets the rank's device) itself.
    if world_size > 1 and not cuda:
        join_process_group(cuda)
    finished = _finished_run(out, settings["iterations"])
    if finished:
        log.info("train-segmenter: %s already holds a model trained for %d iterations; nothing to do",
                 out.uri, finished["iterations"])
        return dict(finished, rank=rank)
    self_training = None
    if _self_trains(settings, masks, config):
        masks, self_training = _relabelled_masks(data_root, masks, out, config, classes, strict)

    with tempfile.TemporaryDirectory(prefix="wsseg-segmenter-") as work_dir:
        settings = staged_settings(settings, Path(work_dir, "inputs"))
        split = semi_split(data_root, config, classes)
        init_segmenter = _warm_start(init_segmenter, config["semi"])
        if init_segmenter:
            # The segmenter given to the step outranks segmenter.init_checkpoint (the semi pipeline's baseline may
            # itself have started from that checkpoint); resuming from the store outranks both.
            settings["init_checkpoint"] = _staged_init_segmenter(init_segmenter, Path(work_dir, "inputs", "init"))
        if settings["mode"] == "wilson":
            classes, datasets = _wilson_datasets(data_root, masks, classes, settings["wilson"], strict)
        else:
            datasets = _datasets(data_root, masks, classes, settings, strict)
        if split:
            datasets.update(_semi_datasets(datasets["train"], split, masks, config))
        _record_skips(datasets, out.child(SKIPPED).uri)
        mmseg_config = configs.build_mmseg_config(settings, classes, datasets, work_dir, out.uri,
                                                  distributed=world_size > 1, cuda=cuda,
                                                  seed=config.get("seed", 0))
        mmseg_config.update(launcher="pytorch" if world_size > 1 else "none",
                            experiment_name=Path(work_dir).name)
        _resume_from_store(out, mmseg_config, work_dir)
        runner = Runner.from_cfg(mmseg_config)
        seconds = _train(runner)
        scores = runner.val() if "val" in datasets else {}
        metrics = _metrics(runner, settings, seconds, scores, world_size,
                           supervised=masks is None and settings["mode"] != "wilson",
                           skipped=len(out.child(SKIPPED).list()))
        if split:
            metrics.update(labelled_images=len(split.labelled), unlabelled_images=len(split.unlabelled))
        if init_segmenter:
            metrics["initialised_from"] = init_segmenter.uri
        if self_training:
            metrics["self_training"] = self_training
        if rank == 0:
            _publish(out, mmseg_config, metrics)
        barrier()
    log.info("train-segmenter: %d iterations in %.0f s (%.1f images/s), val mIoU %s -> %s",
             metrics["iterations"], seconds, metrics["images_per_s"], metrics.get("val_miou"), out.uri)
    return dict(metrics, rank=rank)


def _self_trains(settings: dict, masks: ArtifactStore | None, config: dict) -> bool:
    """Whether `segmenter.self_training` applies: to pseudo masks alone, trained on in mode standard."""
    if not settings["self_training"] or masks is None:
        return False  # the ground truth has no band to relabel
    if settings["mode"] != "standard" or config["semi"]["labelled"] is not None:
        log.info("train-segmenter: segmenter.self_training relabels the band of pseudo masks trained on alone, in "
                 "mode standard; training once in mode %s%s", settings["mode"],
                 " with semi.labelled" if config["semi"]["labelled"] is not None else "")
        return False
    return True


def _relabelled_masks(data_root, masks: ArtifactStore, out: ArtifactStore, config: dict, classes: ClassList,
                      strict: bool) -> tuple[ArtifactStore, dict]:
    """The pseudo masks with their band labelled by a first segmenter trained on them (`wsseg.wsss.self_training`),
    and what that round measured. Both rounds resume from the store."""
    first_round, relabelled = out.child(FIRST_ROUND), out.child(RELABELLED)
    once = dict(config, segmenter=dict(config["segmenter"], self_training=False))
    first = train_segmenter(data_root, masks, first_round, once, classes, strict)
    measured = dict(first_round=first_round.uri, first_round_val_miou=first.get("val_miou"), relabelled=relabelled.uri)
    if first["rank"] == 0:
        tta = {key: config["evaluate"][key] for key in ("multi_scale", "flip")}
        measured["relabel"] = relabel_band(data_root, masks, first_round, relabelled, classes, tta, strict)
    barrier()
    return relabelled, measured


def staged_settings(settings: dict, folder: Path) -> dict:
    """The settings with every file they name made local (store URIs fetched into `folder`) or, for a URL,
    tried: a missing or unreachable one fails here, before any data is read."""
    staged = dict(settings, pretrained=local_weights(pretrained_weights(settings), "segmenter.pretrained", folder),
                  init_checkpoint=local_weights(settings["init_checkpoint"], "segmenter.init_checkpoint", folder))
    if is_config_file(settings["model"]):
        staged["model"] = local_weights(settings["model"], "segmenter.model", folder)
    if settings["mode"] == "wilson":
        staged["wilson"] = dict(settings["wilson"],
                                old_checkpoint=str(_staged_old_segmenter(settings["wilson"], folder / "old")))
    return staged


def _warm_start(init_segmenter: ArtifactStore | None, semi: dict) -> ArtifactStore | None:
    """The segmenter to start from: `init_segmenter`, unless `semi.warm_start` is false (the semi pipeline hands
    the continued and classmix branches the baseline's segmenter whatever the config says)."""
    if init_segmenter and not semi["warm_start"]:
        log.info("train-segmenter: semi.warm_start is false; not starting from %s", init_segmenter.uri)
        return None
    return init_segmenter


def _staged_init_segmenter(init_segmenter: ArtifactStore, folder: Path) -> str:
    """A local copy of the checkpoint of the train-segmenter output `init_segmenter`, for mmengine's load_from."""
    if not init_segmenter.exists(CHECKPOINT):
        raise ConfigError(f"train-segmenter's init segmenter {init_segmenter.uri} holds no {CHECKPOINT}; give the "
                          "output of a finished train-segmenter, or none to start from the preset's initial weights")
    init_segmenter.get_file(CHECKPOINT, folder / CHECKPOINT)
    # A checkpoint without ClassMix's teacher leaves it unloaded (mmengine warns of its missing keys): its first
    # update copies the loaded student.
    log.info("train-segmenter: starting from %s/%s", init_segmenter.uri, CHECKPOINT)
    return str(folder / CHECKPOINT)


def _staged_old_segmenter(wilson: dict, folder: Path) -> Path:
    """A local copy of the segmenter `segmenter.wilson.old_checkpoint` names (its checkpoint and mmseg config)."""
    if not wilson["old_checkpoint"]:
        raise ConfigError("segmenter.mode: wilson adds classes to a trained segmenter; set "
                          "segmenter.wilson.old_checkpoint to the previous step's train-segmenter output (a folder or "
                          "store URI holding checkpoint.pth and mmseg_config.py)")
    store = open_store(wilson["old_checkpoint"])
    for key in (CHECKPOINT, MMSEG_CONFIG):
        if not store.exists(key):
            raise ConfigError(f"segmenter.wilson.old_checkpoint: {store.uri} holds no {key}; name the output of the "
                              "previous step's train-segmenter")
        store.get_file(key, folder / key)
    return folder


def _wilson_datasets(data_root, masks: ArtifactStore | None, classes: ClassList, wilson: dict,
                     strict: bool) -> tuple[ClassList, dict]:
    """The classes seen by the step, and its train images without masks (their image labels are packed)."""
    if masks:
        raise ConfigError(f"train-segmenter was given masks ({masks.uri}), but segmenter.mode: wilson learns the new "
                          "classes from image labels alone; leave the masks out")
    seen = seen_classes(classes, wilson)
    train = dict(type="WssegDataset", dataset_root=str(data_root), metainfo=configs.metainfo(seen), strict=strict,
                 split="train", image_ids=step_image_ids(data_root, classes, wilson), without_masks=True,
                 annotation_classes=list(classes.names))
    return seen, dict(train=train)


def _datasets(data_root, masks: ArtifactStore | None, classes: ClassList, settings: dict, strict: bool) -> dict:
    """Dataset dicts for training (pseudo masks, or ground truth) and, where val has masks, validation."""
    common = dict(type="WssegDataset", dataset_root=str(data_root), metainfo=configs.metainfo(classes),
                  strict=strict)
    datasets = dict(train=dict(common, split="train", mask_store=masks.uri if masks else None))
    if settings["validate"] and _has_val_masks(data_root, classes):
        datasets["val"] = dict(common, split="val", test_mode=True)
    return datasets


def semi_split(data_root, config: dict, classes: ClassList) -> SemiSplit | None:
    """The train split's labelled subset and the rest, where `semi.labelled` asks for one."""
    semi = config["semi"]
    check_semi_settings(semi, config["segmenter"]["mode"])
    if semi["labelled"] is None:
        return None
    split = split_train(load_samples(data_root, "train", classes), semi, config.get("seed", 0))
    if not split.unlabelled and (semi["labels"] == "pseudo" or config["segmenter"]["mode"] == "classmix"):
        raise ConfigError(f"semi.labelled takes all {len(split.labelled)} train images, leaving none to learn "
                          "from without their masks; label a fraction such as \"1/8\" or fewer images")
    return split


def _semi_datasets(train: dict, split: SemiSplit, masks: ArtifactStore | None, config: dict) -> dict:
    """The train dataset dicts of semi-supervised training: the labelled subset on its ground truth, the other
    images on pseudo masks (`semi.labels: pseudo`) and, for ClassMix, those images without masks."""
    others = [sample.image_id for sample in split.unlabelled]
    datasets = dict(train=[dict(train, image_ids=[sample.image_id for sample in split.labelled], mask_store=None)])
    pseudo_masks = _pseudo_mask_store(masks, config["semi"])
    if pseudo_masks:
        datasets["train"].append(dict(train, image_ids=others, mask_store=pseudo_masks.uri))
    if config["segmenter"]["mode"] == "classmix":
        datasets["unlabelled"] = dict(train, image_ids=others, mask_store=None, without_masks=True)
    return datasets


def _pseudo_mask_store(masks: ArtifactStore | None, semi: dict) -> ArtifactStore | None:
    """Where the images outside the labelled subset take their masks from: none, unless `semi.labels: pseudo`."""
    if semi["labels"] != "pseudo":
        if masks:
            raise ConfigError(f"train-segmenter was given pseudo masks ({masks.uri}) and semi.labelled, whose subset "
                              "trains on its ground truth; set semi.labels: pseudo to label the other train images "
                              "with those masks, or semi.labelled: null to train on the masks alone")
        return None
    if masks:
        return masks
    if semi["pseudo_masks"]:
        return open_store(semi["pseudo_masks"])
    raise ConfigError("semi.labels: pseudo labels the train images outside semi.labelled with a WSSS run's pseudo "
                      "masks, but none were given; name their store in semi.pseudo_masks (such as "
                      "<store>/<run>/propagate) or give it to train-segmenter as --masks")


def _has_val_masks(data_root, classes: ClassList) -> bool:
    return "val" in dataset_splits(data_root) and any(
        sample.mask_path for sample in load_samples(data_root, "val", classes))


def _finished_run(out: ArtifactStore, iterations: int) -> dict | None:
    """The stored metrics when `out` holds a model trained for `iterations` already (a retried task)."""
    if not (out.exists(CHECKPOINT) and out.exists(METRICS)):
        return None
    metrics = json.loads(out.get_bytes(METRICS))
    return metrics if metrics.get("iterations", 0) >= iterations else None


def _resume_from_store(out: ArtifactStore, mmseg_config, work_dir: str) -> None:
    if not out.exists(RESUME_KEY):
        return
    local_copy = Path(work_dir, RESUME_COPY)
    out.get_file(RESUME_KEY, local_copy)
    mmseg_config.update(resume=True, load_from=str(local_copy))
    log.info("train-segmenter: resuming from %s/%s", out.uri, RESUME_KEY)


def _train(runner: Runner) -> float:
    """Seconds spent in training (model building and resuming included, validation not)."""
    started = time.perf_counter()
    with torch.serialization.safe_globals(RESUME_GLOBALS):
        runner.train()
    return time.perf_counter() - started


def _record_skips(datasets: dict, skip_store: str) -> None:
    """Have the training datasets record each image they leave out in `skip_store`: a DataLoader worker or another
    rank meets a corrupt file in its own copy of the dataset, where this process cannot count it."""
    for name in ("train", "unlabelled"):
        for part in listed(datasets.get(name)):
            part["skip_store"] = skip_store


def _metrics(runner: Runner, settings: dict, seconds: float, scores: dict, world_size: int,
             supervised: bool, skipped: int) -> dict:
    start_iter = _checkpoint_hook(runner).start_iter
    # Mean time of this run's iterations, as mmengine's IterTimerHook measured them.
    step_seconds = runner.message_hub.get_scalar("train/time").mean() if runner.iter > start_iter else 0.0
    metrics = dict(
        iterations=runner.iter, resumed_from_iteration=start_iter, training_time_s=round(seconds, 1),
        images_per_s=round(settings["batch_size"] * world_size / step_seconds, 2) if step_seconds else 0.0,
        world_size=world_size, supervised=supervised, skipped_images=skipped)
    if scores:
        metrics.update(val_miou=round(scores["mIoU"], 2), val_pixel_accuracy=round(scores["aAcc"], 2))
    return metrics


def _checkpoint_hook(runner: Runner) -> StoreCheckpointHook:
    return next(hook for hook in runner.hooks if isinstance(hook, StoreCheckpointHook))


def _publish(out: ArtifactStore, mmseg_config, metrics: dict) -> None:
    """Weights and meta only, from the last iteration's `last.pth` (saved by this run, or, when it had nothing left
    to train, the one it resumed from): the optimizer state is for resuming, and `last.pth` keeps it."""
    state = torch.load(io.BytesIO(out.get_bytes(RESUME_KEY)), map_location="cpu", weights_only=False)
    with out.open_write(CHECKPOINT) as file:
        torch.save(dict(meta=state["meta"], state_dict=state["state_dict"]), file)
    out.put_bytes(MMSEG_CONFIG, mmseg_config.pretty_text.encode())
    out.put_bytes(METRICS, json.dumps(metrics, indent=2).encode())
