"""refine: CAMs -> pseudo masks by dense CRF, with IRN's uncertain band (Ahn et al., CVPR'19, sec. 3.1).

Each train image with a CAM file gets two CRF passes, one with a high background level (its foreground is
trusted) and one with a low background level (its background is trusted); pixels where they disagree are
marked 255 so the segmenter ignores them. The levels are chosen per run from the CAMs (`wsseg.wsss.thresholds`),
or scaled to a few pixel-labelled images the user names (`calibration`), and kept in `thresholds.json`.
With saliency guidance, salient segments take the class of the CAM seed inside them (Oh et al., CVPR'17).
The CRF is the pipeline's slowest step. With pydensecrf (`crf.backend`; the default without CUDA) it runs on
the CPU, so images are spread over a process pool; each worker reads and writes the stores itself so that no
image travels through the parent and memory stays flat however large the dataset. The PyTorch CRF (the default
where CUDA is) runs in threads of this one process instead (see `_in_threads`).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data.locations import Location
from wsseg.data.samples import Sample
from wsseg.errors import ConfigError, DataError, WssegError
from wsseg.runtime.read_ahead import read_ahead
from wsseg.runtime.shards import SHARD_SUMMARY, WHOLE, Shard, shard_records, summed, write_shard_record
from wsseg.store import traffic
from wsseg.wsss.crf import resolve_backend
from wsseg.wsss.pass_levels import choose_levels
from wsseg.wsss.pseudo_masks import (
    BACKGROUND_METHODS,
    encode_mask_png,
    read_cam_file,
)
from wsseg.wsss.refinement import Refinement, refine_image
from wsseg.wsss.saliency import SaliencySource
from wsseg.wsss.saliency import default_config as saliency_config
from wsseg.wsss.thresholds import PassLevels

log = logging.getLogger(__name__)
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
THRESHOLDS = "thresholds.json"


def default_config(preset: str) -> dict:
    return {
        # "auto": the PyTorch CRF (wsseg.wsss.crf_torch) where CUDA is, pydensecrf (the reference) elsewhere.
        "backend": "auto",
        "iterations": 5 if preset == "cpu-tiny" else 10,
        "gaussian_sxy": 3.0,
        "gaussian_compat": 3.0,
        # PSA's bilateral kernel (sxy 80, srgb 13, compat 10); sxy is for 500x375 images and is scaled to
        # each image's size when scale_sxy_to_image is set (see wsseg.wsss.crf.REFERENCE_SIDE).
        "bilateral_sxy": 80.0,
        "bilateral_srgb": 13.0,
        "bilateral_compat": 10.0,
        "scale_sxy_to_image": True,
        # "adaptive": per class, from this run's CAMs (wsseg.wsss.thresholds); "constant": the two thresholds below
        # for every class (IRN's conf_fg_thres / conf_bg_thres); "psa": (1 - max CAM)^alpha (PSA, CVPR'18).
        "background": "adaptive",
        "confident_fg_threshold": 0.30,
        "confident_bg_threshold": 0.05,
        # PSA's alphas for the same two passes (its la_crf = 4 and ha_crf = 32).
        "confident_fg_alpha": 4.0,
        "confident_bg_alpha": 32.0,
        # Train image ids with pixel labels (say 20) to scale the adaptive thresholds to; none: the CAMs alone.
        "calibration": [],
        "saliency_guidance": False,
        "saliency": saliency_config(),
        # Workers (processes; threads with the PyTorch CRF); 0 = every CPU this process may use (available_cpus).
        "processes": 0,
        # With one worker (a pod with one CPU), threads reading the next images and maps while the CRF runs.
        "read_threads": 2,
        "chunk_size": 2,
    }


def refine_with_crf(data_root, cams, out, config: dict, classes: ClassList, strict: bool = False,
                    shard: Shard | None = None) -> dict:
    """Write `out/<image_id>.png` for every train image of `shard`'s slice with a CAM file and no pseudo mask yet,
    at the levels `choose_refine_levels` stored (its summary); without a shard: the levels, then every image, merged
    (the step's summary)."""
    if shard is not None:
        return refine_shard(data_root, cams, out, config, classes, strict, shard)
    choose_refine_levels(data_root, cams, out, config, classes, strict)
    refine_shard(data_root, cams, out, config, classes, strict, WHOLE)
    return merge_refine(out, WHOLE.count)


def choose_refine_levels(data_root, cams, out, config: dict, classes: ClassList, strict: bool = False) -> dict:
    """The reduce before the shards: the passes' levels, from the histograms the CAMs' writer summed
    (`cam_statistics.json`) and a fixed-size sample of images, kept in `out/thresholds.json`."""
    _check_settings(config["crf"])
    levels = _pass_levels(data_root, cams, out, config, classes)
    return {"thresholds": levels.source if levels else config["crf"]["background"]}


def refine_shard(data_root, cams, out, config: dict, classes: ClassList, strict: bool, shard: Shard) -> dict:
    settings = config["crf"]
    _check_settings(settings)
    train, samples = _train_with_cams(data_root, cams, classes, shard)
    finished = _ids_with_suffix(out.list(), ".png")
    refinement = Refinement(settings, _stored_levels(out, settings), config["working_size"])
    tasks = [RefineTask(s.image_id, s.image_path) for s in samples if s.image_id not in finished]

    started = time.perf_counter()
    # closing(): a strict-mode error stops the pool now, not when the traceback is garbage collected.
    with closing(_results(tasks, cams, out, refinement)) as results:
        tally = _tally(results, len(tasks), strict)
    seconds = time.perf_counter() - started
    summary = {
        "images": tally["refined"],
        "skipped": tally["skipped"],
        "already_done": len(samples) - len(tasks),
        "without_cams": len(train) - len(samples),
        "uncertain_pixels": tally["uncertain"],
        "pixels": tally["pixels"],
        **{f"saliency_{origin}": count for origin, count in tally["saliency"].items()},
        "seconds": round(seconds, 2),
    }
    write_shard_record(out, shard, SHARD_SUMMARY, summary)
    return summary


def merge_refine(out, shards: int) -> dict:
    """The step's `summary.json` from its shards' records."""
    records = shard_records(out, shards)
    counts = summed(records, sorted({key for record in records for key in record} - {"seconds"}))
    seconds = sum(record["seconds"] for record in records)
    summary = {
        "images": counts.pop("images"),
        "skipped": counts.pop("skipped"),
        "already_done": counts.pop("already_done"),
        "without_cams": counts.pop("without_cams"),
        "uncertain_fraction": round(counts["uncertain_pixels"] / counts["pixels"], 4) if counts["pixels"] else None,
        "thresholds": _thresholds_source(out),
        **{key: count for key, count in counts.items() if key.startswith("saliency_")},
        "shards": shards,
        "seconds": round(seconds, 2),
    }
    summary["images_per_second"] = round(summary["images"] / seconds, 3) if summary["images"] and seconds else None
    out.put_bytes("summary.json", json.dumps(summary, indent=2).encode())
    return summary


def _check_settings(settings: dict) -> None:
    if settings["background"] not in BACKGROUND_METHODS:
        raise ConfigError(f"crf.background is {settings['background']!r}; choose one of "
                          f"{', '.join(BACKGROUND_METHODS)}")
    resolve_backend(settings["backend"])  # an unknown backend fails here, before any image is read


def _train_with_cams(data_root, cams, classes: ClassList, shard: Shard = WHOLE) -> tuple[list[Sample], list[Sample]]:
    """The train samples of `shard`'s slice, and those of them with a CAM file."""
    from wsseg.data import load_samples

    with_cams = _ids_with_suffix(cams.list(), ".npz")
    train = load_samples(data_root, "train", classes, keep=shard.holds)
    return train, [sample for sample in train if sample.image_id in with_cams]


def _tally(results, total: int, strict: bool) -> dict:
    """Count results as they arrive, behind a progress bar whose rate is the img/s figure."""
    tally = dict.fromkeys(("refined", "skipped", "uncertain", "pixels"), 0)
    tally["saliency"] = Counter()
    for result in tqdm(results, total=total, unit="img", desc="refine", dynamic_ncols=True):
        if result.problem is not None:
            if strict:
                raise DataError(result.path, result.problem)
            log.warning("skipped %s: %s", result.path, result.problem)
            tally["skipped"] += 1
            continue
        tally["refined"] += 1
        tally["uncertain"] += result.uncertain_pixels
        tally["pixels"] += result.pixels
        if result.saliency_origin:
            tally["saliency"][result.saliency_origin] += 1
    return tally


def _pass_levels(data_root, cams, out, config: dict, classes: ClassList) -> PassLevels | None:
    """The passes' levels: those of an earlier attempt at this step (a resumed step keeps its masks consistent),
    else chosen now, and stored in `thresholds.json`."""
    settings = config["crf"]
    if settings["background"] == "psa":
        return None
    if out.exists(THRESHOLDS):
        return PassLevels.from_json(json.loads(out.get_bytes(THRESHOLDS)))
    levels = choose_levels(data_root, cams, config, classes)
    out.put_bytes(THRESHOLDS, json.dumps(levels.to_json(), indent=2).encode())
    log.info("refine: pass levels from %s: %s", levels.source, levels.details)
    return levels


def _stored_levels(out, settings: dict) -> PassLevels | None:
    """The levels `choose_refine_levels` stored, which every shard refines at."""
    if settings["background"] == "psa":
        return None
    if not out.exists(THRESHOLDS):
        raise WssegError(f"{out.uri} holds no {THRESHOLDS}: choose the passes' levels (choose_refine_levels, the "
                         "refine-levels task) before refining a shard")
    return PassLevels.from_json(json.loads(out.get_bytes(THRESHOLDS)))


def _thresholds_source(out) -> str:
    return json.loads(out.get_bytes(THRESHOLDS))["source"] if out.exists(THRESHOLDS) else "psa"


@dataclass(frozen=True)
class RefineTask:
    image_id: str
    image_path: Location


@dataclass(frozen=True)
class RefineResult:
    image_id: str
    path: str
    problem: str | None = None  # why the image was skipped; DataError is rebuilt from it in the parent
    uncertain_pixels: int = 0
    pixels: int = 0
    saliency_origin: str | None = None  # where the saliency map came from, with saliency guidance
    # What a worker process moved through S3 for this image, added to the task's own count in the parent (each
    # process counts its own traffic, and a shard's step.json reports the parent's).
    traffic: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Inputs:
    """What refining one image reads: the image, its CAMs and labels, and its saliency map (with guidance)."""

    image: np.ndarray
    cams: np.ndarray
    labels: np.ndarray
    saliency: np.ndarray | None = None
    saliency_origin: str | None = None


class _Refiner:
    """Refines one image from store to store; one per process. `load` reads, `finish` computes and writes, so that
    a one-process refine reads the next images while the CRF runs (`_results`)."""

    def __init__(self, cams, out, refinement: Refinement):
        self.cams, self.out, self.refinement = cams, out, refinement
        settings = refinement.settings
        self.saliency = SaliencySource(settings["saliency"]) if settings["saliency_guidance"] else None

    def __call__(self, task: RefineTask) -> RefineResult:
        return self.finish(task, self.load(task))

    def load(self, task: RefineTask) -> _Inputs | RefineResult:
        from wsseg.data import read_image

        cam_key = f"{task.image_id}.npz"
        try:
            image = read_image(task.image_path)
        except DataError as error:
            return RefineResult(task.image_id, str(error.path), error.problem)
        try:
            cams, labels = read_cam_file(self.cams.get_bytes(cam_key))
        except ValueError as error:
            return RefineResult(task.image_id, f"{self.cams.uri}/{cam_key}", str(error))
        if cams.shape[1:] != image.shape[:2]:
            return RefineResult(task.image_id, f"{self.cams.uri}/{cam_key}",
                                f"CAMs are {cams.shape[1:]} but the image is {image.shape[:2]}")
        if self.saliency is None:
            return _Inputs(image, cams, labels)
        try:
            return _Inputs(image, cams, labels, *self.saliency.saliency(task.image_id, image))
        except DataError as error:
            return RefineResult(task.image_id, str(error.path), error.problem)

    def finish(self, task: RefineTask, inputs: _Inputs | RefineResult) -> RefineResult:
        if isinstance(inputs, RefineResult):
            return inputs
        mask = refine_image(inputs.image, inputs.cams, inputs.labels, self.refinement, inputs.saliency)
        self.out.put_bytes(f"{task.image_id}.png", encode_mask_png(mask))
        return RefineResult(task.image_id, str(task.image_path), None,
                            int((mask == IGNORE_INDEX).sum()), int(mask.size), inputs.saliency_origin)


_worker_refiner: _Refiner | None = None


def _start_worker(cams_uri: str, out_uri: str, refinement: Refinement) -> None:
    # Stores are reopened from their URIs (credentials come from the environment) rather than inherited, so
    # no worker shares the parent's network connections.
    from wsseg.store import open_store

    global _worker_refiner
    _worker_refiner = _Refiner(open_store(cams_uri), open_store(out_uri), refinement)


def _refine_in_worker(task: RefineTask) -> RefineResult:
    before = traffic.traffic()
    return replace(_worker_refiner(task), traffic=traffic.since(before))


def _results(tasks: list[RefineTask], cams, out, refinement: Refinement):
    settings = refinement.settings
    workers = min(settings["processes"] or available_cpus(), len(tasks))
    if workers <= 1:
        refiner = _Refiner(cams, out, refinement)
        for task, inputs in read_ahead(refiner.load, tasks, settings.get("read_threads", 0)):
            yield refiner.finish(task, _unless_unexpected(inputs))
    elif resolve_backend(settings["backend"]) == "torch":
        yield from _in_threads(_Refiner(cams, out, refinement), tasks, workers)
    else:
        with multiprocessing.Pool(workers, _start_worker, (cams.uri, out.uri, refinement)) as pool:
            for result in pool.imap_unordered(_refine_in_worker, tasks, chunksize=settings["chunk_size"]):
                traffic.count(**result.traffic)
                yield result


def _unless_unexpected(inputs):
    """A read-ahead outcome; an error `load` does not turn into a skip (a store failure) stops the step here."""
    if isinstance(inputs, Exception):
        raise inputs
    return inputs


def _in_threads(refiner: _Refiner, tasks: list[RefineTask], threads: int):
    """The PyTorch CRF's workers: threads of this one process, since forked processes cannot share its CUDA
    context; torch's operations release the GIL, so one image's decoding and encoding overlap another's CRF."""
    with ThreadPoolExecutor(threads) as pool:
        try:
            yield from pool.map(refiner, tasks)
        finally:
            pool.shutdown(cancel_futures=True)  # a strict-mode error stops the images not yet started


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (a Kubernetes CPU limit), which
    os.cpu_count() ignores; a pod limited to 2 CPUs on a 64-core node should start 2 workers, not 64."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()
    except (OSError, ValueError):
        return cpus
    return cpus if quota == "max" else max(1, min(cpus, int(quota) // int(period)))


def _ids_with_suffix(keys: list[str], suffix: str) -> set[str]:
    return {key[: -len(suffix)] for key in keys if key.endswith(suffix) and "/" not in key}
