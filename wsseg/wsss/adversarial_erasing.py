"""AE-PSL, adversarial erasing (Wei et al., CVPR'17): classifiers in sequence, each trained on the images with
what its predecessors found erased, so that each must find the objects somewhere else; the mined maps are the
union of theirs.

Round r trains classifier r into `round-<r>/` on the training images with the pixels of `erased-<r-1>/` set to
the mean pixel. Its CAMs of each image's active classes, cut where each class's CAM histogram splits (Otsu, as
the pseudo masks are), add their regions to `erased-<r>/`. A class stops at the round whose classifier no longer
recognises it on its erased images (mean score below `stop_confidence`), the paper's guard against erasing into
the background. `rounds.json` lists each round and the classes it contributes; mining unions those rounds' maps.
"""
from __future__ import annotations

import io
import json
import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from wsseg.classes import ClassList
from wsseg.data import read_image
from wsseg.data.images import working_shape
from wsseg.data.samples import Sample
from wsseg.store import ArtifactStore
from wsseg.wsss.cams import CAM
from wsseg.wsss.cams.augment import multiscale_maps
from wsseg.wsss.classifier import load_classifier, predict_scores, train_model
from wsseg.wsss.thresholds import CamHistograms
from wsseg.wsss.training import ClassifierImages, autocast, erase, erased_pixels

log = logging.getLogger(__name__)

ROUNDS = "rounds.json"
# Erasing masks are kept at a quarter of the working size: CAMs come from stride-16 features, so finer masks
# would only repeat their interpolation.
MASK_REDUCTION = 4


def train_erasing_rounds(train: list[Sample], val: list[Sample], out: ArtifactStore, config: dict,
                         classes: ClassList, device) -> dict:
    settings = config["classifier"]["adversarial_erasing"]
    active = sorted({label for sample in train for label in sample.labels})
    rounds, seconds, erased = [], 0.0, None
    for number in range(1, settings["steps"] + 1):
        store = out.child(f"round-{number}")
        summary = train_model(train, val, store, config, classes, device, erased)
        seconds += summary["seconds"]
        model = load_classifier(store, classes, device)
        if erased is not None:
            confidence = class_confidence(model, train, erased, config)
            active = [label for label in active if confidence.get(label, 0.0) >= settings["stop_confidence"]]
        rounds.append({"round": number, "classes": active, "val_map": summary["val_map"]})
        log.info("adversarial erasing: round %d contributes %d classes", number, len(active))
        if number == settings["steps"] or not active:
            break
        next_erased = out.child(f"erased-{number}")
        write_erasing_masks(model, train, erased, next_erased, active, config, device)
        erased = next_erased
    out.put_bytes(ROUNDS, json.dumps(rounds, indent=2).encode())
    return dict(train_images=len(train), val_images=len(val), rounds=len(rounds), seconds=round(seconds, 1),
                val_map=rounds[0]["val_map"], classes_per_round="/".join(str(len(r["classes"])) for r in rounds))


def class_confidence(model, samples: list[Sample], erased: ArtifactStore, config: dict) -> dict[int, float]:
    """Each class's mean score over the training images labelled with it, as the erased images show them."""
    settings = config["classifier"]
    num_classes = len(config["classes"]) - 1
    images = ClassifierImages(samples, num_classes, settings, augment=False, erased=erased)
    loader = DataLoader(images, batch_size=settings["batch_size"], num_workers=settings["num_workers"])
    scores, targets = predict_scores(model, loader, next(model.parameters()).device, settings["precision"])
    return {k + 1: float(scores[targets[:, k], k].mean()) for k in range(num_classes) if targets[:, k].any()}


def write_erasing_masks(model, samples: list[Sample], erased: ArtifactStore | None, out: ArtifactStore,
                        active: list[int], config: dict, device) -> None:
    """`out/<image_id>.png`: the previous round's erased pixels plus where this round's CAMs of the image's
    active classes exceed their class's Otsu threshold."""
    maps = {sample.image_id: _active_maps(model, sample, erased, active, config, device) for sample in samples}
    histograms = CamHistograms(len(config["classes"]))
    for cams, labels in maps.values():
        histograms.add(cams, labels)
    thresholds = histograms.otsu()
    for sample in samples:
        cams, labels = maps[sample.image_id]
        region = np.zeros(cams.shape[1:], bool)
        for cam, label in zip(cams, labels, strict=True):
            region |= cam > thresholds[int(label)]
        region |= erased_pixels(erased, sample.image_id, region.shape)
        out.put_bytes(f"{sample.image_id}.png", _mask_png(region))


def _active_maps(model, sample: Sample, erased: ArtifactStore | None, active: list[int], config: dict, device):
    image = read_image(sample.image_path)
    if erased is not None:
        image = erase(image, erased, sample.image_id, model.mean.flatten().cpu().numpy())
    labels = np.array([label for label in sample.labels if label in active], dtype=np.int64)
    height, width = working_shape(*image.shape[:2], config["working_size"])
    size = (max(1, height // MASK_REDUCTION), max(1, width // MASK_REDUCTION))
    if not len(labels):
        return np.zeros((0, *size), np.float32), labels
    tensor = torch.tensor(image).permute(2, 0, 1)[None].float().to(device)
    tensor = torch.nn.functional.interpolate(tensor, (height, width), mode="bilinear", antialias=True)
    settings = config["cams"]
    with torch.no_grad(), autocast(device, settings["precision"]):
        cams = multiscale_maps(CAM(model), tensor, torch.from_numpy(labels - 1)[None].to(device), settings["scales"],
                               settings["flip"], size)
    return cams[0].float().cpu().numpy(), labels


def _mask_png(region: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(region.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def erasing_rounds(store: ArtifactStore) -> list[dict] | None:
    """The rounds an adversarial-erasing classifier store holds, or None for a single classifier."""
    return json.loads(store.get_bytes(ROUNDS)) if store.exists(ROUNDS) else None
