"""train-irn: IRNet's displacement and boundary branches on the CAM classifier's backbone, learned from the pseudo
masks' inter-pixel relations (IRN, Ahn et al. CVPR'19; docs/METHODS.md §1.20). The first of the instance steps;
off unless `instances.enabled`, and then the step does nothing.

The backbone starts from the trained classifier's and learns with the branches (IRN freezes its own; §1.20 says
why not here). Writes `last.pth` after every epoch, so a killed run resumes, then `checkpoint.pth`, `config.yaml`
and `summary.json`. This module owns the config's `instances` section, which the group-instances and
train-instance-heads steps read too.
"""
from __future__ import annotations

import copy
import json
import logging
import time

import torch
from torch.utils.data import DataLoader

from wsseg.classes import ClassList
from wsseg.config import dump_config
from wsseg.data import load_samples
from wsseg.data.images import working_scale
from wsseg.errors import ConfigError, DataError
from wsseg.steps.train_affinity import load_classifier_backbone
from wsseg.store import ArtifactStore
from wsseg.wsss.relation_data import RelationCrops
from wsseg.wsss.training import (
    load_from_store,
    pick_device,
    poly_schedule,
    resume_training,
    save_progress,
    save_to_store,
    train_epoch,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
RESUME = "last.pth"


def default_config(preset: str) -> dict:
    # IRN's branch widths (32 per stage for boundaries, 256 for displacements), pairs within radius 10 on the
    # stride-4 grid, rescaling 0.5-1.5; its 3 epochs are over VOC's 10582 train_aug images, 8 here as affinity's.
    branches = {"boundary_channels": 32, "displacement_channels": 256, "radius": 10, "crop_size": 512,
                "scale_range": [0.5, 1.5], "batch_size": 16, "epochs": 8,
                "optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 1e-4}, "num_workers": 4}
    config = {
        "enabled": False,
        "irn": branches,
        # IRN's grouping constants: 300 centroid refinement steps (any number >= 100), converging regions where
        # |D| < 2.5 cells, walks of radius 5 over affinities raised to β 10, fragments under 1 % of the image
        # scored 0. IRN walks 256 steps on VOC's grids; walk_reach keeps that share of the grid (as affinity's).
        # boundary_threshold (not IRN's) cuts the clusters where B is at least that. It stays off: the one value tried
        # (0.3) was chosen on the shapes look's instance labels, which a method from image labels may not have, and on
        # held-out herds it moved val mAP@0.5 by -0.2 (docs/RESULTS.md §18).
        "grouping": {"centroid_iterations": 300, "centroid_threshold": 2.5, "walk_radius": 5, "beta": 10.0,
                     "walk_reach": 0.6, "min_fragment": 0.01, "boundary_threshold": None},
        # The instance model: the same branches on the trained segmenter, learned from the instance pseudo labels.
        "heads": copy.deepcopy(branches),
        "device": "auto", "precision": "bf16",
    }
    if preset in ("cpu", "cpu-tiny"):
        # The classifier's crops and rate on the CPU presets. Their working size is about a third of a VOC image:
        # pairs within radius 5 (the affinity step's; IRN's 10 would span a third of a 32-cell crop), branch
        # widths scaled to the quarter-width backbones (deepest stage 128 to 192 channels, ResNet-50's 2048).
        small = {"boundary_channels": 16, "displacement_channels": 64, "radius": 5, "crop_size": 128,
                 "batch_size": 8, "epochs": 20, "num_workers": 0,
                 "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 1e-4}}
        if preset == "cpu-tiny":
            small.update(boundary_channels=8, displacement_channels=16, radius=3, crop_size=64, batch_size=4,
                         epochs=1)
        config["irn"].update(copy.deepcopy(small))
        config["heads"].update(copy.deepcopy(small))
        # IRN's 2.5 cells scaled to that third (0.8, rounded up): on the tuning look's 32-cell grids |D| < 2.5 held
        # across whole objects and the background between them, one cluster for most images; pseudo labels' mAP@0.5
        # 72.6 at 2.5, 74.0 at 1.0 (100 train images, backbone frozen).
        config["grouping"]["centroid_threshold"] = 1.0
    return config


def train_irn(data_root, classifier: ArtifactStore, masks: ArtifactStore, out: ArtifactStore, config: dict,
              classes: ClassList, strict: bool = False) -> dict:
    if not config["instances"]["enabled"]:
        return {"instances": "disabled"}
    settings = config["instances"]["irn"]
    torch.manual_seed(config.get("seed", 0))
    device = pick_device(config["instances"]["device"])
    with_masks = {key[:-4] for key in masks.list() if key.endswith(".png") and "/" not in key}
    samples = [sample for sample in load_samples(data_root, "train", classes) if sample.image_id in with_masks]
    if not samples:
        raise DataError(masks.uri, "no pseudo mask to learn inter-pixel relations from; run refine first")
    model = build_irn(config).to(device)
    backbone_tensors = load_classifier_backbone(model, classifier)
    scales = [working_scale(*_image_shape(sample), config["working_size"]) for sample in samples]
    crops = RelationCrops(samples, masks, scales, settings, model.mean.flatten().cpu().numpy())
    started = time.perf_counter()
    first_epoch, loss = train_relations(model, model, type(model).loss, crops, settings, device,
                                        config["instances"]["precision"], out, "IRN")
    save_to_store(out, CHECKPOINT, {"state_dict": model.state_dict(), "config": settings,
                                    "backbone": config["classifier"]["model"]["backbone"]})
    out.put_bytes("config.yaml", dump_config(config).encode())
    summary = dict(images=len(samples), backbone_tensors=backbone_tensors, epochs=settings["epochs"],
                   resumed_from_epoch=first_epoch, loss=loss and round(loss, 4),
                   seconds=round(time.perf_counter() - started, 1))
    out.put_bytes("summary.json", json.dumps(summary, indent=2).encode())
    log.info("train-irn: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


def build_irn(config: dict, backbone: dict | None = None, settings: dict | None = None) -> torch.nn.Module:
    from mmseg.registry import MODELS

    import wsseg.wsss.classifiers  # noqa: F401  (registers InterPixelRelationNet)

    settings = settings or config["instances"]["irn"]
    backbone = copy.deepcopy(backbone or config["classifier"]["model"]["backbone"])
    return MODELS.build({"type": "InterPixelRelationNet", "backbone": backbone,
                         "boundary_channels": settings["boundary_channels"],
                         "displacement_channels": settings["displacement_channels"]})


def load_irn(store: ArtifactStore, config: dict, device) -> torch.nn.Module:
    if not store.exists(CHECKPOINT):
        raise ConfigError(f"{store.uri}: no {CHECKPOINT}; instances.enabled needs the train-irn step's model")
    state = load_from_store(store, CHECKPOINT)
    model = build_irn(config, state["backbone"], state["config"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def train_relations(model, trainable: torch.nn.Module, losses, crops: RelationCrops, settings: dict, device,
                    precision: str, out: ArtifactStore, what: str) -> tuple[int, float | None]:
    """Train `trainable` (`model` or the part of it that learns) for `settings["epochs"]` on `crops`, resuming from
    and saving to `out`'s RESUME after each epoch; `losses(model, images, labels, radius)` is a dict of loss terms.
    Returns the epoch it started from and the last epoch's mean loss (None when none was left to train)."""
    loader = DataLoader(crops, batch_size=settings["batch_size"], shuffle=True, num_workers=settings["num_workers"],
                        drop_last=len(crops) > settings["batch_size"])
    optimizer = build_optimizer(trainable.parameters(), settings["optimizer"])
    schedule = poly_schedule(optimizer, settings["epochs"] * len(loader))
    first_epoch = resume_training(out, RESUME, trainable, optimizer, schedule, what)

    def loss_of(model, images, labels):
        return sum(losses(model, images, labels, settings["radius"]).values())

    loss = None
    for epoch in range(first_epoch, settings["epochs"]):
        loss = train_epoch(model, loader, loss_of, optimizer, schedule, device, precision, f"{what} epoch {epoch + 1}")
        save_progress(out, RESUME, trainable, optimizer, schedule, epoch + 1)
    return first_epoch, loss


def build_optimizer(parameters, settings: dict) -> torch.optim.Optimizer:
    """The optimizer of IRN's branches, a `torch.optim` class by its `type`. One rate for both branches: IRN's SGD
    gives the displacement branch 10× the boundary branch's to make up for its L1 loss's small gradients, which
    Adam's steps do not scale with."""
    optimizer = getattr(torch.optim, settings["type"], None)
    if optimizer is None:
        raise ConfigError(f"instances: optimizer type {settings['type']!r} is not in torch.optim (such as AdamW)")
    return optimizer(parameters, **{key: value for key, value in settings.items() if key != "type"})


def _image_shape(sample) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(sample.image_path) as image:  # the header alone
            return image.height, image.width
    except OSError as error:
        raise DataError(sample.image_path, f"cannot read image: {error}") from None
