"""train-classifier: a multi-label classifier on image-level labels, the source of every CAM (docs/METHODS.md §1,
step 1; §1.1).

Writes `last.pth` after every epoch (model, optimizer, schedule, epoch), so a killed run resumes where it
stopped; then `checkpoint.pth`, `metrics.json` (val mAP and F1) and `config.yaml`.
"""
from __future__ import annotations

import logging

import torch

from wsseg.classes import ClassList
from wsseg.data import dataset_splits, load_samples
from wsseg.errors import DataError
from wsseg.kube.train_job import default_launch
from wsseg.store import ArtifactStore
from wsseg.wsss.adversarial_erasing import train_erasing_rounds
from wsseg.wsss.batch_augment import HIDE_AND_SEEK_PATCHES_AT_224
from wsseg.wsss.classifier import train_model
from wsseg.wsss.ensemble import ensemble_size, train_ensemble
from wsseg.wsss.training import pick_device, split_usable

log = logging.getLogger(__name__)


def default_config(preset: str) -> dict:
    backbone = {"type": "ResNetV1c", "depth": 18, "stem_channels": 64, "base_channels": 64,
                # Last stage at stride 16 rather than 32, as IRN computes its CAMs.
                "strides": [1, 2, 2, 1], "dilations": [1, 1, 1, 1], "out_indices": [3],
                "norm_cfg": {"type": "BN", "requires_grad": True}}
    config = {"model": {"type": "CAMClassifier", "backbone": backbone, "pretrained": None},
              # Scales up to 1 only: a crop of an enlarged image can cut away a labelled object.
              "crop_size": 512, "scale_range": [0.7, 1.0], "flip": True, "color_jitter": 0.1,
              "batch_size": 16, "epochs": 20, "optimizer": {"type": "AdamW", "lr": 5e-4, "weight_decay": 1e-4},
              "head_lr_multiplier": 10.0, "num_workers": 4, "device": "auto", "precision": "bf16",
              # The CAM-expanding methods that change training, not the architecture (docs/METHODS.md §1); the
              # architectures are model types: ACoLClassifier, MDCClassifier, SEAMClassifier.
              "hide_and_seek": {"enabled": False, "hide_probability": 0.5,
                                "patch_fractions": [round(side / 224, 4) for side in HIDE_AND_SEEK_PATCHES_AT_224]},
              # alpha 1: λ uniform on [0, 1], mixup's setting for small datasets (Zhang et al., ICLR'18).
              "mixup": {"enabled": False, "alpha": 1.0},
              # AE-PSL: `steps` classifiers, each on the images its predecessors' regions are erased from; a
              # class stops when the newest classifier's mean score on its images drops below stop_confidence.
              "adversarial_erasing": {"enabled": False, "steps": 3, "stop_confidence": 0.5},
              # Classifiers trained alike from seeds seed, seed + 1, ...; mining averages their maps. Five by
              # default, the `ensemble` method: on the three held-out looks its segmenters beat plain CAM's
              # (docs/RESULTS.md §17); the tests' tiny preset trains one.
              "ensemble_members": 1 if preset == "cpu-tiny" else 5,
              # More than one GPU in all: the step trains as a PyTorchJob (wsseg.kube.train_job), data-parallel.
              "launch": default_launch()}
    if preset == "gpu":
        backbone.update(depth=50)
    elif preset in ("cpu", "cpu-tiny"):
        # A quarter-width ResNet-18, small batches and a high rate: of the settings tried on 300 synthetic
        # 128 px images with one core, the one that gained val mAP fastest per second.
        backbone.update(stem_channels=16, base_channels=16)
        config.update(crop_size=128, batch_size=8, epochs=30, num_workers=0,
                      optimizer={"type": "AdamW", "lr": 3e-3, "weight_decay": 1e-4})
        if preset == "cpu-tiny":
            config.update(crop_size=64, batch_size=6, epochs=2)
    return config


def train_classifier(data_root, out: ArtifactStore, config: dict, classes: ClassList, strict: bool = False) -> dict:
    settings = config["classifier"]
    torch.manual_seed(config.get("seed", 0))
    device = pick_device(settings["device"])
    train, train_skips = split_usable(load_samples(data_root, "train", classes), strict)
    has_val = "val" in dataset_splits(data_root)
    val, _ = split_usable(load_samples(data_root, "val", classes), strict) if has_val else ([], {})
    if not train:
        raise DataError(data_root, "no labelled, readable training image to train the classifier on")
    train_one = train_erasing_rounds if settings["adversarial_erasing"]["enabled"] else train_model
    if ensemble_size(settings) > 1:
        summary = train_ensemble(train, val, out, config, classes, device, train_one)
    else:
        summary = train_one(train, val, out, config, classes, device)
    summary = dict(summary, **train_skips)
    log.info("train-classifier: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary
