"""`make bench`: images/s of CAM mining, dense CRF, segmentation training and inference, as JSON.

Runs the real steps on a synthetic set on whatever device is here (the `gpu` preset where CUDA is, else
`cpu`). The classifier trains for one epoch only: its weights do not change the speed of mining.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from wsseg.classes import ClassList
from wsseg.config import load_config
from wsseg.data import load_samples, make_synthetic_voc, read_image
from wsseg.pass_levels import choose_levels
from wsseg.segmenter.inference import load_segmenter, predict
from wsseg.steps.mine_cams import mine_cams
from wsseg.steps.refine import THRESHOLDS, refine_with_crf
from wsseg.steps.train_classifier import train_classifier
from wsseg.steps.train_segmenter import train_segmenter
from wsseg.store import open_store


def run_bench(images: int, size: int, preset: str, segmenter_iterations: int) -> dict:
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
    return {"device": _device_name(), "preset": preset, "image_size": size, "images": images,
            "cpu_cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "steps": steps}


def _choose_levels(data: Path, cams, masks, config: dict, classes: ClassList) -> None:
    """The refine step's threshold selection (Otsu and the stability scan), written where refine will find it."""
    samples = load_samples(data, "train", classes)
    levels = choose_levels(samples, samples, cams, config, len(classes))
    masks.put_bytes(THRESHOLDS, json.dumps(levels.to_json()).encode())


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
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    result = run_bench(args.images, args.size or (512 if gpu else 128), "gpu" if gpu else "cpu",
                       args.segmenter_iterations or (100 if gpu else 20))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
