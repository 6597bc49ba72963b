"""`make bench`: images/s of CAM mining, dense CRF, segmentation training and inference, and of the semi
pipeline's labelled draw on a COCO-sized split, as JSON.

Runs the real steps on a synthetic set on whatever device is here (the `gpu` preset where CUDA is, else
`cpu`). The classifier trains for one epoch only: its weights do not change the speed of mining.
`side_by_side` then puts each fast path beside its reference on the same images, at VOC's 500x375 as well:
the PyTorch CRF beside pydensecrf on every core (images/s, and the mIoU of the pseudo masks each makes from the
same CAMs), batched mining with its reader and writers beside mining one image at a time in line, and on a GPU
the preset's bf16 segmenter training beside the same training in fp32. `shard_scaling` (`wsseg.bench_shards`): two
shards of mine-cams and of refine, a core each, at once, beside one process doing both shards' images.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import random
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from wsseg.bench_shards import shard_scaling
from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.config import load_config
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.evaluation.metrics import ConfusionMatrix
from wsseg.segmenter.inference import load_segmenter, predict
from wsseg.semi.labelled import labelled_ids
from wsseg.steps.mine_cams import mine_cams
from wsseg.steps.refine import THRESHOLDS, available_cpus, refine_with_crf
from wsseg.steps.train_classifier import train_classifier
from wsseg.steps.train_segmenter import train_segmenter
from wsseg.store import open_store
from wsseg.wsss.crf import CRF_BACKENDS, CrfParams, crf_marginals
from wsseg.wsss.crf_torch import crf_marginals_batch as torch_crf_batch
from wsseg.wsss.pass_levels import choose_levels
from wsseg.wsss.refinement import Refinement, refine_image
from wsseg.wsss.thresholds import PassLevels

VOC_SIZE = (500, 375)


def run_bench(images: int, size: int, preset: str, segmenter_iterations: int, voc_images: int,
              scaling_images: int) -> dict:
    config = load_config(preset=preset)
    config["classifier"]["epochs"] = 1
    config["segmenter"]["iterations"] = segmenter_iterations
    classes = ClassList(config["classes"])
    with tempfile.TemporaryDirectory(prefix="wsseg-bench-") as work:
        data = make_synthetic_voc(Path(work, "data"), train=images, val=max(8, images // 4), seed=0, size=size)
        store = open_store(Path(work, "store"))
        train_classifier(data, store.child("classifier"), config, classes)
        steps = {
            "cam_mining": _timed(images, lambda: mine_cams(data, store.child("classifier"), store.child("cams"),
                                                           config, classes)),
            "crf_thresholds": _timed(images, lambda: _choose_levels(data, store.child("cams"), store.child("masks"),
                                                                    config, classes)),
            # The CRF passes alone: the masks' store already holds the run's thresholds.json, so none are chosen.
            "crf": _timed(images, lambda: refine_with_crf(data, store.child("cams"), store.child("masks"),
                                                          config, classes)),
        }
        training = train_segmenter(data, store.child("masks"), store.child("segmenter"), config, classes)
        steps["segmentation_training"] = {"images_per_second": round(training["images_per_s"], 2),
                                          "iterations": training["iterations"],
                                          "seconds": training["training_time_s"]}
        steps["segmentation_inference"] = _inference_rate(data, store.child("segmenter"), classes)
        steps["labelled_draw"] = _labelled_draw_rate()
        voc = _voc_sized_copy(make_synthetic_voc(Path(work, "figures"), train=voc_images, val=0, seed=1,
                                                 style="figures"), Path(work, "voc"))
        side_by_side = {
            "crf": _crf_side_by_side(voc, classes, config),
            "cam_mining": {f"{size}px": _mining_side_by_side(data, store, config, classes),
                           f"{VOC_SIZE[0]}x{VOC_SIZE[1]}": _mining_side_by_side(voc, store, config, classes)},
            "segmentation_training": _training_side_by_side(training, data, store, config, classes),
        }
        scaling_data = make_synthetic_voc(Path(work, "scaling"), train=scaling_images, val=0, seed=2, size=size)
        scaling = dict(shard_scaling(scaling_data, store.child("classifier").uri, config, Path(work, "shards")),
                       images=scaling_images)
    return {"device": _device_name(), "preset": preset, "image_size": size, "images": images,
            "cpu_cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "steps": steps, "side_by_side": side_by_side, "shard_scaling": scaling}


def _voc_sized_copy(source: Path, out: Path) -> Path:
    """The VOC-layout set at `source` with every image and mask resized to VOC's typical 500x375."""
    shutil.copytree(source, out)
    for folder, resample in (("JPEGImages", Image.BILINEAR), ("SegmentationClass", Image.NEAREST)):
        for path in Path(out, folder).iterdir():
            with Image.open(path) as picture:
                resized = picture.resize(VOC_SIZE, resample)
            resized.save(path, quality=95) if path.suffix == ".jpg" else resized.save(path)
    return out


def _crf_side_by_side(voc: Path, classes: ClassList, config: dict) -> dict:
    """Both CRF backends on the same VOC-sized images: all 21 labels' marginals (the issue's reference load),
    and pseudo masks from the same CAMs (each labelled class's ground truth, blurred) scored against the truth."""
    scenes = _blurred_truth_scenes(voc, classes)
    params = CrfParams.from_config(config["crf"])
    pictures = [image for image, *_ in scenes]
    every_label = [_every_label_scores(truth, len(classes)) for *_, truth in scenes]
    processes = available_cpus()
    jobs = [(image, scores, params) for image, scores in zip(pictures, every_label, strict=True)]
    with multiprocessing.Pool(processes) as pool:
        reference = _timed(len(scenes), lambda: pool.starmap(crf_marginals, jobs))
    # A GPU takes images a batch at a time; a CPU gains nothing from batching and would hold every lattice.
    batch = 8 if torch.cuda.is_available() else 1
    ported = _timed(len(scenes), lambda: [torch_crf_batch(pictures[start:start + batch],
                                                          every_label[start:start + batch], params)
                                          for start in range(0, len(pictures), batch)])
    masks = {backend: _pseudo_mask_miou(scenes, config, backend, len(classes)) for backend in CRF_BACKENDS[1:]}
    return {"image_size": list(VOC_SIZE), "labels": len(classes),
            "torch": ported, "pydensecrf": dict(reference, processes=processes),
            "ratio": round(ported["images_per_second"] / reference["images_per_second"], 3),
            "pseudo_mask_miou": dict(masks, difference=round(masks["torch"] - masks["pydensecrf"], 2))}


def _blurred_truth_scenes(voc: Path, classes: ClassList) -> list:
    scenes = []
    for sample in load_samples(voc, "train", classes):
        truth = read_mask(sample.mask_path)
        cams = np.stack([gaussian_filter((truth == label).astype(np.float32), 12) for label in sample.labels])
        cams /= np.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-6)
        scenes.append((read_image(sample.image_path), cams, np.array(sample.labels), truth))
    return scenes


def _every_label_scores(truth: np.ndarray, labels: int) -> np.ndarray:
    one_hot = np.stack([(truth == label).astype(np.float32) for label in range(labels)])
    return gaussian_filter(one_hot, (0, 12, 12)) + 1e-3


def _pseudo_mask_miou(scenes, config: dict, backend: str, labels: int) -> float:
    levels = PassLevels(dict.fromkeys(range(1, labels), 0.4), dict.fromkeys(range(1, labels), 0.1), "bench")
    refinement = Refinement({**config["crf"], "backend": backend}, levels, config["working_size"])
    matrix = ConfusionMatrix(labels)
    for image, cams, image_labels, truth in scenes:
        mask = refine_image(image, cams, image_labels, refinement)
        matrix.update(np.where(mask == IGNORE_INDEX, 0, mask), truth)
    return round(100 * matrix.miou(), 2)


def _mining_side_by_side(data: Path, store, config: dict, classes: ClassList) -> dict:
    """Mining as the preset runs it beside the same maps one image at a time, decoded and written in line."""
    images = len(load_samples(data, "train", classes))
    one_at_a_time = copy.deepcopy(config)
    one_at_a_time["cams"].update(batch_size=1, decode_workers=0, writer_threads=0)
    timings = {}
    for name, settings in (("batched", config), ("one_at_a_time", one_at_a_time)):
        with tempfile.TemporaryDirectory(prefix="wsseg-bench-cams-") as cams:
            timings[name] = _timed(images, partial(mine_cams, data, store.child("classifier"), open_store(cams),
                                                   settings, classes))
    return dict(timings, ratio=round(timings["batched"]["images_per_second"]
                                     / timings["one_at_a_time"]["images_per_second"], 3))


def _training_side_by_side(training: dict, data: Path, store, config: dict, classes: ClassList) -> dict:
    preset = {"images_per_second": round(training["images_per_s"], 2), "bf16": config["segmenter"]["bf16"]}
    if not (torch.cuda.is_available() and config["segmenter"]["bf16"]):
        return {"preset": preset, "reference": None, "ratio": None,
                "why": "the preset trains in fp32 here, as the reference does"}
    fp32 = copy.deepcopy(config)
    fp32["segmenter"]["bf16"] = False
    reference = train_segmenter(data, store.child("masks"), store.child("segmenter-fp32"), fp32, classes)
    return {"preset": preset, "reference": {"images_per_second": round(reference["images_per_s"], 2), "bf16": False},
            "ratio": round(training["images_per_s"] / reference["images_per_s"], 3)}


def _choose_levels(data: Path, cams, masks, config: dict, classes: ClassList) -> None:
    """The refine step's threshold selection (Otsu and the stability scan), written where refine will find it."""
    levels = choose_levels(data, cams, config, classes)
    masks.put_bytes(THRESHOLDS, json.dumps(levels.to_json()).encode())


def _labelled_draw_rate(images: int = 118_000) -> dict:
    """`semi.draw: balanced` drawing 1/8 of a COCO-sized train split (80 classes, one to three per image)."""
    rng = random.Random(0)
    image_labels = {f"{index:06d}": tuple(rng.sample(range(1, 81), rng.randint(1, 3))) for index in range(images)}
    return _timed(images, lambda: labelled_ids("1/8", image_labels, seed=0))


def _timed(images: int, step) -> dict:
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    return {"images_per_second": round(images / seconds, 2), "images": images, "seconds": round(seconds, 2)}


def _inference_rate(data: Path, segmenter, classes: ClassList) -> dict:
    model = load_segmenter(segmenter)
    pictures = [read_image(sample.image_path) for sample in load_samples(data, "val", classes)]
    predict(model, pictures[0])  # the first call pays for lazy initialisation
    return _timed(len(pictures), lambda: [predict(model, picture) for picture in pictures])


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench.json")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=None, help="image side (default: 512 on GPU, 128 on CPU)")
    parser.add_argument("--segmenter-iterations", type=int, default=None)
    parser.add_argument("--voc-images", type=int, default=16, help="500x375 images for the side-by-side figures")
    # A shard process starts in about 3 CPU-seconds (Python, torch, the model): at 256 images that was a third of
    # mine-cams' work and the CPU ratio read 1.32; at 2048 it is a few per cent, as beside a real shard's thousands.
    parser.add_argument("--scaling-images", type=int, default=2048,
                        help="images of the two-shard scaling figures (enough that start-up is small beside them)")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    result = run_bench(args.images, args.size or (512 if gpu else 128), "gpu" if gpu else "cpu",
                       args.segmenter_iterations or (100 if gpu else 20), args.voc_images, args.scaling_images)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
