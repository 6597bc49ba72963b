"""Class-incremental task splits as WILSON and MiB define them (docs/METHODS.md §2.7), on any labelled dataset.

A task "<old>-<new>" orders the foreground classes by index: step 0 learns the first `old`, each later step
the next `new`. VOC 15-5 has 2 steps, 15-1 has 6, 10-10 has 2.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data.images import relabel_mask
from wsseg.data.samples import Sample
from wsseg.errors import ConfigError

MODES = ("disjoint", "overlap")
TASK_PATTERN = re.compile(r"(\d+)-(\d+)")


@dataclass(frozen=True)
class IncrementalTask:
    old: int
    new: int
    num_foreground: int

    @property
    def num_steps(self) -> int:
        return 1 + (self.num_foreground - self.old) // self.new

    def step_classes(self, step: int) -> tuple[int, ...]:
        """The class indices a step learns."""
        if not 0 <= step < self.num_steps:
            raise ConfigError(f"step {step} is outside task {self.old}-{self.new}, "
                              f"which has steps 0..{self.num_steps - 1}")
        first = 1 if step == 0 else 1 + self.old + (step - 1) * self.new
        last = self.old if step == 0 else self.old + step * self.new
        return tuple(range(first, last + 1))

    def seen_classes(self, step: int) -> tuple[int, ...]:
        """The classes of steps 0..step: old and current."""
        return tuple(range(1, self.step_classes(step)[-1] + 1))


def parse_task(task: str, num_foreground: int) -> IncrementalTask:
    match = TASK_PATTERN.fullmatch(task.strip())
    if not match:
        raise ConfigError(f"task {task!r} is not of the form <old>-<new>, e.g. 15-5, 15-1, 10-10")
    old, new = int(match[1]), int(match[2])
    if old < 1 or new < 1 or old >= num_foreground or (num_foreground - old) % new:
        raise ConfigError(f"task {task!r} does not fit {num_foreground} classes: need old >= 1 and the "
                          f"{num_foreground - old} remaining classes in whole steps of {new}")
    return IncrementalTask(old, new, num_foreground)


def incremental_split(samples: list[Sample], task: str, step: int, mode: str = "disjoint",
                      classes: ClassList | None = None) -> list[Sample]:
    """The samples step `step` trains on, with labels cut down to that step's classes.

    Every kept image shows at least one current class. Disjoint: it shows no future class (old ones may
    appear). Overlap: future classes may appear too. Old and future classes stay in the image unlabelled,
    as in WILSON; masks are left as they are, so a trainer maps classes outside `seen_classes` itself.
    """
    plan = parse_task(task, len(classes or ClassList()) - 1)
    return step_samples(samples, plan.step_classes(step), plan.seen_classes(step)[-1], mode)


def step_samples(samples: list[Sample], current: tuple[int, ...], last_seen: int, mode: str) -> list[Sample]:
    """The samples of a step that learns the classes `current`, the classes up to `last_seen` seen by then, with
    labels cut down to `current` (`incremental_split`, for a step that no whole-step task describes: an inbox batch
    may add any number of classes)."""
    if mode not in MODES:
        raise ConfigError(f"unknown incremental mode {mode!r}; choose one of {', '.join(MODES)}")
    current, seen = set(current), set(range(1, last_seen + 1))
    kept = []
    for sample in samples:
        labels = set(sample.labels)
        if not labels & current or (mode == "disjoint" and not labels <= seen):
            continue
        kept.append(dataclasses.replace(sample, labels=tuple(sorted(labels & current))))
    return kept


def without_later_classes(samples: list[Sample], old: int, folder: Path) -> tuple[list[Sample], list[int]]:
    """Step 0's samples under the overlap protocol, their masks rewritten into `folder` with every pixel of a class
    beyond the first `old` set to background, the ignore value and the old classes kept; and for each sample, how
    many pixels that changed. Overlap's step 0 images may show later classes, which MiB (Cermelli et al., CVPR'20,
    sec. 4.1) labels background there: step 0 knows only the old ones. A sample without a mask stays as it is."""
    lookup = np.arange(256, dtype=np.uint8)
    lookup[old + 1:IGNORE_INDEX] = 0
    folder.mkdir(parents=True, exist_ok=True)
    relabelled, changed = [], []
    for sample in samples:
        if sample.mask_path is None:
            relabelled.append(sample)
            changed.append(0)
            continue
        target = folder / f"{sample.image_id}.png"
        changed.append(relabel_mask(sample.mask_path, target, lookup))
        relabelled.append(dataclasses.replace(sample, mask_path=target))
    return relabelled, changed
