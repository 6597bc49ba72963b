"""Semi-supervised data (`semi.labelled`, `semi.labels`): which train images keep their masks, where the others' come
from, the semi pipeline's branch configs and `wsseg run semi`'s options; on id lists and the tiny synthetic VOC set."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsseg.config import default_config, dump_config
from wsseg.data import load_samples
from wsseg.errors import ConfigError
from wsseg.semi.labelled import DRAWS, branch_config, labelled_ids, open_branch_run, parse_labelled, split_train
from wsseg.store import open_store

IDS = [f"img_{index:02d}" for index in range(16)]
# Image labels: class 1 in most images, class 2 in two, class 3 in one with class 1, one image with no label.
LABELS = {image_id: (1,) for image_id in IDS} | {"img_04": (2,), "img_09": (2,), "img_13": (1, 3), "img_15": ()}


@pytest.mark.parametrize(("labelled", "count"), [("1/8", 2), ("1/3", 5), ("1/1", 16), ("1", 1), ("0.25", 4),
                                                 (5, 5), ("5", 5), (16, 16), ("1/100", 1)])
def test_a_fraction_or_count_labels_that_many_images(labelled, count):
    for draw in DRAWS:
        chosen = labelled_ids(labelled, LABELS, seed=0, draw=draw)
        assert len(chosen) == len(set(chosen)) == count and set(chosen) <= set(IDS)


@pytest.mark.parametrize("draw", DRAWS)
def test_the_subset_is_drawn_by_the_seed_whatever_the_order_of_the_split(draw):
    first = labelled_ids("1/4", LABELS, seed=0, draw=draw)
    assert labelled_ids("1/4", dict(reversed(LABELS.items())), seed=0, draw=draw) == first
    assert any(labelled_ids("1/4", LABELS, seed=seed, draw=draw) != first for seed in range(1, 4))
    # A larger subset keeps the smaller one's images: 1/8 and 1/4 runs are nested.
    for smaller, larger in (("1/8", "1/4"), (3, 12), (12, 16)):
        assert set(labelled_ids(smaller, LABELS, seed=0, draw=draw)) <= set(labelled_ids(larger, LABELS, 0, draw))


def test_a_balanced_draw_shows_every_class_a_random_one_misses():
    def shown(draw: str, seed: int) -> set[int]:
        return {label for image_id in labelled_ids(3, LABELS, seed, draw) for label in LABELS[image_id]}

    assert all(shown("balanced", seed) == {1, 2, 3} for seed in range(20))
    assert any(shown("random", seed) != {1, 2, 3} for seed in range(20))
    # Class 2 is shown least once class 3's only image is in, so the fourth image is its other one.
    assert set(labelled_ids(4, LABELS, seed=0)) >= {"img_04", "img_09", "img_13"}


def test_an_unlabelled_image_is_drawn_once_no_labelled_one_is_left():
    assert labelled_ids(15, LABELS, seed=0)[-1] != "img_15"
    assert labelled_ids(16, LABELS, seed=0)[-1] == "img_15"


def test_a_list_labels_exactly_those_images():
    assert labelled_ids(["img_03", "img_11"], LABELS, seed=0) == ["img_03", "img_11"]


@pytest.mark.parametrize(("labelled", "message"), [
    ("1/0", "not a fraction"), ("one eighth", "not a fraction"), ("0/8", "above 0"), ("3/2", "at most 1"),
    (0, "from 1 to 16"), (17, "train split has 16 images"), ("40", "from 1 to 16"), (True, "a fraction such as"),
    (0.5, "a fraction such as"), ([], "empty list"), (["img_03", "2007_000032"], "not in the train split"),
])
def test_bad_labelled_values_are_refused_with_the_setting_and_the_fix(labelled, message):
    with pytest.raises(ConfigError, match="semi.labelled") as error:
        labelled_ids(labelled, LABELS, seed=0)
    assert message in str(error.value)


def test_an_unknown_draw_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="semi.draw is 'stratified'; choose one of balanced, random"):
        labelled_ids("1/4", LABELS, seed=0, draw="stratified")


def test_the_command_line_reads_counts_as_numbers_and_keeps_fractions():
    assert parse_labelled("25") == 25 and parse_labelled("1/8") == "1/8"


def test_split_keeps_the_dataset_order_and_every_image_once(tiny_voc, classes):
    samples = load_samples(tiny_voc, "train", classes)
    split = split_train(samples, semi_config(labelled=4)["semi"], seed=0)
    assert len(split.labelled) == 4 and len(split.unlabelled) == len(samples) - 4
    assert sorted(split.labelled + split.unlabelled, key=samples.index) == samples
    assert split.labelled == sorted(split.labelled, key=samples.index)


def train_dataset(data_root, masks, config, classes):
    """The split and the data infos of each train dataset train-segmenter would build, as mmseg builds them."""
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    from wsseg.steps.train_segmenter import _datasets, _semi_datasets, semi_split

    register_all_modules()
    datasets = _datasets(data_root, masks, classes, config["segmenter"], strict=True)
    split = semi_split(data_root, config, classes)
    datasets.update(_semi_datasets(datasets["train"], split, masks, config))
    parts = [DATASETS.build(dict(part, pipeline=[])) for part in datasets["train"]]
    return split, [[part.get_data_info(index) for index in range(len(part))] for part in parts]


def semi_config(**semi) -> dict:
    config = default_config("cpu-tiny")
    config["semi"].update(semi)
    return config


def test_baseline_trains_on_the_ground_truth_of_the_labelled_subset_alone(tiny_voc, classes, tmp_path):
    split, parts = train_dataset(tiny_voc, None, semi_config(labelled="1/3"), classes)
    assert len(parts) == 1
    assert {Path(info["img_path"]).stem for info in parts[0]} == {s.image_id for s in split.labelled}
    assert all(Path(info["seg_map_path"]).parent == tiny_voc / "SegmentationClass" for info in parts[0])


def test_pseudo_labels_add_the_other_images_with_the_stores_masks(tiny_voc, classes, tmp_path):
    from tests.segmenter.test_segmenter import write_pseudo_masks

    pseudo = open_store(tmp_path / "propagate")
    write_pseudo_masks(pseudo, tiny_voc, classes)
    config = semi_config(labelled=4, labels="pseudo", pseudo_masks=pseudo.uri)
    split, (ground_truth, pseudo_labelled) = train_dataset(tiny_voc, None, config, classes)
    assert {Path(info["img_path"]).stem for info in ground_truth} == {s.image_id for s in split.labelled}
    assert all(Path(info["seg_map_path"]).parent == tiny_voc / "SegmentationClass" for info in ground_truth)
    assert {Path(info["img_path"]).stem for info in pseudo_labelled} == {s.image_id for s in split.unlabelled}
    # Read from the store where they are, not copied first.
    assert all(Path(info["seg_map_path"]).parent == tmp_path / "propagate" for info in pseudo_labelled)
    # The step's masks input stands for semi.pseudo_masks.
    config["semi"]["pseudo_masks"] = None
    assert len(train_dataset(tiny_voc, pseudo, config, classes)[1]) == 2


@pytest.mark.parametrize(("semi", "with_masks", "message"), [
    (dict(labelled=4, labels="pseudo"), False, "semi.pseudo_masks"),
    (dict(labelled=4), True, "semi.labels: pseudo"),
    (dict(labelled=12, labels="pseudo"), True, "all 12 train images"),
    (dict(labelled=4, labels="weak"), False, "choose one of ground_truth, pseudo"),
    (dict(labels="pseudo"), True, "semi.labelled is not set"),
    (dict(labelled=4, warm_start="false"), False, "semi.warm_start is 'false'; set true"),
    (dict(labelled=4, warm_start=1), False, "semi.warm_start is 1; set true"),
])
def test_conflicting_semi_settings_are_refused(semi, with_masks, message, tiny_voc, classes, tmp_path):
    masks = open_store(tmp_path / "masks") if with_masks else None
    with pytest.raises(ConfigError, match=message):
        train_dataset(tiny_voc, masks, semi_config(**semi), classes)


def test_branches_differ_only_in_the_segmenter_mode(tmp_path):
    config = semi_config(labelled="1/8")
    baseline, classmix = (yaml.safe_load(branch_config(dump_config(config), name)) for name in ("baseline", "classmix"))
    assert baseline["segmenter"].pop("mode") == "standard" and classmix["segmenter"].pop("mode") == "classmix"
    assert baseline == classmix and baseline["semi"]["labelled"] == "1/8"
    uri, text = open_branch_run(str(tmp_path), "classmix", dump_config(config))
    assert open_store(uri).get_bytes("config.yaml").decode() == text and uri.endswith("classmix")
    with pytest.raises(ConfigError, match="baseline, continued, classmix, all_labels"):
        branch_config(dump_config(config), "mixup")


def test_the_upper_bound_branch_trains_on_every_ground_truth_mask():
    config = semi_config(labelled="1/8", labels="pseudo", pseudo_masks="runs/wsss/store")
    upper_bound = yaml.safe_load(branch_config(dump_config(config), "all_labels"))
    assert upper_bound["segmenter"]["mode"] == "standard"
    assert upper_bound["semi"]["labelled"] is None and upper_bound["semi"]["labels"] == "ground_truth"


def test_run_semi_takes_the_labelled_subset_from_the_command_line():
    from wsseg.cli import build_parser

    def labelled(text: str):
        args = build_parser().parse_args(["run", "semi", "--data", "voc", "--out", "runs", "--labelled", text])
        assert args.pipeline == "semi"
        return args.labelled

    assert labelled("1/8") == "1/8" and labelled("25") == 25


@pytest.mark.slow
def test_semi_pipeline_trains_and_scores_each_branch_on_the_same_subset(tiny_voc, tmp_path):
    import json

    from wsseg.evaluation.report import render_summary_table
    from wsseg.runtime.runner import run_semi
    from wsseg.semi.labelled import branch_rows

    config = semi_config(labelled="1/3")
    config["segmenter"]["iterations"] = 2
    headlines = run_semi(str(tiny_voc), tmp_path, config)
    assert list(headlines) == ["baseline", "continued", "classmix", "all_labels"]
    assert all(0 <= headline["segmenter_miou"] <= 100 for headline in headlines.values())
    run = open_store(tmp_path / "store").child("semi")
    trained = {branch: json.loads(run.child(branch).child("train-segmenter").get_bytes("metrics.json"))
               for branch in headlines}
    assert trained["baseline"]["labelled_images"] == trained["classmix"]["labelled_images"] == 4
    segmentors = {branch: run.child(branch).child("train-segmenter").get_bytes("mmseg_config.py").decode()
                  for branch in headlines}
    assert "ClassMixSegmentor" in segmentors["classmix"] and "ClassMixSegmentor" not in segmentors["baseline"]
    # semi.warm_start (the default): ClassMix started from the baseline's segmenter, the baseline from scratch.
    assert trained["classmix"]["initialised_from"] == run.child("baseline").child("train-segmenter").uri
    assert "initialised_from" not in trained["baseline"]
    # The continued branch: the baseline's segmenter trained as long again on the labelled images alone (the
    # metrics count the images outside the subset whatever the mode, so the loader tells they were never read).
    assert trained["continued"]["initialised_from"] == run.child("baseline").child("train-segmenter").uri
    assert trained["continued"]["labelled_images"] == 4
    assert trained["continued"]["iterations"] == trained["classmix"]["iterations"] == 2
    assert "LabelledUnlabelledSampler" in segmentors["classmix"]
    assert not any(name in segmentors["continued"] for name in ("ClassMixSegmentor", "LabelledUnlabelledSampler"))
    # The upper bound: the baseline's segmenter trained as long again on every train image's mask.
    assert trained["all_labels"]["initialised_from"] == run.child("baseline").child("train-segmenter").uri
    assert "labelled_images" not in trained["all_labels"] and trained["all_labels"]["iterations"] == 2
    table = render_summary_table(branch_rows(headlines), upper_bound=headlines["all_labels"])
    assert "| continued (labelled only, as many iterations as ClassMix) |" in table
    assert "| all labels (upper bound, as many iterations as ClassMix) |" in table
