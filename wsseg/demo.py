"""`wsseg demo`: the main job on the embedded default, start to finish.

A synthetic VOC-format dataset, the weakly supervised pipeline and the fully supervised upper bound, both
through kfp.local on the local store, then one table of figures and a report file. On the `cpu` preset the
segmenters train on smaller crops than the preset's unless `--full` is given, so that the demo fits in
15 minutes on two cores; the report says so.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Segmenter settings the demo changes on a preset, to fit 15 minutes. Both pipelines on two cores took 25
# minutes at 128 px crops and 2000 iterations, half the cpu preset's. The segmenters learn per image seen, not per
# pixel: at 64 px (images scaled to the crop) they reached val mIoU 69 on ground truth in 204 s, where 128 px
# reached 35 after 800 iterations in 235 s.
DEMO_SEGMENTER = {"cpu": {"crop_size": 64, "iterations": 2000}}


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="synthetic data → wsss + supervised upper bound → table and report")
    parser.add_argument("--out", default="runs/demo", help="folder for data, store and report (default: runs/demo)")
    parser.add_argument("--preset", default=None,
                        help="cpu-tiny, cpu or gpu (default: gpu if CUDA is present, else cpu)")
    parser.add_argument("--config", help="YAML config merged over the preset")
    parser.add_argument("--train", type=int, default=300, help="synthetic training images")
    parser.add_argument("--val", type=int, default=100, help="synthetic validation images")
    parser.add_argument("--size", type=int, default=128, help="synthetic image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true",
                        help="train the segmenters as the preset does (the cpu preset: twice the iterations at "
                             "twice the crop; at half its iterations it took 25 minutes on two cores)")
    parser.set_defaults(func=_demo_command)


def _demo_command(args) -> int:
    report = run_demo(Path(args.out), args.preset, args.config, args.train, args.val, args.size, args.seed,
                      full=args.full)
    print(report.read_text())
    print(f"report: {report.resolve()}")
    return 0


def run_demo(out: Path, preset: str | None, config_path: str | None, train: int, val: int, size: int,
             seed: int, full: bool = False) -> Path:
    import torch

    from wsseg.config import load_config
    from wsseg.data.synth import make_synthetic_voc
    from wsseg.evaluation.report import render_summary_table
    from wsseg.runtime.runner import run_pipeline

    preset = preset or ("gpu" if torch.cuda.is_available() else "cpu")
    config = load_config(config_path, preset)
    segmenter_note = "" if full else _fit_segmenters_to_budget(config, preset)
    data = out / "data"
    if not (data / "ImageSets").exists():
        make_synthetic_voc(data, train=train, val=val, seed=seed, size=size)
    started = time.monotonic()
    wsss = run_pipeline("wsss", str(data), out, config)
    supervised = run_pipeline("supervised", str(data), out, config)
    minutes = (time.monotonic() - started) / 60
    table = render_summary_table([("wsss", wsss["headline"])], upper_bound=supervised["headline"])
    report = out / "report.md"
    wsss_report = out / "store" / "wsss" / "evaluate" / "report.html"
    report.write_text(
        f"# wsseg demo ({preset} preset, {train} train / {val} val synthetic images of {size} px)\n\n"
        f"{table}\n\n{segmenter_note}Both pipelines took {minutes:.1f} minutes. "
        f"Per-class tables and overlays: {wsss_report}\n")
    return report


def _fit_segmenters_to_budget(config: dict, preset: str) -> str:
    """Apply the demo's segmenter settings, unless the user's config already changed one of them; returns the
    sentence the report carries about it."""
    from wsseg.config import default_config

    changes = DEMO_SEGMENTER.get(preset, {})
    preset_settings = default_config(preset)["segmenter"]
    if not changes or any(config["segmenter"][key] != preset_settings[key] for key in changes):
        return ""
    config["segmenter"].update(changes)
    changed = ", ".join(f"{key} {value} (the {preset} preset's: {preset_settings[key]})"
                        for key, value in changes.items())
    note = (f"The segmenters trained with {changed}, to fit the demo in 15 minutes (images are scaled to the crop "
            "size); `wsseg demo --full` trains them as the preset does. ")
    log.info("demo: %s", note)
    return note
