"""train-affinity: an AffinityNet on the confident pixels of the pseudo masks (PSA, Ahn & Kwak CVPR'18), for the
random walk of the propagate step. Off unless `affinity.enabled`; then the step does nothing.

The backbone starts from the trained classifier's (no other weights are at hand offline, and IRN too grows its
affinity branches from the CAM network). Writes `last.pth` after every epoch, so a killed run resumes, then
`checkpoint.pth` and `config.yaml`.
"""
from __future__ import annotations

import copy
import json
import logging
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsseg.classes import ClassList
from wsseg.config import dump_config
from wsseg.data import load_samples, read_image
from wsseg.data.images import working_scale
from wsseg.errors import ConfigError, DataError
from wsseg.runtime.weights import load_fitting_weights
from wsseg.store import ArtifactStore
from wsseg.wsss.classifier import CHECKPOINT as CLASSIFIER_CHECKPOINT
from wsseg.wsss.classifiers.affinity_net import EMBEDDING_STRIDE
from wsseg.wsss.ensemble import first_classifier
from wsseg.wsss.pseudo_masks import decode_mask_png
from wsseg.wsss.training import (
    load_from_store,
    pick_device,
    poly_schedule,
    random_crop,
    resume_training,
    save_progress,
    save_to_store,
    train_epoch,
    uniform,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
RESUME = "last.pth"


def default_config(preset: str) -> dict:
    config = {"enabled": False, "embedding_channels": 64,
              # PSA's and IRN's pairs within radius 5. Affinities raised to β: PSA's 8, IRN's 10; on the tuning
              # look (affinity's train pseudo-mask mIoU) β 4, 8, 12 and 16 gave 78.87, 82.70, 84.92 and 84.42.
              # IRN walks 2^8 steps on a stride-4 grid of VOC images, about 90x125 cells: a walk of t steps
              # reaches radius·√t = 80 cells, some 0.6-0.8 of the grid's short side. `walk_reach` keeps that share
              # on any grid; on the tuning set's 32x32 grids 256 steps leaked across objects (CAM mIoU 62.5) where
              # 16 (reach 0.6) gave 73.1; at β 8 reaches 0.3, 0.6 and 1.0 gave masks of 82.87, 82.70 and 80.21.
              "radius": 5, "beta": 12.0, "walk_reach": 0.6,
              "crop_size": 448, "scale_range": [0.7, 1.0], "batch_size": 8, "epochs": 8,
              "optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 1e-4}, "num_workers": 4,
              "device": "auto", "precision": "bf16"}
    if preset in ("cpu", "cpu-tiny"):
        # The classifier's crops and rate on the CPU presets (its backbone is where this one starts).
        config.update(crop_size=128, num_workers=0, epochs=10,
                      optimizer={"type": "AdamW", "lr": 1e-3, "weight_decay": 1e-4})
        if preset == "cpu-tiny":
            config.update(crop_size=64, batch_size=4, epochs=1, radius=3)
    return config


def train_affinity(data_root, classifier: ArtifactStore, masks: ArtifactStore, out: ArtifactStore, config: dict,
                   classes: ClassList, strict: bool = False) -> dict:
    settings = config["affinity"]
    if not settings["enabled"]:
        return {"affinity": "disabled"}
    torch.manual_seed(config.get("seed", 0))
    device = pick_device(settings["device"])
    with_masks = {key[:-4] for key in masks.list() if key.endswith(".png") and "/" not in key}
    samples = [sample for sample in load_samples(data_root, "train", classes) if sample.image_id in with_masks]
    if not samples:
        raise DataError(masks.uri, "no pseudo mask to learn affinities from; run refine first")
    model = build_affinity_net(config).to(device)
    backbone_tensors = load_classifier_backbone(model, classifier)
    images = SeedImages(samples, masks, settings, config["working_size"], model.mean.flatten().numpy())
    loader = DataLoader(images, batch_size=settings["batch_size"], shuffle=True, num_workers=settings["num_workers"])
    optimizer = torch.optim.AdamW(model.parameters(), **{k: v for k, v in settings["optimizer"].items()
                                                         if k != "type"})
    schedule = poly_schedule(optimizer, settings["epochs"] * len(loader))
    first_epoch = resume_training(out, RESUME, model, optimizer, schedule, "affinity")

    def loss_of(model, images, labels):
        return sum(model.loss(images, labels, settings["radius"]).values())

    started, loss = time.perf_counter(), None
    for epoch in range(first_epoch, settings["epochs"]):
        loss = train_epoch(model, loader, loss_of, optimizer, schedule, device, settings["precision"],
                           f"affinity epoch {epoch + 1}")
        save_progress(out, RESUME, model, optimizer, schedule, epoch + 1)
    save_to_store(out, CHECKPOINT, {"state_dict": model.state_dict(), "config": settings,
                                    "backbone": config["classifier"]["model"]["backbone"]})
    out.put_bytes("config.yaml", dump_config(config).encode())
    summary = dict(images=len(samples), backbone_tensors=backbone_tensors, epochs=settings["epochs"],
                   resumed_from_epoch=first_epoch, loss=loss and round(loss, 4),
                   seconds=round(time.perf_counter() - started, 1))
    out.put_bytes("summary.json", json.dumps(summary, indent=2).encode())
    log.info("train-affinity: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


def build_affinity_net(config: dict, backbone: dict | None = None) -> torch.nn.Module:
    from mmseg.registry import MODELS

    import wsseg.wsss.classifiers  # noqa: F401  (registers AffinityNet)

    backbone = copy.deepcopy(backbone or config["classifier"]["model"]["backbone"])
    return MODELS.build({"type": "AffinityNet", "backbone": backbone,
                         "channels": config["affinity"]["embedding_channels"]})


def load_affinity_net(store: ArtifactStore, config: dict, device) -> torch.nn.Module:
    if not store.exists(CHECKPOINT):
        raise ConfigError(f"{store.uri}: no {CHECKPOINT}; affinity.enabled needs the train-affinity step's model")
    state = load_from_store(store, CHECKPOINT)
    model = build_affinity_net(config, state["backbone"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def load_classifier_backbone(model: torch.nn.Module, classifier: ArtifactStore) -> int:
    """Starts the affinity net from the classifier's backbone (AffinityNet grows from the CAM network; of an ensemble
    or of adversarial erasing's rounds, from the first classifier's) and returns how many tensors it took; a
    backbone that does not fit would otherwise train from scratch unnoticed."""
    source = first_classifier(classifier)
    state = load_from_store(source, CLASSIFIER_CHECKPOINT)["state_dict"]
    weights = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    return load_fitting_weights(model.backbone, weights, f"{source.uri}: the classifier's backbone",
                                "train the classifier with this config's classifier.model.backbone")


class SeedImages(Dataset):
    """(3, S, S) float RGB and its (S/4, S/4) pseudo-mask labels (255 uncertain or padding), randomly rescaled from
    the working size, cropped and flipped together."""

    def __init__(self, samples, masks: ArtifactStore, settings: dict, working_size: int | None, fill: np.ndarray):
        self.samples, self.masks, self.settings = samples, masks, settings
        self.working_size, self.fill = working_size, fill

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        sample = self.samples[index]
        image = read_image(sample.image_path)
        mask = decode_mask_png(self.masks.get_bytes(f"{sample.image_id}.png"))
        scale = working_scale(*image.shape[:2], self.working_size) * uniform(*self.settings["scale_range"])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.float32)
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        if uniform(0, 1) < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        image, mask = random_crop(image, self.settings["crop_size"], self.fill, mask)
        labels = mask[EMBEDDING_STRIDE // 2::EMBEDDING_STRIDE, EMBEDDING_STRIDE // 2::EMBEDDING_STRIDE]
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(labels)).long())
