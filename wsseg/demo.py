"""`wsseg demo`: the main job on the embedded default, start to finish.

A synthetic VOC-format dataset, the weakly supervised pipeline and the fully supervised upper bound, both
through kfp.local on the local store, then one table of figures and a report file.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


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
    parser.set_defaults(func=_demo_command)


def _demo_command(args) -> int:
    report = run_demo(Path(args.out), args.preset, args.config, args.train, args.val, args.size, args.seed)
    print(report.read_text())
    print(f"report: {report.resolve()}")
    return 0


def run_demo(out: Path, preset: str | None, config_path: str | None, train: int, val: int, size: int,
             seed: int) -> Path:
    import torch

    from wsseg.config import load_config
    from wsseg.data.synth import make_synthetic_voc
    from wsseg.report import render_summary_table
    from wsseg.runner import run_pipeline

    preset = preset or ("gpu" if torch.cuda.is_available() else "cpu")
    config = load_config(config_path, preset)
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
        f"{table}\n\nBoth pipelines took {minutes:.1f} minutes. Per-class tables and overlays: {wsss_report}\n")
    return report
