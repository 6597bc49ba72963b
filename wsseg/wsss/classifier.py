"""One CAM classifier: built from `classifier.model`, trained into a store, loaded back, scored on val.

`train_model` writes `last.pth` after every epoch (model, optimizer, schedule, epoch), so a killed run resumes
where it stopped; then `checkpoint.pth`, `metrics.json` (val mAP and F1) and `config.yaml`. Under torchrun
(WORLD_SIZE > 1, `wsseg.runtime.distributed`) the same function trains data-parallel: each rank reads its share of
every epoch's images (a `DistributedSampler`), gradients are averaged across ranks, and rank 0 alone writes.
The train-classifier step (`wsseg.steps.train_classifier`) trains one, one per member of an ensemble (`ensemble`)
or one per round of adversarial erasing (`adversarial_erasing`); mining and affinity load them back with
`load_classifier`.
"""
from __future__ import annotations

import copy
import json
import logging
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from wsseg.classes import ClassList
from wsseg.config import dump_config
from wsseg.errors import ConfigError
from wsseg.runtime.distributed import join_process_group
from wsseg.runtime.torchrun import world_position
from wsseg.runtime.weights import local_weights
from wsseg.store import ArtifactStore
from wsseg.wsss.batch_augment import BatchAugment
from wsseg.wsss.training import (
    ClassifierImages,
    autocast,
    load_from_store,
    poly_schedule,
    resume_training,
    save_progress,
    save_to_store,
    train_epoch,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
RESUME = "last.pth"


def train_model(train: list, val: list, out: ArtifactStore, config: dict, classes: ClassList, device,
                erased: ArtifactStore | None = None) -> dict:
    """Train one classifier into `out` (resuming from its `last.pth`); `erased` holds masks of the pixels to hide
    from every training image (adversarial erasing)."""
    settings = config["classifier"]
    rank, world_size = world_position()
    if world_size > 1:
        join_process_group(device.type == "cuda")
        device = torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device
    model = build_classifier(settings["model"], classes)
    model.pretrained = local_weights(model.pretrained, "classifier.model.pretrained")
    model.init_weights()
    model.to(device)
    images = ClassifierImages(train, len(classes) - 1, settings, augment=True, working_size=config["working_size"],
                              erased=erased)
    sampler = DistributedSampler(images, seed=config.get("seed", 0)) if world_size > 1 else None
    loader = DataLoader(images, batch_size=settings["batch_size"], shuffle=sampler is None, sampler=sampler,
                        num_workers=settings["num_workers"])
    optimizer = build_optimizer(model, settings["optimizer"], settings["head_lr_multiplier"])
    schedule = poly_schedule(optimizer, settings["epochs"] * len(loader))
    first_epoch = resume_training(out, RESUME, model, optimizer, schedule, "classifier")
    trained = _data_parallel(_ClassifierLoss(model, BatchAugment(settings, images.fill)), device, world_size)

    started = time.perf_counter()
    loss = None
    for epoch in range(first_epoch, settings["epochs"]):
        if sampler is not None:
            sampler.set_epoch(epoch)  # each epoch its own shuffle, the same on every rank
        loss = train_epoch(trained, loader, lambda loss_of, images, targets: loss_of(images, targets), optimizer,
                           schedule, device, settings["precision"], f"classifier epoch {epoch + 1}")
        if rank == 0:
            save_progress(out, RESUME, model, optimizer, schedule, epoch + 1)
    seconds = time.perf_counter() - started

    metrics = evaluate_classifier(model, val, classes, settings, device) if rank == 0 else {"map": None, "f1": None}
    if rank == 0:
        save_to_store(out, CHECKPOINT, {"state_dict": model.state_dict(), "model": settings["model"],
                                        "classes": list(classes.names)})
        out.put_bytes("metrics.json", json.dumps(metrics, indent=2).encode())
        out.put_bytes("config.yaml", dump_config(config).encode())
    per_epoch = len(train) if sampler is None else len(sampler)
    trained_images = per_epoch * (settings["epochs"] - first_epoch)
    return dict(train_images=len(train), val_images=len(val), resumed_from_epoch=first_epoch,
                epochs=settings["epochs"], loss=loss and round(loss, 4), seconds=round(seconds, 1),
                images_per_second=round(trained_images / seconds, 1) if seconds else None,
                val_map=metrics["map"], val_f1=metrics["f1"], rank=rank, world_size=world_size,
                images_per_epoch=per_epoch)


class _ClassifierLoss(torch.nn.Module):
    """The classifier and its batch augmentation as one module whose forward is the batch's total loss: what
    DistributedDataParallel wraps, as it averages the gradients of a forward it runs."""

    def __init__(self, model: torch.nn.Module, augment: BatchAugment):
        super().__init__()
        self.model, self.augment = model, augment

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sum(self.model.loss(*self.augment(images, targets)).values())


def _data_parallel(module: torch.nn.Module, device, world_size: int) -> torch.nn.Module:
    if world_size == 1:
        return module
    if device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[device.index])
    return DistributedDataParallel(module)


def build_classifier(model_config: dict, classes: ClassList) -> torch.nn.Module:
    from mmseg.registry import MODELS

    import wsseg.wsss.classifiers  # noqa: F401  (registers CAMClassifier in mmseg's MODELS)

    try:
        return MODELS.build({**copy.deepcopy(model_config), "num_classes": len(classes) - 1})
    except (KeyError, TypeError) as error:
        raise ConfigError(f"classifier.model: cannot build {model_config.get('type')!r}: {error}") from None


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
    """A torch.optim optimizer named by `type`; the 1×1 class layers learn `head_lr_multiplier` times faster than
    the rest, as IRN trains its CAM head at 10× the backbone's rate. The deeper heads of ACoL and MDC and SEAM's
    affinity layers train at the base rate: at 10× an adaptive optimizer's steps are as large as their weights."""
    options = dict(optimizer_config)
    name = options.pop("type")
    if not isinstance(getattr(torch.optim, name, None), type):
        raise ConfigError(f"classifier.optimizer.type: {name!r} is not an optimizer in torch.optim")
    fast = {id(parameter) for layer in model.class_layers() for parameter in layer.parameters()}
    groups = [{"params": [parameter for parameter in model.parameters() if id(parameter) not in fast]},
              {"params": [parameter for parameter in model.parameters() if id(parameter) in fast],
               "lr": options["lr"] * head_lr_multiplier}]
    return getattr(torch.optim, name)(groups, **options)


def evaluate_classifier(model, samples, classes: ClassList, settings: dict, device) -> dict:
    """Average precision per class (classes with a positive in `samples`), its mean, and micro F1 at 0.5."""
    if not samples:
        log.warning("train-classifier: the dataset has no val split; metrics.json holds no scores")
        return {"map": None, "f1": None, "images": 0, "ap": {}}
    loader = DataLoader(ClassifierImages(samples, len(classes) - 1, settings, augment=False),
                        batch_size=settings["batch_size"], num_workers=settings["num_workers"])
    scores, targets = predict_scores(model, loader, device, settings["precision"])
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


@torch.no_grad()
def predict_scores(model, loader, device, precision: str) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    scores, targets = [], []
    for images, labels in loader:
        with autocast(device, precision):
            scores.append(torch.sigmoid(model(images.to(device)).float()).cpu())
        targets.append(labels.bool())
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()
