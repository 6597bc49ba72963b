"""train-classifier: a multi-label classifier on image-level labels, the source of every CAM (METHODS.md §1, step 1).

Writes `last.pth` after every epoch (model, optimizer, schedule, epoch), so a killed run resumes where it
stopped; then `checkpoint.pth`, `metrics.json` (val mAP and F1) and `config.yaml`.
"""
from __future__ import annotations

import copy
import json
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsseg.classes import ClassList
from wsseg.config import dump_config
from wsseg.data import dataset_splits, load_samples
from wsseg.errors import ConfigError, DataError
from wsseg.store import ArtifactStore
from wsseg.training import (
    ClassifierImages,
    autocast,
    load_from_store,
    pick_device,
    poly_schedule,
    save_to_store,
    split_usable,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
RESUME = "last.pth"


def default_config(preset: str) -> dict:
    backbone = {"type": "ResNetV1c", "depth": 18, "stem_channels": 64, "base_channels": 64,
                # Last stage at stride 16 rather than 32, as IRN computes its CAMs.
                "strides": [1, 2, 2, 1], "dilations": [1, 1, 1, 1], "out_indices": [3],
                "norm_cfg": {"type": "BN", "requires_grad": True}}
    config = {"model": {"type": "CAMClassifier", "backbone": backbone, "pretrained": None},
              # Scales up to 1 only: a crop of an enlarged image can cut away a labelled object.
              "crop_size": 512, "scale_range": [0.7, 1.0], "flip": True, "color_jitter": 0.1,
              "batch_size": 16, "epochs": 20, "optimizer": {"type": "AdamW", "lr": 5e-4, "weight_decay": 1e-4},
              "head_lr_multiplier": 10.0, "num_workers": 4, "device": "auto", "precision": "bf16"}
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

    model = build_classifier(settings["model"], classes)
    model.init_weights()
    model.to(device)
    loader = DataLoader(ClassifierImages(train, len(classes) - 1, settings, augment=True),
                        batch_size=settings["batch_size"], shuffle=True, num_workers=settings["num_workers"])
    optimizer = build_optimizer(model, settings["optimizer"], settings["head_lr_multiplier"])
    schedule = poly_schedule(optimizer, settings["epochs"] * len(loader))
    first_epoch = _resume(out, model, optimizer, schedule)

    started = time.perf_counter()
    loss = None
    for epoch in range(first_epoch, settings["epochs"]):
        loss = _train_epoch(model, loader, optimizer, schedule, device, settings["precision"], epoch)
        save_to_store(out, RESUME, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "schedule": schedule.state_dict(), "epoch": epoch + 1})
    seconds = time.perf_counter() - started

    metrics = evaluate_classifier(model, val, classes, settings, device)
    save_to_store(out, CHECKPOINT, {"state_dict": model.state_dict(), "model": settings["model"],
                                    "classes": list(classes.names)})
    out.put_bytes("metrics.json", json.dumps(metrics, indent=2).encode())
    out.put_bytes("config.yaml", dump_config(config).encode())
    trained_images = len(train) * (settings["epochs"] - first_epoch)
    summary = dict(train_images=len(train), val_images=len(val), **train_skips, resumed_from_epoch=first_epoch,
                   epochs=settings["epochs"], loss=loss and round(loss, 4), seconds=round(seconds, 1),
                   images_per_second=round(trained_images / seconds, 1) if seconds else None,
                   val_map=metrics["map"], val_f1=metrics["f1"])
    log.info("train-classifier: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


def build_classifier(model_config: dict, classes: ClassList) -> torch.nn.Module:
    from mmseg.registry import MODELS

    import wsseg.models  # noqa: F401  (registers CAMClassifier in mmseg's MODELS)

    return MODELS.build({**copy.deepcopy(model_config), "num_classes": len(classes) - 1})


def load_classifier(store: ArtifactStore, classes: ClassList, device: torch.device) -> torch.nn.Module:
    """The trained classifier in `store`, in eval mode; its class list must be `classes`."""
    state = load_from_store(store, CHECKPOINT)
    if state["classes"] != list(classes.names):
        raise ConfigError(f"{store.uri}/{CHECKPOINT} was trained for classes {state['classes']}, "
                          f"but the config lists {list(classes.names)}")
    model = build_classifier(state["model"], classes)
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def build_optimizer(model: torch.nn.Module, optimizer_config: dict, head_lr_multiplier: float = 1.0):
    """A torch.optim optimizer named by `type`; the new 1×1 classifier learns `head_lr_multiplier` times faster
    than the backbone, as IRN trains its CAM head at 10× the backbone's rate."""
    options = dict(optimizer_config)
    name = options.pop("type")
    if not isinstance(getattr(torch.optim, name, None), type):
        raise ConfigError(f"classifier.optimizer.type: {name!r} is not an optimizer in torch.optim")
    groups = [{"params": model.backbone.parameters()},
              {"params": model.classifier.parameters(), "lr": options["lr"] * head_lr_multiplier}]
    return getattr(torch.optim, name)(groups, **options)


def evaluate_classifier(model, samples, classes: ClassList, settings: dict, device) -> dict:
    """Average precision per class (classes with a positive in `samples`), its mean, and micro F1 at 0.5."""
    if not samples:
        log.warning("train-classifier: the dataset has no val split; metrics.json holds no scores")
        return {"map": None, "f1": None, "images": 0, "ap": {}}
    loader = DataLoader(ClassifierImages(samples, len(classes) - 1, settings, augment=False),
                        batch_size=settings["batch_size"], num_workers=settings["num_workers"])
    scores, targets = _predict(model, loader, device, settings["precision"])
    per_class = {classes.names[k + 1]: average_precision(scores[:, k], targets[:, k])
                 for k in range(targets.shape[1]) if targets[:, k].any()}
    predicted = scores >= 0.5
    true_positives = float((predicted & targets).sum())
    f1 = 2 * true_positives / max(1.0, float(predicted.sum() + targets.sum()))
    return {"map": round(float(np.mean(list(per_class.values()))), 4) if per_class else None,
            "f1": round(f1, 4), "images": len(samples), "ap": per_class}


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Mean of the precision at the rank of each positive, ranking by descending score (VOC's non-interpolated AP)."""
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return round(float((precision_at_rank * hits).sum() / hits.sum()), 4)


def _train_epoch(model, loader, optimizer, schedule, device, precision: str, epoch: int) -> float:
    model.train()
    total, seen = 0.0, 0
    with tqdm(total=len(loader.dataset), desc=f"classifier epoch {epoch + 1}", unit="img",
              leave=False) as progress:
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            with autocast(device, precision):
                logits = model(images)
            loss = F.multilabel_soft_margin_loss(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(images), seen + len(images)
            progress.set_postfix(loss=f"{total / seen:.4f}")
            progress.update(len(images))
    return total / seen


@torch.no_grad()
def _predict(model, loader, device, precision: str) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    scores, targets = [], []
    for images, labels in loader:
        with autocast(device, precision):
            scores.append(torch.sigmoid(model(images.to(device)).float()).cpu())
        targets.append(labels.bool())
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def _resume(out: ArtifactStore, model, optimizer, schedule) -> int:
    """The epoch to start from: 0, or the one after the last finished epoch of an earlier attempt."""
    if not out.exists(RESUME):
        return 0
    state = load_from_store(out, RESUME)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"{out.uri}/{RESUME} comes from a different classifier config and cannot be resumed "
                          f"({error}); delete it or write to a new --out") from None
    schedule.load_state_dict(state["schedule"])
    log.info("train-classifier: resuming after epoch %d from %s/%s", state["epoch"], out.uri, RESUME)
    return state["epoch"]
