"""One subcommand per pipeline step, each runnable alone (as IRN's step/ files are).

Every step reads the dataset at --data, its inputs from artifact stores, and writes its output to the
store at --out. The step module is imported only when its command runs.
"""
from __future__ import annotations

import importlib
import json

# command -> (module, function, input stores the function takes, by these names)
STEPS = {
    "train-classifier": ("wsseg.steps.train_classifier", "train_classifier", ()),
    "mine-cams": ("wsseg.steps.mine_cams", "mine_cams", ("classifier",)),
    "refine": ("wsseg.steps.refine", "refine_with_crf", ("cams",)),
    "train-affinity": ("wsseg.steps.train_affinity", "train_affinity", ("classifier", "masks")),
    "propagate": ("wsseg.steps.propagate", "propagate", ("cams", "masks", "affinity")),
    "train-segmenter": ("wsseg.steps.train_segmenter", "train_segmenter", ("masks", "init_segmenter")),
    "train-irn": ("wsseg.steps.train_irn", "train_irn", ("classifier", "masks")),
    "group-instances": ("wsseg.steps.group_instances", "group_instances", ("cams", "masks", "irn")),
    "train-instance-heads": ("wsseg.steps.train_instance_heads", "train_instance_heads",
                             ("segmenter", "instance_labels")),
    "evaluate": ("wsseg.steps.evaluate", "evaluate", ("cams", "pseudo_masks", "segmenter", "instance_labels",
                                                      "instances")),
}

# The tasks of the per-image steps, split into shards (`wsseg.runtime.shards`): task -> (module, function, input
# stores it takes by these names, the step's output folder). A function takes, by name, what it needs of
# `shard` (its slice; a shard task) or `shards` (how many shards there are; a reduce before them or the merge
# after them).
SHARD_TASKS = {
    "mine-cams": ("wsseg.steps.mine_cams", "mine_cams", ("classifier",), "mine-cams"),
    "merge-mine-cams": ("wsseg.steps.mine_cams", "merge_mine_cams", (), "mine-cams"),
    "refine-levels": ("wsseg.steps.refine", "choose_refine_levels", ("cams",), "refine"),
    "refine": ("wsseg.steps.refine", "refine_with_crf", ("cams",), "refine"),
    "merge-refine": ("wsseg.steps.refine", "merge_refine", (), "refine"),
    "propagate": ("wsseg.steps.propagate", "propagate", ("cams", "masks", "affinity"), "propagate"),
    "propagate-levels": ("wsseg.steps.propagate", "choose_propagate_levels", ("masks",), "propagate"),
    "propagate-refine": ("wsseg.steps.propagate", "refine_walked", ("masks",), "propagate"),
    "merge-propagate": ("wsseg.steps.propagate", "merge_propagate", ("masks",), "propagate"),
    "evaluate": ("wsseg.steps.evaluate", "evaluate", ("cams", "pseudo_masks", "segmenter"), "evaluate"),
    "merge-evaluate": ("wsseg.steps.evaluate", "merge_evaluation", ("pseudo_masks",), "evaluate"),
    "evaluate-instances": ("wsseg.steps.evaluate", "add_instance_figures", ("cams", "pseudo_masks", "instance_labels",
                                                                          "instances"), "evaluate"),
    "predict": ("wsseg.steps.predict", "predict_images", (), "predict"),
    "merge-predict": ("wsseg.steps.predict", "merge_predictions", (), "predict"),
}
# The task that ends each sharded step: it writes the step's summary and `step.json`.
MERGE_TASKS = ("merge-mine-cams", "merge-refine", "merge-propagate", "merge-evaluate", "merge-predict")

# Inputs a step cannot run without; the others are optional (see OPTIONAL_INPUTS).
REQUIRED_INPUTS = {"mine-cams": ("classifier",), "refine": ("cams",), "train-affinity": ("classifier", "masks"),
                   "propagate": ("cams", "masks"), "train-irn": ("classifier", "masks"),
                   "group-instances": ("cams", "masks", "irn"),
                   "train-instance-heads": ("segmenter", "instance_labels")}

OPTIONAL_INPUTS = {
    "masks": "pseudo masks to train on; without it the ground-truth masks are used (the supervised upper bound)",
    "affinity": "store holding the trained AffinityNet (needed when affinity.enabled)",
    "cams": "store holding the mined CAMs",
    "pseudo_masks": "store holding the pseudo masks",
    "segmenter": "store holding the trained segmenter",
    "irn": "store holding the trained IRNet (train-irn's output; needed when instances.enabled)",
    "instance_labels": "store holding the instance pseudo labels (group-instances' output)",
    "instances": "store holding the instance model (train-instance-heads' output)",
    "init_segmenter": "a train-segmenter output to start training from (its checkpoint.pth), unless semi.warm_start "
                      "is false",
}


def register(subparsers, timed: bool = True, commands: tuple[str, ...] = tuple(STEPS)) -> None:
    """One subcommand per step of `commands`. `timed`: the step keeps its time in its output (`step.json`) as a
    pipeline step does; off where something else times the step (the pods of a distributed training job)."""
    for command in commands:
        module, function, inputs = STEPS[command]
        parser = subparsers.add_parser(command, help=f"run the {command} step alone")
        parser.add_argument("--data", required=True,
                            help="dataset root: a VOC folder or a manifest file, local or in a store (s3://...)")
        for name in inputs:
            required = name in REQUIRED_INPUTS.get(command, ())
            parser.add_argument(f"--{name.replace('_', '-')}", required=required, metavar="URI",
                                help=OPTIONAL_INPUTS.get(name, f"store of the {name} step"))
        parser.add_argument("--out", required=True, metavar="URI", help="store to write this step's output to")
        parser.add_argument("--config", help="YAML config, a path or a store URI (merged over the preset)")
        parser.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the config's, else cpu)")
        parser.add_argument("--strict", action="store_true", help="fail on the first bad input instead of skipping it")
        parser.set_defaults(func=_runner(command, module, function, inputs, timed))


def _runner(command: str, module: str, function: str, inputs: tuple[str, ...], timed: bool):
    def run(args) -> int:
        from wsseg.classes import ClassList
        from wsseg.config import load_config
        from wsseg.runtime.step_clock import StepClock
        from wsseg.runtime.torchrun import world_position
        from wsseg.store import open_store

        config = load_config(args.config, args.preset)
        stores = {name: open_store(uri) if (uri := getattr(args, name)) else None for name in inputs}
        step = getattr(importlib.import_module(module), function)
        out = open_store(args.out)

        def run_step() -> dict:
            return step(args.data, **stores, out=out, config=config,
                        classes=ClassList(config["classes"]), strict=args.strict or config["strict"])

        # Under torchrun rank 0 alone keeps the time, as it alone writes the checkpoint.
        if not timed or world_position()[0] != 0:
            summary = run_step()
        else:
            # Timed as in a pipeline, so that a step run alone into a pipeline run's store counts in its minutes.
            with StepClock(out, command) as clock:
                summary = run_step()
                clock.record(summary)
        print(json.dumps(summary))
        return 0

    return run
