"""train-instance-heads: the instance model, IRN's displacement and boundary heads on the trained segmenter, learned
from the instance pseudo labels (`wsseg.wsss.instance_segmentor`, docs/METHODS.md §1.20). Off unless
`instances.enabled`; then the step does nothing.

The segmenter (train-segmenter's output) is frozen and only the heads train, so the model's semantic predictions
are the segmenter's. Writes `last.pth` (the heads, optimizer and schedule) after every epoch, so a killed run
resumes, then what train-segmenter writes, so that anything that loads a segmenter loads this one
(`wsseg.segmenter.inference.load_segmenter`, `wsseg predict`): `checkpoint.pth` (the segmenter's meta, the whole
model's weights) and `mmseg_config.py` (the segmenter's, its model an `InstanceSegmentor`); then `config.yaml` and
`summary.json`.
"""
from __future__ import annotations

import inspect
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsseg.classes import ClassList
from wsseg.config import dump_config
from wsseg.data import load_samples
from wsseg.errors import ConfigError, DataError
from wsseg.steps.train_irn import train_relations
from wsseg.store import ArtifactStore
from wsseg.wsss.classifiers.cam_classifier import IMAGENET_MEAN
from wsseg.wsss.instance_labels import stored_ids
from wsseg.wsss.relation_data import RelationCrops
from wsseg.wsss.training import pick_device

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
MMSEG_CONFIG = "mmseg_config.py"
SEGMENTOR_MODULE = "wsseg.wsss.instance_segmentor"


def train_instance_heads(data_root, segmenter: ArtifactStore, instance_labels: ArtifactStore, out: ArtifactStore,
                         config: dict, classes: ClassList, strict: bool = False) -> dict:
    if not config["instances"]["enabled"]:
        return {"instances": "disabled"}
    settings = config["instances"]["heads"]
    torch.manual_seed(config.get("seed", 0))
    device = pick_device(config["instances"]["device"])
    labelled = stored_ids(instance_labels)
    samples = [sample for sample in load_samples(data_root, "train", classes) if sample.image_id in labelled]
    if not samples:
        raise DataError(instance_labels.uri, "no instance pseudo labels to learn from; run group-instances first")
    model, mmseg_config, meta = build_instance_model(segmenter, settings)
    model.to(device)
    scales = [_prediction_scale(model, sample) for sample in samples]
    crops = RelationCrops(samples, instance_labels, scales, settings, np.asarray(IMAGENET_MEAN, np.float32))
    started = time.perf_counter()
    first_epoch, loss = train_relations(model, model.relations_head, type(model).relation_loss, crops, settings,
                                        device, config["instances"]["precision"], out, "instance heads")
    with out.open_write(CHECKPOINT) as file:
        torch.save({"meta": meta, "state_dict": {key: value.cpu() for key, value in model.state_dict().items()}},
                   file)
    out.put_bytes(MMSEG_CONFIG, mmseg_config.pretty_text.encode())
    out.put_bytes("config.yaml", dump_config(config).encode())
    summary = dict(images=len(samples), epochs=settings["epochs"], resumed_from_epoch=first_epoch,
                   loss=loss and round(loss, 4), seconds=round(time.perf_counter() - started, 1),
                   segmenter=segmenter.uri)
    out.put_bytes("summary.json", json.dumps(summary, indent=2).encode())
    log.info("train-instance-heads: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


def build_instance_model(segmenter: ArtifactStore, settings: dict):
    """(the InstanceSegmentor over the segmenter in the store `segmenter`, with its weights; its mmseg config; the
    segmenter checkpoint's meta)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from wsseg.segmenter.inference import stored_config

    for key in (CHECKPOINT, MMSEG_CONFIG):
        if not segmenter.exists(key):
            raise ConfigError(f"{segmenter.uri} holds no {key}; train-instance-heads puts its heads on a trained "
                              "segmenter: give the train-segmenter step's output")
    with tempfile.TemporaryDirectory(prefix="wsseg-instances-") as folder:
        for key in (CHECKPOINT, MMSEG_CONFIG):
            segmenter.get_file(key, Path(folder, key))
        mmseg_config = stored_config(Path(folder, MMSEG_CONFIG))
        # The segmenter's own checkpoint (train-segmenter's output): its meta holds more than tensors.
        state = torch.load(Path(folder, CHECKPOINT), map_location="cpu", weights_only=False)
    mmseg_config.model = instance_model_config(mmseg_config.model, settings)
    imports = list(mmseg_config.get("custom_imports", {}).get("imports", []))
    mmseg_config.custom_imports = dict(imports=[*imports, SEGMENTOR_MODULE], allow_failed_imports=False)
    import wsseg.wsss.instance_segmentor  # noqa: F401  (registers InstanceSegmentor)

    init_default_scope(mmseg_config.get("default_scope", "mmseg"))  # the data preprocessor is mmseg's, by name
    model = MODELS.build(mmseg_config.model)
    _load_segmenter_weights(model, state["state_dict"], segmenter.uri)
    model.cfg = mmseg_config
    return model, mmseg_config, state.get("meta", {})


def instance_model_config(segmenter_model: dict, settings: dict) -> dict:
    """The segmenter's model dict as an InstanceSegmentor: the arguments an EncoderDecoder takes (a mode's segmentor,
    SEC's or ClassMix's, adds training options that prediction does not read) and the heads' widths."""
    from mmseg.models.segmentors import EncoderDecoder

    accepted = set(inspect.signature(EncoderDecoder.__init__).parameters) - {"self"}
    model = {key: value for key, value in dict(segmenter_model).items() if key in accepted}
    return dict(model, type="InstanceSegmentor",
                relations=dict(boundary_channels=settings["boundary_channels"],
                               displacement_channels=settings["displacement_channels"]))


def _load_segmenter_weights(model, weights: dict, source: str) -> None:
    """The segmenter's weights into every part of `model` but the heads; a part they miss would predict at random."""
    own = {key for key in model.state_dict() if not key.startswith("relations_head.")}
    missing = sorted(own - set(weights))
    if missing:
        raise ConfigError(f"{source}/{CHECKPOINT} lacks {len(missing)} of the segmenter's tensors (such as "
                          f"{missing[0]}); give the output of a finished train-segmenter")
    model.load_state_dict({key: weights[key] for key in own}, strict=False)


def _prediction_scale(model, sample) -> float:
    from PIL import Image

    from wsseg.segmenter.inference import prediction_scale

    try:
        with Image.open(sample.image_path) as image:  # the header alone
            return prediction_scale(model, image.height, image.width)
    except OSError as error:
        raise DataError(sample.image_path, f"cannot read image: {error}") from None
