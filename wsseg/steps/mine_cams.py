"""mine-cams: per-class localisation maps of each labelled image from the trained classifier (docs/METHODS.md §1,
step 2; §1.11).

Writes `<image_id>.npz` holding `cams` float16 (L, H, W) in [0, 1], one max-normalised map per image label at
image resolution (a classifier ensemble's: the mean of its members' maps), and `labels` int16 (L,); then
`summary.json`. Images already in the store are skipped, so a retried step finishes what an earlier attempt
started. Images stream through, read from wherever the dataset is (a folder or a store): only a few batches are in
memory.

Split into shards (`wsseg.runtime.shards`), each task mines its slice of the images into the same store and keeps
its summary and the histograms of its slice's maps (`wsseg.wsss.thresholds.CamHistograms`, from the maps as stored)
under `shards/<k>-of-<N>/`; `merge_mine_cams` sums them into `summary.json` and `cam_statistics.json`, from which
refine chooses its thresholds without reading the maps again.

The model waits on nothing else: `decode_workers` DataLoader processes decode images ahead of it (into pinned
memory on a GPU; without them, `read_threads` threads fetch and decode a few batches ahead), and `writer_threads`
compress and store finished maps behind it (`wsseg.runtime.writer_pool`). On a
GPU the model also runs channels-last in bf16 (`precision`). Each scale is one forward pass over the batch and
its flips; scales are not stacked into one, since padding them to a common size would change maps near borders.
"""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsseg.classes import ClassList
from wsseg.data import load_samples, read_image
from wsseg.data.images import working_shape
from wsseg.data.samples import Sample
from wsseg.errors import ConfigError, DataError
from wsseg.runtime.read_ahead import read_ahead
from wsseg.runtime.shards import SHARD_SUMMARY, WHOLE, Shard, shard_records, summed, write_shard_record
from wsseg.runtime.writer_pool import WriterPool
from wsseg.store import ArtifactStore
from wsseg.wsss.cams import CAM_METHODS, NO_TARGET
from wsseg.wsss.cams.augment import multiscale_maps
from wsseg.wsss.classifier import load_classifier
from wsseg.wsss.pseudo_masks import read_cam_file
from wsseg.wsss.thresholds import CAM_STATISTICS, CamHistograms
from wsseg.wsss.training import autocast, pick_device

log = logging.getLogger(__name__)

# Images of different sizes wait in per-size buckets; past this many batches' worth, the fullest goes out as is.
PENDING_BATCHES = 4
SHARD_HISTOGRAMS = "cam_histograms.json"
COUNTS = ("images", "existing", "skipped_unlabelled", "skipped_corrupt")


def default_config(preset: str) -> dict:
    # decode_workers: DataLoader processes decoding images (0: threads of this process, read_threads of them, fetch
    # and decode ahead); writer_threads: threads compressing and storing maps (0: in line). On a CPU the model
    # takes every core, and a decoding process would take one from it; threads overlap the store's latency and the
    # zlib work, which release the GIL, with the model.
    config = {"method": "cam", "scales": [1.0, 0.5, 1.5, 2.0], "flip": True, "batch_size": 16,
              "device": "auto", "precision": "bf16", "decode_workers": 8, "read_threads": 4, "writer_threads": 4}
    if preset == "cpu":
        config.update(batch_size=8, decode_workers=0, writer_threads=1)
    elif preset == "cpu-tiny":
        config.update(scales=[1.0, 0.5], batch_size=4, decode_workers=0, writer_threads=1)
    return config


def mine_cams(data_root, classifier: ArtifactStore, out: ArtifactStore, config: dict, classes: ClassList,
              strict: bool = False, split: str = "train", shard: Shard | None = None) -> dict:
    """Mine `shard`'s slice of the images (its summary); without a shard, every image, merged (the step's)."""
    summary = mine_shard(data_root, classifier, out, config, classes, strict, split, shard or WHOLE)
    return summary if shard else merge_mine_cams(out, WHOLE.count)


def mine_shard(data_root, classifier: ArtifactStore, out: ArtifactStore, config: dict, classes: ClassList,
               strict: bool, split: str, shard: Shard) -> dict:
    settings = config["cams"]
    if settings["method"] not in CAM_METHODS:
        raise ConfigError(f"cams.method: {settings['method']!r}; choose one of {', '.join(CAM_METHODS)}")
    device = pick_device(settings["device"])
    members = [[(CAM_METHODS[settings["method"]](_for_device(model, device)), contributes)
                for model, contributes in localizers] for localizers in load_localizers(classifier, classes, device)]
    samples = load_samples(data_root, split, classes, keep=shard.holds)
    mined = {key.removesuffix(".npz") for key in out.list() if key.endswith(".npz")}
    counts = Counter(images=0, existing=0, skipped_unlabelled=0, skipped_corrupt=0)
    to_mine = _unmined(samples, mined, counts)
    histograms = histograms_of_stored(out, [s for s in samples if s.image_id in mined], len(classes),
                                       settings.get("read_threads", 0))
    batch_size = settings["batch_size"]

    started = time.perf_counter()
    # One batch's writes may still run while the next batch is mined: the model never waits on them, and memory
    # holds at most two batches of maps.
    with (tqdm(total=len(samples), initial=len(samples) - len(to_mine), desc=f"mining {settings['method']}",
               unit="img") as progress,
          WriterPool(settings["writer_threads"], max_pending=batch_size) as writer):
        images = _decoded(to_mine, settings, device, counts, strict, progress)
        for batch in size_batches(images, batch_size, PENDING_BATCHES * batch_size):
            mined_maps = _mine_batch(members, batch, settings, device, config["working_size"])
            for (sample, _), cams in zip(batch, mined_maps, strict=True):
                writer.submit(_store_cams, out, sample, cams, histograms)
            counts["images"] += len(batch)
            progress.update(len(batch))
    seconds = time.perf_counter() - started

    summary = dict(counts, skipped=counts["skipped_unlabelled"] + counts["skipped_corrupt"],
                   seconds=round(seconds, 2), images_per_second=round(counts["images"] / seconds, 2) if seconds else 0)
    write_shard_record(out, shard, SHARD_HISTOGRAMS, histograms.to_json())
    write_shard_record(out, shard, SHARD_SUMMARY, summary)
    log.info("mine-cams %s: %s", shard, " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


def merge_mine_cams(out: ArtifactStore, shards: int) -> dict:
    """`summary.json` and `cam_statistics.json` of the step, from its `shards` shards' records."""
    records = shard_records(out, shards)
    merge_cam_histograms(out, shards)
    counts = summed(records, COUNTS)
    seconds = sum(record["seconds"] for record in records)
    summary = dict(counts, skipped=counts["skipped_unlabelled"] + counts["skipped_corrupt"], shards=shards,
                   seconds=round(seconds, 2), images_per_second=round(counts["images"] / seconds, 2) if seconds else 0)
    out.put_bytes("summary.json", json.dumps(summary, indent=2).encode())
    log.info("mine-cams: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


def merge_cam_histograms(out: ArtifactStore, shards: int) -> None:
    """`cam_statistics.json`: the sum of the histograms the shards that wrote the CAM files in `out` kept."""
    histograms = CamHistograms.merged([CamHistograms.from_json(record)
                                       for record in shard_records(out, shards, SHARD_HISTOGRAMS)])
    out.put_bytes(CAM_STATISTICS, json.dumps(histograms.to_json()).encode())


def histograms_of_stored(out: ArtifactStore, samples: list[Sample], num_classes: int,
                          threads: int) -> CamHistograms:
    """The histograms of the maps an earlier attempt stored, read back: a shard's statistics cover its whole
    slice, however many attempts mined it."""
    histograms = CamHistograms(num_classes)
    for _, data in read_ahead(lambda sample: out.get_bytes(f"{sample.image_id}.npz"), samples, threads):
        if isinstance(data, Exception):
            raise data
        histograms.add(*read_cam_file(data))
    return histograms


def size_batches(items: Iterable[tuple[Sample, torch.Tensor]], batch_size: int,
                 max_pending: int) -> Iterator[list[tuple[Sample, torch.Tensor]]]:
    """Batches of equal-sized images, pulled lazily from `items`; never more than `max_pending` wait.

    Real VOC images come in a few dozen sizes, so grouping beats padding (which would shift the maps near borders).
    """
    buckets: dict[tuple, list] = {}
    waiting = 0
    for sample, image in items:
        bucket = buckets.setdefault(image.shape, [])
        bucket.append((sample, image))
        waiting += 1
        if len(bucket) == batch_size or waiting >= max_pending:
            fullest = max(buckets, key=lambda shape: len(buckets[shape]))
            batch = buckets.pop(fullest)
            waiting -= len(batch)
            yield batch
    yield from buckets.values()


def _unmined(samples: list[Sample], mined: set[str], counts: Counter) -> list[Sample]:
    """The labelled samples not mined yet; the others are counted as existing or unlabelled."""
    to_mine = []
    for sample in samples:
        if sample.image_id in mined:
            counts["existing"] += 1
        elif not sample.labels:
            counts["skipped_unlabelled"] += 1
        else:
            to_mine.append(sample)
    return to_mine


class _DecodedImages(Dataset):
    """(index, (H, W, 3) uint8 tensor, None) per sample, or (index, None, DataError) where it cannot be decoded:
    a worker hands the problem back for this process to skip and count, or raise in strict mode."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, DataError | None]:
        try:
            return index, torch.from_numpy(np.array(read_image(self.samples[index].image_path))), None
        except DataError as error:
            return index, None, error


def _decoded(samples: list[Sample], settings: dict, device: torch.device, counts: Counter, strict: bool,
             progress: tqdm) -> Iterator[tuple[Sample, torch.Tensor]]:
    """(sample, image) for each readable sample, in order; corrupt images are logged, counted and passed over."""
    images = _DecodedImages(samples)
    if settings["decode_workers"]:
        decoded = DataLoader(images, batch_size=None, num_workers=settings["decode_workers"],
                             pin_memory=device.type == "cuda")
    else:
        # At most two batches wait decoded, whatever the slice's size.
        decoded = (item for _, item in read_ahead(images.__getitem__, range(len(images)),
                                                  settings.get("read_threads", 0), 2 * settings["batch_size"]))
    for index, image, error in decoded:
        if error is None:
            yield samples[index], image
            continue
        if strict:
            raise error
        log.warning("skipping corrupt image %s: %s", samples[index].image_id, error.problem)
        counts["skipped_corrupt"] += 1
        progress.update(1)


def _for_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model channels-last on a GPU, where cuDNN's convolutions run fastest in that layout (with bf16)."""
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def load_localizers(store: ArtifactStore, classes: ClassList,
                    device) -> list[list[tuple[torch.nn.Module, set | None]]]:
    """The classifiers of `classifier_stores(store)`, loaded, each with the classes it contributes maps of."""
    from wsseg.wsss.ensemble import classifier_stores

    return [[(load_classifier(classifier, classes, device), contributes) for classifier, contributes in member]
            for member in classifier_stores(store)]


def _mine_batch(members, batch: list[tuple[Sample, np.ndarray]], settings: dict, device,
                working_size: int | None) -> list[np.ndarray]:
    """Each image's (L, H, W) maps for its own labels, computed at the working size, returned at image size: the
    mean over the ensemble's members of each member's union (pixel-wise maximum) of the maps of its classifiers
    that contribute the label."""
    # Each (H, W, 3) image goes to the device as uint8 (from pinned memory, asynchronously, on a GPU); the
    # permuted batch is channels-last as it stands.
    images = torch.stack([image.to(device, non_blocking=True) for _, image in batch]).permute(0, 3, 1, 2).float()
    size = tuple(images.shape[-2:])
    working = working_shape(*size, working_size)
    if working != size:
        images = F.interpolate(images, working, mode="bilinear", antialias=True, align_corners=False)
    labels = [sample.labels for sample, _ in batch]
    targets = torch.full((len(batch), max(map(len, labels))), NO_TARGET, dtype=torch.long)
    for row, image_labels in enumerate(labels):
        targets[row, :len(image_labels)] = torch.tensor(image_labels) - 1  # logits are foreground-only
    total = sum(_member_maps(localizers, images, targets, settings, device, size) for localizers in members)
    # As stored: half the bytes to copy off a GPU and to hold for the writers.
    maps = (total / len(members)).half().cpu().numpy()
    return [maps[row, :len(image_labels)] for row, image_labels in enumerate(labels)]


def _member_maps(localizers, images: torch.Tensor, targets: torch.Tensor, settings: dict, device,
                 size: tuple[int, int]) -> torch.Tensor:
    union = None
    for method, contributes in localizers:
        chosen = targets if contributes is None else _only(targets, contributes)
        with torch.no_grad(), autocast(device, settings["precision"]):
            maps = multiscale_maps(method, images, chosen.to(device), settings["scales"], settings["flip"], size)
        union = maps if union is None else torch.maximum(union, maps)
    return union.float()


def _only(targets: torch.Tensor, classes: set) -> torch.Tensor:
    """Targets with the slots of classes outside `classes` padded (their maps come out empty)."""
    keep = torch.tensor([[int(target) + 1 in classes for target in row] for row in targets], dtype=torch.bool)
    return torch.where(keep, targets, torch.full_like(targets, NO_TARGET))


_histograms_lock = threading.Lock()


def _store_cams(out: ArtifactStore, sample: Sample, cams: np.ndarray, histograms: CamHistograms) -> None:
    store_cam_file(out, sample.image_id, cams, np.asarray(sample.labels), histograms)


def store_cam_file(out: ArtifactStore, image_id: str, cams: np.ndarray, labels: np.ndarray,
                   histograms: CamHistograms) -> None:
    """`<image_id>.npz` (float16 maps, int16 labels), counted into `histograms` as refine reads it back (the
    float16 maps widened), so that the thresholds are those of the file."""
    cams, labels = cams.astype(np.float16), labels.astype(np.int16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, cams=cams, labels=labels)
    out.put_bytes(f"{image_id}.npz", buffer.getvalue())
    with _histograms_lock:
        histograms.add(cams.astype(np.float32), labels.astype(np.int64))
