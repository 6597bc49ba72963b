"""`wsseg models list|show|promote|rollback|register|curve`: a person's view of the model registry
(`wsseg.incremental.registry`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from wsseg.evaluation.report import figure_cell
from wsseg.incremental.forgetting_curve import STEP_ZERO_NOTE, step_figures
from wsseg.incremental.registry import ModelRegistry, default_config
from wsseg.store import open_store

DEFAULT_NAME = default_config("cpu")["name"]
TABLE_COLUMNS = ("", "version", "parent", "classes", "all mIoU", "old mIoU", "new mIoU", "gate", "created", "source")


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="the model registry: versions, the current one, promotions")
    commands = models.add_subparsers(dest="models_command", required=True)
    listing = commands.add_parser("list", help="a table of the versions; * marks the current one")
    _add_registry_arguments(listing)
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="a version's version.json (the current one by default)")
    _add_registry_arguments(show)
    show.add_argument("version", nargs="?", type=int, help="the version number (default: the current one)")
    show.set_defaults(func=_show)

    promote = commands.add_parser("promote", help="make a version current, bypassing the gate")
    _add_registry_arguments(promote)
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True, help="why, kept in the pointer's history")
    promote.set_defaults(func=_promote)

    rollback = commands.add_parser("rollback", help="make the previously current version current again")
    _add_registry_arguments(rollback)
    rollback.add_argument("--reason", required=True, help="why, kept in the pointer's history")
    rollback.set_defaults(func=_rollback)

    first = commands.add_parser("register", help="register a supervised segmenter as the first version (step 0)")
    _add_registry_arguments(first)
    first.add_argument("--segmenter", required=True, metavar="URI",
                       help="train-segmenter's output (checkpoint.pth, mmseg_config.py) trained on the old classes")
    first.add_argument("--classes", required=True, type=_class_count, metavar="N",
                       help="how many foreground classes it segments: the first N of the config's `classes` "
                            "(VOC 15-5 and 15-1: 15)")
    first.add_argument("--data", metavar="URI", help="a held-out dataset (val split, with masks) to score it on")
    first.add_argument("--trained-on", default="", metavar="URI", help="the data it was trained on, for lineage")
    first.add_argument("--config", help="YAML config, a path or a store URI (its classes, registry.gate, evaluate)")
    first.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the config's, else cpu)")
    first.set_defaults(func=_register_step_zero)

    curve = commands.add_parser("curve", help="the forgetting curve of a version's lineage: a PNG plot, and its "
                                              "old / new / all-class mIoU per step printed as a table")
    _add_registry_arguments(curve)
    curve.add_argument("--version", type=int, help="the lineage's last version (default: the newest, promoted or not)")
    curve.add_argument("--out", required=True, type=Path, metavar="PATH", help="the PNG file to write")
    curve.set_defaults(func=_curve)


def _add_registry_arguments(parser) -> None:
    parser.add_argument("--registry", required=True, metavar="URI",
                        help="the registry's store, e.g. s3://wsseg/registry (a path or store URI)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"the model's name in the registry ({DEFAULT_NAME})")


def _open(args) -> ModelRegistry:
    return ModelRegistry(open_store(args.registry), args.name)


def _list(args) -> int:
    registry = _open(args)
    current = registry.current_number()
    rows = [_row(record, record["version"] == current) for record in registry.versions()]
    print(format_table(TABLE_COLUMNS, rows) + "\n\n" + STEP_ZERO_NOTE if rows else
          f"{registry.uri} holds no versions yet")
    return 0


def _show(args) -> int:
    registry = _open(args)
    record = registry.current() if args.version is None else registry.version(args.version)
    print(json.dumps(record, indent=2))
    return 0


def _promote(args) -> int:
    _print_pointer(_open(args).promote(args.version, args.reason))
    return 0


def _rollback(args) -> int:
    _print_pointer(_open(args).rollback(args.reason))
    return 0


def _class_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of foreground classes, such as 15")
    return int(text)


def _register_step_zero(args) -> int:
    from wsseg.classes import ClassList
    from wsseg.config import load_config
    from wsseg.errors import ConfigError
    from wsseg.steps.incremental_update import register_step_zero

    config = load_config(args.config, args.preset)
    names = config["classes"]
    if args.classes >= len(names) - 1:
        raise ConfigError(f"--classes {args.classes}: the config's `classes` has {len(names) - 1} foreground "
                          "classes, and step 0 leaves some for later steps; give fewer")
    held_out = args.data or None
    record, decision = register_step_zero(ModelRegistry(open_store(args.registry), args.name),
                                          open_store(args.segmenter), ClassList(names[:1 + args.classes]), config,
                                          held_out, args.trained_on)
    print(json.dumps({"version": record["version"], "promoted": decision.promoted, "reasons": decision.reasons}))
    return 0


def _curve(args) -> int:
    from wsseg.incremental.forgetting_curve import forgetting_curve, plot_forgetting_curve, render_curve_markdown

    steps = forgetting_curve(_open(args), args.version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(plot_forgetting_curve(steps))
    print(render_curve_markdown(steps))
    print(f"\nforgetting curve written to {args.out}")
    return 0


def _print_pointer(pointer: dict) -> None:
    print(json.dumps({"current": pointer["version"], "change": pointer["history"][-1]}))


def _row(record: dict, is_current: bool) -> list[str]:
    old, new, everything = step_figures(record)
    decision = record.get("promotion")
    gate = "-" if decision is None else ("pass" if decision["promoted"] else "fail")
    parent = record["parent"]
    return ["*" if is_current else "", str(record["version"]), "-" if parent is None else str(parent),
            str(len(record["classes"])),
            *(figure_cell(figure) for figure in (everything, old, new)),
            gate, record["created"], record["source"]]



def format_table(columns, rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    lines = [columns, *rows]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
