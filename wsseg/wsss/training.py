"""Training the CAM classifier: device and precision, checkpoints in a store, the augmented image dataset.

CAM mining shares the device, precision and checkpoint helpers. (Segmenter training runs through mmengine's
Runner and has its own.)
"""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from wsseg.classes import IGNORE_INDEX
from wsseg.data import read_image
from wsseg.data.images import working_scale
from wsseg.data.samples import Sample
from wsseg.errors import ConfigError, DataError
from wsseg.runtime.random_states import random_states, set_random_states
from wsseg.runtime.read_ahead import read_ahead
from wsseg.store import ArtifactStore
from wsseg.wsss.classifiers.cam_classifier import IMAGENET_MEAN

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp32")
# Images decoded at once by the check before training.
CHECK_THREADS = 8


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision on the CPU, where bf16
    convolutions are slower than fp32 on most processors."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_to_store(store: ArtifactStore, key: str, state: dict) -> None:
    """torch.save into the store; the write is atomic, so a kill mid-save leaves the previous file intact."""
    with store.open_write(key) as file:
        torch.save(state, file)


def load_from_store(store: ArtifactStore, key: str, device: torch.device | str = "cpu") -> dict:
    return torch.load(io.BytesIO(store.get_bytes(key)), map_location=device, weights_only=True)


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
    """lr · (1 − step/total)^0.9, the 'poly' decay of DeepLab that PSA and IRN train their classifiers with."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power)


def split_usable(samples: list[Sample], strict: bool) -> tuple[list[Sample], dict]:
    """The samples a classifier can learn from, and counts of those left out: images without a foreground label
    teach nothing about any class, and corrupt images are found here, by decoding each once (`CHECK_THREADS` at a
    time, from wherever the dataset is), so that workers never meet them mid-epoch. `strict` raises `DataError` on
    the first corrupt image instead."""
    usable, corrupt = [], 0
    labelled = [sample for sample in samples if sample.labels]
    for sample, outcome in read_ahead(lambda sample: read_image(sample.image_path).shape, labelled, CHECK_THREADS):
        if isinstance(outcome, DataError):
            if strict:
                raise outcome
            log.warning("skipping corrupt image %s: %s", sample.image_id, outcome.problem)
            corrupt += 1
            continue
        if isinstance(outcome, Exception):
            raise outcome
        usable.append(sample)
    return usable, {"skipped_unlabelled": len(samples) - len(labelled), "skipped_corrupt": corrupt}


class ClassifierImages(Dataset):
    """(3, S, S) float RGB in 0..255 and a multi-hot vector over the foreground classes, per sample.

    With `augment`, the image is scaled to its working size (short side `working_size`, when larger) and gets a
    random rescale, colour jitter, horizontal flip and a random S×S crop (PSA/IRN
    train their classifiers this way); without, its long side is resized to S. Either is padded to S×S with the
    mean colour, which the model normalises to zero.
    """

    def __init__(self, samples: list[Sample], num_classes: int, settings: dict, augment: bool,
                 working_size: int | None = None, erased: ArtifactStore | None = None):
        self.samples = samples
        self.working_size = working_size
        self.erased = erased
        self.num_classes = num_classes
        self.settings = settings
        self.augment = augment
        self.fill = np.array(settings["model"].get("mean", IMAGENET_MEAN), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = read_image(sample.image_path)
        if self.erased is not None:
            image = erase(image, self.erased, sample.image_id, self.fill)
        size = self.settings["crop_size"]
        if self.augment:
            scale = working_scale(*image.shape[:2], self.working_size) * uniform(*self.settings["scale_range"])
            image = _jitter_colour(_rescale(image, scale),
                                   self.settings["color_jitter"])
            if self.settings["flip"] and uniform(0, 1) < 0.5:
                image = image[:, ::-1]
            image = random_crop(image, size, self.fill)
        else:
            image = _pad(_rescale(image, size / max(image.shape[:2])).astype(np.float32), size, self.fill)
        target = torch.zeros(self.num_classes)
        target[[label - 1 for label in sample.labels]] = 1.0
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target


def erase(image: np.ndarray, masks: ArtifactStore, image_id: str, fill: np.ndarray) -> np.ndarray:
    """The image with the pixels of its erasing mask (`<image_id>.png` in `masks`, if any) set to `fill`."""
    hidden = erased_pixels(masks, image_id, image.shape[:2])
    return np.where(hidden[..., None], fill.astype(np.uint8), image)


def erased_pixels(masks: ArtifactStore | None, image_id: str, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) boolean erasing mask of an image, resized to `shape`; all False without a mask."""
    key = f"{image_id}.png"
    if masks is None or not masks.exists(key):
        return np.zeros(shape, bool)
    with Image.open(io.BytesIO(masks.get_bytes(key))) as png:
        return np.asarray(png.resize(shape[::-1], Image.NEAREST)) > 0


def uniform(low: float, high: float) -> float:
    # torch's generator, not numpy's: DataLoader seeds it differently in each worker.
    return float(torch.empty(()).uniform_(low, high))


def _rescale(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _jitter_colour(image: np.ndarray, strength: float) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1 − strength, 1 + strength]."""
    image = image.astype(np.float32)
    image *= uniform(1 - strength, 1 + strength)
    image = (image - image.mean()) * uniform(1 - strength, 1 + strength) + image.mean()
    grey = image.mean(axis=2, keepdims=True)
    image = (image - grey) * uniform(1 - strength, 1 + strength) + grey
    return np.clip(image, 0, 255)


def random_crop(image: np.ndarray, size: int, fill: np.ndarray, mask: np.ndarray | None = None):
    """A random size×size crop of `image`, padded with `fill` where smaller; with a `mask`, the same crop of it
    (padded with 255, ignored) as well, as a pair."""
    padded = _pad(image if mask is None else np.concatenate([image, mask[..., None].astype(np.float32)], axis=2),
                  size, fill if mask is None else np.append(fill, IGNORE_INDEX), randomly=True)
    top = int(torch.randint(padded.shape[0] - size + 1, ()))
    left = int(torch.randint(padded.shape[1] - size + 1, ()))
    crop = padded[top:top + size, left:left + size]
    return crop if mask is None else (crop[..., :3], crop[..., 3].astype(np.uint8))


def _pad(image: np.ndarray, size: int, fill: np.ndarray, randomly: bool = False) -> np.ndarray:
    """`image` placed in a canvas of at least size×size filled with `fill` (at a random offset if `randomly`)."""
    height, width = image.shape[:2]
    canvas = np.empty((max(size, height), max(size, width), image.shape[2]), dtype=np.float32)
    canvas[:] = fill
    top = int(torch.randint(canvas.shape[0] - height + 1, ())) if randomly else 0
    left = int(torch.randint(canvas.shape[1] - width + 1, ())) if randomly else 0
    canvas[top:top + height, left:left + width] = image
    return canvas


def train_epoch(model, loader, loss_of, optimizer, schedule, device, precision: str, description: str) -> float:
    """One pass over `loader`; `loss_of(model, inputs, targets)` is the batch's total loss. Returns the mean loss."""
    model.train()
    total, seen = 0.0, 0
    with tqdm(total=len(loader.sampler), desc=description, unit="img", leave=False) as progress:
        for inputs, targets in loader:
            with autocast(device, precision):
                loss = loss_of(model, inputs.to(device), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(inputs), seen + len(inputs)
            progress.set_postfix(loss=f"{total / seen:.4f}")
            progress.update(len(inputs))
    return total / seen


def resume_training(out: ArtifactStore, key: str, model, optimizer, schedule, what: str) -> int:
    """The epoch to start from: 0, or the one after the last finished epoch of an earlier attempt (`out/key`)."""
    if not out.exists(key):
        return 0
    state = load_from_store(out, key)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"{out.uri}/{key} comes from a different {what} config and cannot be resumed "
                          f"({error}); delete it or write to a new --out") from None
    schedule.load_state_dict(state["schedule"])
    if "random_states" in state:  # an epoch saved before wsseg kept them: the rerun draws anew
        set_random_states(state["random_states"])
    log.info("%s training resumes after epoch %d from %s/%s", what, state["epoch"], out.uri, key)
    return state["epoch"]


def save_progress(out: ArtifactStore, key: str, model, optimizer, schedule, epoch: int) -> None:
    save_to_store(out, key, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "schedule": schedule.state_dict(), "epoch": epoch, "random_states": random_states()})
