"""Semi-supervised segmentation's data (docs/METHODS.md §3.5): which train images keep their pixel labels.

`semi.labelled` picks the labelled subset of the train split: a fraction ("1/8", as the semi-supervised papers
split VOC), a count (25) or a list of image ids. Null (the default) labels every train image, as before. A fraction
or a count is drawn from a seeded shuffle of the split (`seed`), so every step and every branch of a run picks the
same images, in the way `semi.draw` names. `balanced` (the default) takes, image after image, the first image of the
shuffle that shows a class the subset has shown least so far, reading the split's image labels, never its masks:
the papers draw at random from VOC's 10582 images, where 1/8 shows every class in dozens of masks, but at tens of
images a random draw leaves classes with one mask or none (semi400 at 1/8: sofa none, person two), which no
training can learn and which ClassMix's teacher then erases (ClassMix at 1/8: person, pottedplant and sofa at 0 IoU).
`random` takes the shuffle's first images, as the papers do. Either way a larger subset holds a smaller one.
The other train images are unlabelled: their masks are never read, and `segmenter.mode: classmix` learns from
their images alone.

`semi.labels: pseudo` labels those other images too, with a WSSS run's pseudo masks (the train-segmenter step's
`masks` input, else the store `semi.pseudo_masks` names): image labels and a few ground-truth masks combine.
The subset keeps its ground truth either way.

The `semi` pipeline trains the same segmenter in four branches (`branch_config`), each in its own prefix of the
run's store: a baseline on the labelled set alone, ClassMix, `continued`, the labelled set alone again, and
`all_labels`, every train image's mask: the upper bound, trained from the same start for as long as ClassMix.
`semi.warm_start` (true by default) starts ClassMix from the baseline's trained segmenter (train-segmenter's
`init_segmenter` input) rather than the preset's initial weights: ClassMix's paper starts from ImageNet/COCO weights
whose labels are decent from the first step, while from random weights the mean teacher's early labels are noise
and confirmation bias erases the classes it rarely predicts (on the CPU preset at 1/8, ClassMix from scratch ended
below the baseline). ClassMix then has trained twice the baseline's iterations, so the continued branch starts from
the baseline's segmenter too and trains as long: the labelled-only model ClassMix is to be compared with (at 1/8
on the cpu preset, 4000 more labelled-only iterations took the baseline from 75.8 to 80.3 mIoU). False trains
ClassMix and the continued branch from the initial weights; the continued branch is then a second baseline (same
data, same seed).
"""
from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass
from fractions import Fraction

from wsseg.config import dump_config, load_config_text
from wsseg.data import Sample
from wsseg.errors import ConfigError
from wsseg.runtime.run_config import keep_run_config
from wsseg.store import open_store

LABEL_SOURCES = ("ground_truth", "pseudo")
DRAWS = ("balanced", "random")
# The semi pipeline's branches and the segmenter mode each trains with; the baseline first, since the others start
# from its segmenter (semi.warm_start), and the continued branch before ClassMix, the row it is compared with.
BRANCH_MODES = {"baseline": "standard", "continued": "standard", "classmix": "classmix", "all_labels": "standard"}
# What each branch's row in the semi run's table is: its name alone would not say why the continued one is there.
BRANCH_ROWS = {"baseline": "baseline (labelled only)",
               "continued": "continued (labelled only, as many iterations as ClassMix)",
               "classmix": "classmix",
               "all_labels": "all labels (upper bound, as many iterations as ClassMix)"}


def default_config(preset: str) -> dict:
    # warm_start: ClassMix starts from the baseline branch's trained segmenter. From random weights its teacher's
    # first labels are noise, and confirmation bias erases the classes it rarely predicts (CPU preset at 1000
    # iterations, 1/8: 41.7 mIoU against the baseline's 49.6); the paper starts from ImageNet/COCO weights, which
    # label well from the start.
    return dict(labelled=None, draw="balanced", labels="ground_truth", pseudo_masks=None, warm_start=True)


@dataclass(frozen=True)
class SemiSplit:
    """The train samples split by `semi.labelled`: ground-truth labelled, and the rest."""

    labelled: list[Sample]
    unlabelled: list[Sample]


def split_train(samples: list[Sample], semi: dict, seed: int) -> SemiSplit:
    """`samples` (the train split, in its order) split into the labelled subset `semi.labelled` names (drawn the
    `semi.draw` way) and the rest."""
    image_labels = {sample.image_id: sample.labels for sample in samples}
    chosen = set(labelled_ids(semi["labelled"], image_labels, seed, semi["draw"]))
    return SemiSplit([sample for sample in samples if sample.image_id in chosen],
                     [sample for sample in samples if sample.image_id not in chosen])


def labelled_ids(labelled, image_labels: dict[str, tuple[int, ...]], seed: int, draw: str = "balanced") -> list[str]:
    """The image ids `semi.labelled` names among `image_labels` (each train image's id and its image labels): a
    list of ids, or a fraction or count of them drawn from a shuffle seeded with `seed`, the `draw` way."""
    if draw not in DRAWS:
        raise ConfigError(f"semi.draw is {draw!r}; choose one of {', '.join(DRAWS)}")
    if isinstance(labelled, (list, tuple)):
        return _listed_ids(labelled, list(image_labels))
    shuffled = sorted(image_labels)
    random.Random(seed).shuffle(shuffled)
    count = labelled_count(labelled, len(shuffled))
    if draw == "random":
        return shuffled[:count]
    return _balanced_draw(shuffled, image_labels, count)


def _balanced_draw(shuffled: list[str], image_labels: dict[str, tuple[int, ...]], count: int) -> list[str]:
    """`count` images of `shuffled`, each the first left that shows one of the classes shown least so far among
    those still on offer; images without labels come last, in the shuffle's order. The picks do not depend on
    `count`, so a larger subset holds a smaller one. Each class keeps its images' positions in a queue, so a pick
    looks at one queue head per class, not at every image left (COCO's 118k images, 1/8 of them)."""
    queues: dict[int, deque[int]] = {}
    for position, image_id in enumerate(shuffled):
        for label in image_labels[image_id]:
            queues.setdefault(label, deque()).append(position)
    taken, shown, chosen = set(), Counter(), []
    while len(chosen) < count:
        for queue in queues.values():
            while queue and queue[0] in taken:
                queue.popleft()
        on_offer = [label for label, queue in queues.items() if queue]
        if not on_offer:
            unlabelled = [image_id for position, image_id in enumerate(shuffled) if position not in taken]
            return chosen + unlabelled[:count - len(chosen)]
        fewest = min(shown[label] for label in on_offer)
        position = min(queues[label][0] for label in on_offer if shown[label] == fewest)
        taken.add(position)
        chosen.append(shuffled[position])
        shown.update(image_labels[shuffled[position]])
    return chosen


def labelled_count(labelled, total: int) -> int:
    """How many of `total` train images `semi.labelled` (a count, or a fraction such as "1/8") labels."""
    if isinstance(labelled, bool) or not isinstance(labelled, (int, str)):
        raise ConfigError(f"semi.labelled is {labelled!r}; give a fraction such as \"1/8\", a count such as 25, or "
                          "a list of image ids")
    if isinstance(labelled, int) or labelled.strip().isdigit():
        count = int(labelled)
        if not 1 <= count <= total:
            raise ConfigError(f"semi.labelled is {count}, but the train split has {total} images; give a count "
                              f"from 1 to {total}, or a fraction such as \"1/8\"")
        return count
    # A fraction of a split takes whole images, rounded down (VOC's 1/8 of 10582 is 1322), and at least one.
    return max(1, int(_fraction(labelled) * total))


def parse_labelled(text: str):
    """`--labelled` on the command line: a count when it is a whole number, else a fraction kept as written."""
    return int(text) if text.strip().isdigit() else text


def _fraction(text: str) -> Fraction:
    try:
        fraction = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"semi.labelled is {text!r}, not a fraction; write one such as \"1/8\" (or a count such "
                          "as 25)") from None
    if not 0 < fraction <= 1:
        raise ConfigError(f"semi.labelled is {text!r}; a fraction of the train split must be above 0 and at most "
                          "1, such as \"1/8\"")
    return fraction


def _listed_ids(labelled, image_ids: list[str]) -> list[str]:
    known = set(image_ids)
    unknown = [str(image_id) for image_id in labelled if str(image_id) not in known]
    if unknown:
        raise ConfigError(f"semi.labelled lists {len(unknown)} image id(s) not in the train split, such as "
                          f"{', '.join(unknown[:5])}; list ids from ImageSets/Segmentation/train.txt (or the "
                          "manifest's train rows), quoted where YAML would read them as numbers (\"2007_000032\")")
    if not labelled:
        raise ConfigError("semi.labelled is an empty list; list at least one train image id")
    return [str(image_id) for image_id in labelled]


def check_semi_settings(semi: dict, mode: str) -> None:
    """Refuse settings that cannot train: ClassMix or pseudo labels without a labelled subset, an unknown label
    source, a warm start that is not true or false."""
    if semi["labels"] not in LABEL_SOURCES:
        raise ConfigError(f"semi.labels is {semi['labels']!r}; choose one of {', '.join(LABEL_SOURCES)}")
    if semi["labels"] == "pseudo" and semi["labelled"] is None:
        raise ConfigError("semi.labels: pseudo labels the train images outside semi.labelled with pseudo masks, but "
                          "semi.labelled is not set; set it (such as \"1/8\"), or set semi.labels: ground_truth and "
                          "give train-segmenter the pseudo masks alone")
    if mode == "classmix" and semi["labelled"] is None:
        raise ConfigError("segmenter.mode: classmix learns from the train images outside the labelled subset, but "
                          "semi.labelled is not set; set it to a fraction such as \"1/8\", a count or a list of ids")
    if not isinstance(semi["warm_start"], bool):
        raise ConfigError(f"semi.warm_start is {semi['warm_start']!r}; set true (ClassMix and the continued branch "
                          "start from the baseline's trained segmenter) or false (from the preset's initial weights)")


def branch_rows(headlines: dict) -> list[tuple[str, dict]]:
    """The semi run's table rows: each branch's evaluation headline under a name that says what the branch is."""
    return [(BRANCH_ROWS[branch], headline) for branch, headline in headlines.items()]


def branch_config(config_yaml: str, branch: str) -> str:
    """The run's config for one branch of the semi pipeline: its segmenter mode set, and for `all_labels` every
    train image's ground-truth mask."""
    if branch not in BRANCH_MODES:
        raise ConfigError(f"semi pipeline branch {branch!r}; choose one of {', '.join(BRANCH_MODES)}")
    config = load_config_text(config_yaml)
    config["segmenter"]["mode"] = BRANCH_MODES[branch]
    if branch == "all_labels":
        config["semi"].update(labelled=None, labels="ground_truth")
    return dump_config(config)


def open_branch_run(run_store_uri: str, branch: str, config_yaml: str) -> tuple[str, str]:
    """The branch's prefix of the run store and its config, stored there."""
    config_text = branch_config(config_yaml, branch)
    store = open_store(run_store_uri).child(branch)
    keep_run_config(store, config_text)
    return store.uri, config_text
