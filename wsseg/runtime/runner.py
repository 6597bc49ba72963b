"""`wsseg run PIPELINE`: a pipeline run locally through `kfp.local`, with the components a cluster runs.
`wsseg run semi --labelled 1/8` trains the baseline, continued and ClassMix branches of `pipelines/semi.py`;
`wsseg run incremental --registry URI --inbox URI` grows the registry's model by the inbox's oldest new batch
(`pipelines/incremental.py`; `--data` is then the held-out set both models are scored on).

Each task runs as a subprocess in this environment (`SubprocessRunner(use_venv=False)`), one at a time: the shards
of a per-image step (`--shards`, or the config's `shards`) run one after another. The run's outputs
go to the store (`--store`, default: the `--out` folder); a run re-started with the same `--out` and
`--run-name` resumes, since every step skips the outputs it finds finished; under other settings it is refused
(`wsseg.runtime.run_config`). `wsseg ablation-table` prints an ablation run's table so far, while it runs or after it
stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from wsseg.errors import ConfigError

log = logging.getLogger(__name__)

# The pipelines `wsseg run` starts, each with what it does in one line (`wsseg --help`, `wsseg run --help`).
PIPELINES = {
    "wsss": "image tags only: classifier → CAMs → dense-CRF pseudo masks → segmenter, scored",
    "supervised": "the upper bound: the same segmenter trained on the ground-truth masks",
    "ablation": "the wsss pipeline once per method (and seed), the upper bound once, one table",
    "semi": "a few masks and many unlabelled images: ClassMix against labelled-only training",
    "incremental": "new classes from tags: the inbox's next batch grows the registry's model (WILSON)",
}
PIPELINE_NAMES = tuple(PIPELINES)


def pipeline_lines(extra: dict[str, str] | None = None) -> str:
    """The pipelines (and `extra` ones), one indented line each: name, then what it does."""
    described = {**PIPELINES, **(extra or {})}
    width = max(map(len, described)) + 2
    return "\n".join(f"  {name:<{width}}{what}" for name, what in described.items())


def register(subparsers) -> None:
    description = ("Run a pipeline locally through kfp.local, with the components a cluster runs, then print its "
                   "table.\n`wsseg run PIPELINE --help` gives a pipeline's options.\n\npipelines:\n" + pipeline_lines())
    parser = subparsers.add_parser("run", help="run a pipeline locally through kfp.local", description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    pipelines = parser.add_subparsers(dest="pipeline", required=True, metavar="PIPELINE",
                                      help="one of the pipelines above")
    for name in PIPELINE_NAMES:
        sub = pipelines.add_parser(name, description=f"{PIPELINES[name][0].upper()}{PIPELINES[name][1:]}.")
        sub.add_argument("--data", required=True, help="dataset root (VOC folder, manifest file or s3:// prefix)")
        sub.add_argument("--out", required=True, help="local folder for this run (KFP's local root and default store)")
        sub.add_argument("--config", help="YAML config merged over the preset")
        sub.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the config's, else cpu)")
        sub.add_argument("--store", help="artifact store URI (default: the --out folder)")
        sub.add_argument("--run-name", help=f"name of the run inside the store (default: {name})")
        sub.add_argument("--shards", type=int,
                         help="tasks each per-image step is split into (default: the config's shards, 1)")
        if name == "ablation":
            sub.add_argument("--methods", default="cam", type=_methods,
                             help="comma-separated methods, e.g. cam,has,acol,mdc,mixup,aepsl,seam,sec,saliency; "
                                  "cam@1 runs a method at seed 1")
            sub.add_argument("--seeds", type=_seeds,
                             help="comma-separated seeds, e.g. 0,1,2: every method runs once per seed (as cam@0, "
                                  "cam@1, ...) and the table adds each method's mean and range over its seeds")
        if name == "semi":
            sub.add_argument("--labelled", type=_labelled,
                             help="the train images that keep their masks: a fraction (1/8) or a count (25); "
                                  "default: the config's semi.labelled")
        if name == "incremental":
            sub.add_argument("--registry", required=True, metavar="URI", help="the model registry's store")
            sub.add_argument("--inbox", required=True, metavar="URI", help="the store new batches arrive in")
        sub.set_defaults(func=_run_command)
    table = subparsers.add_parser("ablation-table", help="an ablation run's table so far: a run still going, or "
                                                         "stopped, shows its finished methods and what remains")
    table.add_argument("--out", required=True, help="the --out folder of `wsseg run ablation`")
    table.add_argument("--store", help="its artifact store URI (default: the --out folder)")
    table.add_argument("--run-name", default="ablation", help="its run name (default: ablation)")
    table.add_argument("--methods", type=_methods, help="methods and their order (default: every one the run began)")
    table.set_defaults(func=_table_command)


def _methods(text: str) -> list[str]:
    from wsseg.wsss.methods import parse_methods

    return _as_argument_error(parse_methods, text)


def _seeds(text: str) -> list[int]:
    from wsseg.wsss.methods import parse_seeds

    return _as_argument_error(parse_seeds, text)


def _as_argument_error(parse, text: str):
    """`parse(text)`, its ConfigError an argparse usage error (the option named, exit status 2), not a traceback."""
    try:
        return parse(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _labelled(text: str):
    from wsseg.semi.labelled import parse_labelled

    return parse_labelled(text)


def _table_command(args) -> int:
    from wsseg.errors import StoreError
    from wsseg.evaluation.report import render_ablation_table
    from wsseg.store import open_store
    from wsseg.wsss.ablation import started_methods, write_ablation_table

    run_uri = open_store(args.store or _default_store(args.out)).child(args.run_name).uri
    methods = args.methods or started_methods(run_uri)
    if not methods:
        raise StoreError(f"{run_uri}: no ablation run has begun a method here; check --out, --store and --run-name")
    print(render_ablation_table(write_ablation_table(run_uri, methods)))
    return 0


def _run_command(args) -> int:
    from wsseg.config import load_config
    from wsseg.evaluation.report import render_ablation_table, render_summary_table
    from wsseg.semi.labelled import branch_rows
    from wsseg.wsss.methods import over_seeds

    config = load_config(args.config, args.preset)
    if args.shards is not None:
        config["shards"] = args.shards
    if args.pipeline == "ablation":
        methods = over_seeds(args.methods, args.seeds) if args.seeds else args.methods
        table = run_ablation(args.data, args.out, config, methods, args.store, args.run_name)
        print(render_ablation_table(table))
        return 0
    if args.pipeline == "semi":
        if args.labelled is not None:
            config["semi"]["labelled"] = args.labelled
        headlines = run_semi(args.data, args.out, config, args.store, args.run_name)
        print(render_summary_table(branch_rows(headlines), upper_bound=headlines["all_labels"]))
        return 0
    if args.pipeline == "incremental":
        marker = run_incremental(args.data, args.out, config, args.registry, args.inbox, args.store, args.run_name)
        print(json.dumps(marker or {"batch": None, "outcome": f"no new batch in {args.inbox}"}))
        return 0
    metrics = run_pipeline(args.pipeline, args.data, args.out, config, args.store, args.run_name)
    print(render_summary_table([(args.pipeline, metrics["headline"])]))
    return 0


def run_pipeline(name: str, data: str, out: str | Path, config: dict, store_uri: str | None = None,
                 run_name: str | None = None) -> dict:
    """Run pipeline `name` (wsss or supervised) under kfp.local and return the metrics its evaluate step stored."""
    from pipelines.supervised import build_supervised
    from pipelines.wsss import build_wsss
    from wsseg.store import open_store

    build = {"wsss": build_wsss, "supervised": build_supervised}[name]
    store_uri, run_name = _run_locally(build(parallelism=1), data, out, config, store_uri, run_name or name)
    evaluation = open_store(store_uri).child(run_name).child("evaluate")
    log.info("%s finished; report: %s", name, evaluation.uri)
    return json.loads(evaluation.get_bytes("metrics.json"))


def run_ablation(data: str, out: str | Path, config: dict, methods: list[str], store_uri: str | None = None,
                 run_name: str | None = None) -> dict:
    """The ablation pipeline under kfp.local, one method after another; returns its table's figures."""
    from pipelines.ablation import build_ablation
    from wsseg.config import dump_config
    from wsseg.runtime.run_config import refuse_other_settings
    from wsseg.store import open_store
    from wsseg.wsss.ablation import TABLE
    from wsseg.wsss.methods import method_config

    store_uri, run_name = store_uri or _default_store(out), run_name or "ablation"
    for method in methods:
        method_text = dump_config(method_config(config, method))
        refuse_other_settings(open_store(store_uri).child(run_name).child(method), method_text)
    _run_locally(build_ablation(parallelism=1), data, out, config, store_uri, run_name, methods=methods)
    table = open_store(store_uri).child(run_name).child(TABLE)
    log.info("ablation finished; table: %s", table.uri)
    return json.loads(table.get_bytes("ablation.json"))


def run_semi(data: str, out: str | Path, config: dict, store_uri: str | None = None,
             run_name: str | None = None) -> dict:
    """The semi pipeline under kfp.local; returns each branch's (baseline, continued, classmix, all_labels)
    evaluation headline."""
    from pipelines.semi import build_semi
    from wsseg.semi.labelled import BRANCH_MODES
    from wsseg.store import open_store

    _check_semi(data, config)
    store_uri, run_name = _run_locally(build_semi(parallelism=1), data, out, config, store_uri, run_name or "semi")
    run = open_store(store_uri).child(run_name)
    return {branch: json.loads(run.child(branch).child("evaluate").get_bytes("metrics.json"))["headline"]
            for branch in BRANCH_MODES}


def run_incremental(data: str, out: str | Path, config: dict, registry: str, inbox: str,
                    store_uri: str | None = None, run_name: str | None = None) -> dict | None:
    """The incremental pipeline under kfp.local; returns the processed batch's marker (its version and the gate's
    decision), or None when the inbox had no new batch. Each batch is its own run (`incremental-<batch>`, as each
    scheduled run on a cluster is), so that a later batch may run under other settings."""
    from pipelines.incremental import incremental
    from wsseg.incremental.inbox import Inbox
    from wsseg.store import open_store

    batch = Inbox(open_store(inbox)).oldest_pending()
    _run_locally(incremental, data, out, config, store_uri, run_name or f"incremental-{batch}", registry=registry,
                 inbox=inbox)
    return Inbox(open_store(inbox)).processed(batch) if batch else None


def _check_semi(data: str, config: dict) -> None:
    """Refuse a bad `semi` section before any task starts (on a local dataset, the subset is drawn here too)."""
    from wsseg.classes import ClassList
    from wsseg.data import load_samples
    from wsseg.semi.labelled import check_semi_settings, split_train

    check_semi_settings(config["semi"], "classmix")
    if not data.startswith("s3://"):
        split_train(load_samples(data, "train", ClassList(config["classes"])), config["semi"], config["seed"])


def _run_locally(pipeline, data: str, out: str | Path, config: dict, store_uri: str | None, run_name: str,
                 **arguments) -> tuple[str, str]:
    import kfp.local

    from wsseg.config import dump_config
    from wsseg.runtime.run_config import refuse_other_settings
    from wsseg.store import open_store

    # kfp.local relays each task's output line by line, so every redraw of a progress bar becomes a line.
    os.environ.setdefault("TQDM_MININTERVAL", "10")
    out = Path(out).resolve()
    store_uri = store_uri or _default_store(out)
    # Refused here as well as in the run's first task, so the user reads why without a failed task's traceback.
    refuse_other_settings(open_store(store_uri).child(run_name), dump_config(config))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp-local"))
    data = data if data.startswith("s3://") else str(Path(data).resolve())
    pipeline(data=data, store_uri=store_uri, config_yaml=dump_config(config), run_name=run_name, **arguments)
    return store_uri, run_name


def _default_store(out: str | Path) -> str:
    return str(Path(out).resolve() / "store")
