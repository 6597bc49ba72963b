"""`wsseg run PIPELINE`: a pipeline run locally through `kfp.local`, with the components a cluster runs.

Each task runs as a subprocess in this environment (`SubprocessRunner(use_venv=False)`). The run's outputs
go to the store (`--store`, default: the `--out` folder); a run re-started with the same `--out` and
`--run-name` resumes, since every step skips the outputs it finds finished.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PIPELINE_NAMES = ("wsss", "supervised", "ablation")


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run a pipeline locally through kfp.local")
    pipelines = parser.add_subparsers(dest="pipeline", required=True)
    for name in PIPELINE_NAMES:
        sub = pipelines.add_parser(name, help=f"the {name} pipeline")
        sub.add_argument("--data", required=True, help="dataset root (VOC folder, manifest file or s3:// prefix)")
        sub.add_argument("--out", required=True, help="local folder for this run (KFP's local root and default store)")
        sub.add_argument("--config", help="YAML config merged over the preset")
        sub.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the config's, else cpu)")
        sub.add_argument("--store", help="artifact store URI (default: the --out folder)")
        sub.add_argument("--run-name", help=f"name of the run inside the store (default: {name})")
        if name == "ablation":
            sub.add_argument("--methods", default="cam", type=_methods,
                             help="comma-separated methods, e.g. cam,has,acol,mdc,mixup,aepsl,seam,sec,saliency")
        sub.set_defaults(func=_run_command)


def _methods(text: str) -> list[str]:
    from wsseg.methods import parse_methods

    return parse_methods(text)


def _run_command(args) -> int:
    from wsseg.config import load_config
    from wsseg.report import render_ablation_table, render_summary_table

    config = load_config(args.config, args.preset)
    if args.pipeline == "ablation":
        table = run_ablation(args.data, args.out, config, args.methods, args.store, args.run_name)
        print(render_ablation_table(table))
        return 0
    metrics = run_pipeline(args.pipeline, args.data, args.out, config, args.store, args.run_name)
    print(render_summary_table([(args.pipeline, metrics["headline"])]))
    return 0


def run_pipeline(name: str, data: str, out: str | Path, config: dict, store_uri: str | None = None,
                 run_name: str | None = None) -> dict:
    """Run pipeline `name` under kfp.local and return the metrics its evaluate step stored."""
    from pipelines import PIPELINES
    from wsseg.store import open_store

    store_uri, run_name = _run_locally(PIPELINES[name], data, out, config, store_uri, run_name or name)
    evaluation = open_store(store_uri).child(run_name).child("evaluate")
    log.info("%s finished; report: %s", name, evaluation.uri)
    return json.loads(evaluation.get_bytes("metrics.json"))


def run_ablation(data: str, out: str | Path, config: dict, methods: list[str], store_uri: str | None = None,
                 run_name: str | None = None) -> dict:
    """The ablation pipeline under kfp.local, one method after another; returns its table's figures."""
    from pipelines.ablation import build_ablation
    from wsseg.ablation import TABLE
    from wsseg.store import open_store

    store_uri, run_name = _run_locally(build_ablation(parallelism=1), data, out, config, store_uri,
                                       run_name or "ablation", methods=methods)
    table = open_store(store_uri).child(run_name).child(TABLE)
    log.info("ablation finished; table: %s", table.uri)
    return json.loads(table.get_bytes("ablation.json"))


def _run_locally(pipeline, data: str, out: str | Path, config: dict, store_uri: str | None, run_name: str,
                 **arguments) -> tuple[str, str]:
    import kfp.local

    from wsseg.config import dump_config

    # kfp.local relays each task's output line by line, so every redraw of a progress bar becomes a line.
    os.environ.setdefault("TQDM_MININTERVAL", "10")
    out = Path(out).resolve()
    store_uri = store_uri or str(out / "store")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp-local"))
    data = data if data.startswith("s3://") else str(Path(data).resolve())
    pipeline(data=data, store_uri=store_uri, config_yaml=dump_config(config), run_name=run_name, **arguments)
    return store_uri, run_name
