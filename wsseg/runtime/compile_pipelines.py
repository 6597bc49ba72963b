"""`wsseg compile`: every pipeline's KFP IR YAML, the files `wsseg submit` and a KFP UI upload take."""
from __future__ import annotations

from pathlib import Path

DEFAULT_OUT = "build/pipelines"


def register(subparsers) -> None:
    parser = subparsers.add_parser("compile", help="write every pipeline's IR YAML")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the YAML files (default: {DEFAULT_OUT})")
    parser.set_defaults(func=lambda args: print("\n".join(map(str, compile_pipelines(args.out)))))


def compile_pipelines(out: str | Path = DEFAULT_OUT) -> list[Path]:
    from kfp import compiler

    from pipelines import PIPELINES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    return written
