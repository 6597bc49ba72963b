"""The `wsseg` command. Each module in COMMAND_MODULES adds its subcommands through `register(subparsers)`.

Command modules import their heavy dependencies (torch, mmseg, kfp) inside the handlers, so that
`wsseg --help` and light commands start fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from wsseg.errors import WssegError

COMMAND_MODULES = (
    "wsseg.data.commands",
    "wsseg.runtime.step_commands",
    "wsseg.runtime.runner",
    "wsseg.demo",
    "wsseg.runtime.compile_pipelines",
    "wsseg.kube.commands",
    "wsseg.steps.predict",
    "wsseg.serving.export",
    "wsseg.incremental.registry_commands",
    "wsseg.incremental.commands",
)


# What `wsseg --help` opens with: what the tool is for, in a user's words.
DESCRIPTION = """\
Train semantic-segmentation models from cheap labels: image tags instead of pixel masks, tags plus
a few masks, and new classes that arrive with tags alone. Each is a Kubeflow pipeline, run here
through kfp.local (`wsseg run PIPELINE`) or on a cluster (`wsseg submit`, `wsseg schedule`); every
step also runs alone (`wsseg train-classifier`, `wsseg refine`, ...)."""
# The pipeline that runs on a cluster only; `wsseg predict` is its step, here.
CLUSTER_PIPELINES = {"predict": "label new images with a trained segmenter (`wsseg submit predict`)"}
EPILOG = """\
pipelines:
{pipelines}

Start with `make demo`; README.md has a recipe per situation, docs/METHODS.md the methods,
docs/RESULTS.md every measured figure."""


def build_parser() -> argparse.ArgumentParser:
    from wsseg.runtime.runner import pipeline_lines

    parser = argparse.ArgumentParser(prog="wsseg", description=DESCRIPTION,
                                     epilog=EPILOG.format(pipelines=pipeline_lines(CLUSTER_PIPELINES)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except WssegError as error:
        print(f"wsseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
