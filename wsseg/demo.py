"""`wsseg demo`: the main job on the embedded default, start to finish.

A synthetic VOC-format dataset, the weakly supervised pipeline and the fully supervised upper bound, both
through kfp.local on the local store, then one table of figures and a report file. On the `cpu` preset the
segmenters train on smaller crops than the preset's and one classifier stands for the preset's ensemble unless
`--full` is given, so that the demo fits in 15 minutes on two cores; the report says so.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Settings the demo changes on a preset, to fit 15 minutes, by config section. Both pipelines on two cores took 25
# minutes at 128 px crops and 2000 iterations, half the cpu preset's. The segmenters learn per image seen, not per
# pixel: at 64 px (images scaled to the crop) they reached val mIoU 69 on ground truth in 204 s, where 128 px
# reached 35 after 800 iterations in 235 s. One classifier, plain CAM, instead of the preset's five saves about
# 6 of the 15 minutes.
DEMO_BUDGET = {"cpu": {"segmenter": {"crop_size": 64, "iterations": 2000}, "classifier": {"ensemble_members": 1}}}

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
                        help="run as the preset does (the cpu preset: five classifiers, and segmenters of twice the "
                             "iterations at twice the crop; at half its iterations it took 25 minutes on two cores)")
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
    budget_note = "" if full else fit_to_budget(config, preset)
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
        f"{table}\n\n{budget_note}Both pipelines took {minutes:.1f} minutes. "
        f"Per-class tables and overlays: {wsss_report}\n")
    return report


def fit_to_budget(config: dict, preset: str) -> str:
    """Apply the demo's settings (`DEMO_BUDGET`) to each section the user's config left as the preset has it;
    returns the sentence the report carries about them."""
    from wsseg.config import default_config

    preset_config = default_config(preset)
    changed = []
    for section, changes in DEMO_BUDGET.get(preset, {}).items():
        if any(config[section][key] != preset_config[section][key] for key in changes):
            continue
        config[section].update(changes)
        changed += [f"{section}.{key} {value} (the {preset} preset's: {preset_config[section][key]})"
                    for key, value in changes.items()]
    if not changed:
        return ""
    note = (f"The demo ran with {', '.join(changed)}, to fit in 15 minutes (images are scaled to the crop size); "
            "`wsseg demo --full` runs as the preset does. ")
    log.info("demo: %s", note)
    return note
