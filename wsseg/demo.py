"""`wsseg demo`: the main job on the embedded default, start to finish.

A synthetic VOC-format dataset, the weakly supervised pipeline and the fully supervised upper bound, both
through kfp.local on the local store, then one table of figures and a report file. On the `cpu` preset the
segmenters train for fewer iterations than the preset's unless `--full` is given, so that the demo fits in
15 minutes on two cores; the report says so.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Both pipelines on two cores: 25 minutes with the cpu preset's 2000 segmenter iterations, 15.3 with 1000.
DEMO_SEGMENTER_ITERATIONS = {"cpu": 800}


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
                        help="train the segmenters for the preset's full iterations (the cpu preset: about 25 "
                             "minutes on two cores instead of 15)")
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
    from wsseg.report import render_summary_table
    from wsseg.runner import run_pipeline

    preset = preset or ("gpu" if torch.cuda.is_available() else "cpu")
    config = load_config(config_path, preset)
    iterations_note = "" if full else _trim_segmenter_iterations(config, preset)
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
        f"{table}\n\n{iterations_note}Both pipelines took {minutes:.1f} minutes. "
        f"Per-class tables and overlays: {wsss_report}\n")
    return report


def _trim_segmenter_iterations(config: dict, preset: str) -> str:
    """Cut the segmenters' iterations to the demo's budget, unless the user's config already changed them;
    returns the sentence the report carries about it."""
    from wsseg.config import default_config

    budget = DEMO_SEGMENTER_ITERATIONS.get(preset)
    preset_iterations = default_config(preset)["segmenter"]["iterations"]
    if budget is None or config["segmenter"]["iterations"] != preset_iterations:
        return ""
    config["segmenter"]["iterations"] = budget
    log.info("demo: segmenters train %d iterations instead of the %s preset's %d (--full trains them all)",
             budget, preset, preset_iterations)
    return (f"The segmenters trained {budget} iterations instead of the {preset} preset's {preset_iterations}, "
            f"to fit the demo in 15 minutes; `wsseg demo --full` trains them all. ")
