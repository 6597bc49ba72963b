"""The `wsseg` command: each module below contributes its subcommands through `register(subparsers)`.

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
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
