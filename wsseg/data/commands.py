"""`wsseg data check`, `wsseg data splits` and `wsseg synth`."""
from __future__ import annotations

import argparse

from wsseg.classes import VOC_CLASSES, ClassList
from wsseg.errors import ConfigError


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", required=True)

    check = data.add_parser("check", help="read every file of a dataset and report what is wrong")
    check.add_argument("root", help="VOC 2012-layout folder or manifest (.csv, .jsonl)")
    _add_classes_option(check)
    check.add_argument("--splits", type=_comma_list, help="splits to check (default: those the dataset has)")
    check.set_defaults(func=_check)

    splits = data.add_parser("splits", help="image counts per step of an incremental task")
    splits.add_argument("root", help="VOC 2012-layout folder or manifest (.csv, .jsonl)")
    splits.add_argument("--task", default="15-5", help="<old>-<new> classes, e.g. 15-5, 15-1, 10-10")
    splits.add_argument("--mode", default="disjoint", choices=("disjoint", "overlap"))
    splits.add_argument("--split", default="train")
    splits.add_argument("--step-zero-manifest", metavar="CSV",
                        help="also write step 0's images (with their masks) as a manifest, the data train-segmenter "
                             "learns the old classes from before `wsseg models register`; with --mode overlap, the "
                             "masks go to <CSV stem>_masks/ with later classes set to background")
    _add_classes_option(splits)
    splits.set_defaults(func=_splits)

    synth = subparsers.add_parser("synth", help="write a synthetic dataset in the VOC 2012 layout")
    synth.add_argument("out", help="folder to write")
    synth.add_argument("--train", type=int, required=True, help="number of train images")
    synth.add_argument("--val", type=int, required=True, help="number of val images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--style", default="shapes", choices=("shapes", "figures", "herds"),
                       help="shapes: the look to tune on; figures and herds (classes in look-alike families): held-out "
                            "constructions to report on, never to tune on")
    synth.add_argument("--size", type=int, help="image side in pixels, shapes style only (default 128); "
                                                "figures and herds images take VOC's sizes")
    _add_classes_option(synth)
    synth.set_defaults(func=_synth)


def parse_classes(text: str) -> ClassList:
    """A class list from "a,b,c"; background is put first when not named."""
    names = _comma_list(text)
    if names[:1] != ["background"]:
        names.insert(0, "background")
    try:
        return ClassList(names)
    except ValueError as error:
        raise ConfigError(f"--classes: {error}") from None


def _check(args: argparse.Namespace) -> int:
    from wsseg.data.check import check_dataset

    report = check_dataset(args.root, args.classes, args.splits)
    print(report.summary())
    return 0 if report.ok else 1


def _splits(args: argparse.Namespace) -> int:
    from wsseg.data.dataset import load_samples
    from wsseg.data.splits import incremental_split, parse_task

    samples = load_samples(args.root, args.split, args.classes)
    plan = parse_task(args.task, len(args.classes) - 1)
    print(f"task {args.task} {args.mode}, split {args.split}: {len(samples)} images")
    for step in range(plan.num_steps):
        names = [args.classes.names[index] for index in plan.step_classes(step)]
        count = len(incremental_split(samples, args.task, step, args.mode, args.classes))
        print(f"step {step}: {count:>6} images  classes {', '.join(names)}")
    if args.step_zero_manifest:
        _write_step_zero(samples, args)
    return 0


def _write_step_zero(samples, args: argparse.Namespace) -> None:
    from pathlib import Path

    from wsseg.data.manifest import write_manifest
    from wsseg.data.splits import incremental_split, parse_task, without_later_classes

    manifest = Path(args.step_zero_manifest)
    old = parse_task(args.task, len(args.classes) - 1).old
    step_zero = incremental_split(samples, args.task, 0, args.mode, args.classes)
    if args.mode == "overlap":
        masks = manifest.with_name(f"{manifest.stem}_masks")
        step_zero, changed = without_later_classes(step_zero, old, masks)
        print(f"set {sum(changed)} pixels of {sum(map(bool, changed))} images to background where they show a class "
              f"beyond the first {old} (overlap); their masks are in {masks}")
    write_manifest(step_zero, args.classes, manifest)
    print(f"wrote step 0's {len(step_zero)} images to {manifest}; train them with `classes` set to the "
          f"first {old + 1} ({', '.join(args.classes.names[:old + 1])}) and segmenter.loss: binary_cross_entropy "
          "(WILSON reads the old model's per-class sigmoid scores)")


def _synth(args: argparse.Namespace) -> int:
    from wsseg.data.synth import SHAPES_SIZE, make_synthetic_voc

    if min(args.train, args.val) < 0 or (args.size is not None and args.size < 16):
        raise ConfigError("--train and --val must be >= 0 and --size >= 16")
    make_synthetic_voc(args.out, args.train, args.val, args.seed, args.size, args.classes, args.style)
    sizes = "of VOC's sizes" if args.style != "shapes" else f"of {args.size or SHAPES_SIZE} px"
    print(f"wrote {args.train} train and {args.val} val {args.style} images {sizes} to {args.out}")
    return 0


def _add_classes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=parse_classes, default=ClassList(VOC_CLASSES),
                        help="comma-separated foreground class names (default: the 20 VOC classes)")


def _comma_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
