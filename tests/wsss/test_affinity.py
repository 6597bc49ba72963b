"""AffinityNet and the random walk (PSA / IRN): affinities learned from the pseudo masks spread each CAM over its
object; without the walk the maps stay where the classifier put them."""
import copy

import numpy as np
import pytest
import torch

from tests.wsss.test_refine import crf_config, synthetic  # noqa: F401  (the fixture)
from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.config import default_config
from wsseg.errors import ConfigError
from wsseg.steps.propagate import propagate
from wsseg.steps.refine import refine_with_crf
from wsseg.steps.train_affinity import build_affinity_net, train_affinity
from wsseg.steps.train_classifier import train_classifier
from wsseg.store import open_store
from wsseg.wsss.classifiers.affinity_net import affinity_loss, pair_affinities
from wsseg.wsss.methods import method_config
from wsseg.wsss.pseudo_masks import decode_mask_png, read_cam_file
from wsseg.wsss.random_walk import pair_offsets, random_walk, shifted_pairs


def two_region_affinities(height=8, width=8, radius=2, split=4):
    """Affinities 0.95 between pixels on the same side of column `split`, 0.01 across it."""
    offsets = pair_offsets(radius)
    affinities = torch.zeros(len(offsets), height, width)
    for slot, (dy, dx) in enumerate(offsets):
        for y in range(height):
            for x in range(width):
                if 0 <= y + dy < height and 0 <= x + dx < width:
                    affinities[slot, y, x] = 0.95 if (x < split) == (x + dx < split) else 0.01
    return affinities


def test_pair_offsets_cover_each_neighbour_pair_once():
    offsets = pair_offsets(2)
    assert len(offsets) == len(set(offsets)) and (0, 0) not in offsets
    assert not {(-dy, -dx) for dy, dx in offsets} & set(offsets)
    assert len(offsets) == (sum(dy * dy + dx * dx <= 4 for dy in range(-2, 3) for dx in range(-2, 3)) - 1) // 2


def test_shifted_pairs_pair_each_pixel_with_its_neighbour_and_flag_the_border():
    grid = torch.arange(12.0).view(1, 1, 3, 4)
    first, second, valid = shifted_pairs(grid, (1, -1))
    assert second[0, 0, 0, 1] == grid[0, 0, 1, 0] and valid[0, 1] == 1
    assert valid[0, 0] == 0 and valid[2, 3] == 0
    assert torch.equal(first, grid)


def test_the_walk_spreads_a_peak_over_its_region_and_not_across_a_weak_affinity():
    seeds = torch.zeros(1, 8, 8)
    seeds[0, 3, 1] = 1.0
    walked = random_walk(seeds, two_region_affinities(), radius=2, beta=8.0, steps=64)[0]
    assert walked[:, :4].min() > 0.9, "the whole left region"
    assert walked[:, 4:].max() < 0.05, "not the right one"


def test_a_class_walked_thin_stays_below_one_that_held_to_its_region():
    seeds = torch.zeros(2, 8, 8)
    seeds[0, :, 1] = 1.0
    seeds[1, 3, 5] = 1.0
    walked = random_walk(seeds, two_region_affinities(), radius=2, beta=8.0, steps=64)
    assert walked.max() == pytest.approx(1.0)
    assert walked[1].max() < 0.5 * walked[0].max(), "one maximum for all classes, not one each"


def test_without_steps_the_maps_stay_where_they_were():
    seeds = torch.zeros(1, 8, 8)
    seeds[0, 3, 1] = 1.0
    assert torch.equal(random_walk(seeds, two_region_affinities(), radius=2, beta=8.0, steps=0), seeds)


def test_the_affinity_loss_pulls_same_label_pairs_together_and_pushes_others_apart():
    torch.manual_seed(0)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 4:] = 5
    labels[0, 0, 0] = IGNORE_INDEX
    embedding = torch.randn(1, 4, 8, 8, requires_grad=True)
    optimizer = torch.optim.Adam([embedding], lr=0.1)
    for _ in range(300):
        loss = sum(affinity_loss(embedding, labels, radius=2).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    affinities = pair_affinities(embedding.detach(), 2)[0]
    across = pair_offsets(2).index((0, 1))
    assert affinities[across, 1:, :3].mean() > 0.9 and affinities[across, :, 4:7].mean() > 0.9
    assert affinities[across, :, 3].max() < 0.2, "the pairs straddling the label edge"


@pytest.fixture(scope="module")
def affinity_run(synthetic, tmp_path_factory):  # noqa: F811
    """A tiny classifier, pseudo masks of the synthetic fixture's CAMs, and an AffinityNet trained on them."""
    root, cams = synthetic
    work = tmp_path_factory.mktemp("affinity")
    config = method_config(default_config("cpu-tiny"), "affinity")
    config["working_size"] = None
    config["crf"].update(crf_config()["crf"])
    classifier, seeds, affinity = (open_store(work / name) for name in ("classifier", "seeds", "affinity"))
    train_classifier(root, classifier, config, ClassList())
    refine_with_crf(root, cams, seeds, config, ClassList())
    summary = train_affinity(root, classifier, seeds, affinity, config, ClassList())
    return root, cams, seeds, affinity, config, summary, work


def test_train_affinity_starts_from_the_classifier_and_writes_a_resumable_model(affinity_run):
    _, _, _, affinity, config, summary, _ = affinity_run
    assert summary["images"] > 0 and summary["resumed_from_epoch"] == 0
    assert summary["backbone_tensors"] == len(build_affinity_net(config).backbone.state_dict())
    assert {"checkpoint.pth", "last.pth", "config.yaml"} <= set(affinity.list())
    model = build_affinity_net(config)
    assert model.embed(torch.zeros(1, 3, 64, 64)).shape[-2:] == (16, 16)


def test_a_classifier_whose_backbone_does_not_fit_is_named_not_trained_over(affinity_run):
    root, _, seeds, _, config, _, work = affinity_run
    other = copy.deepcopy(config)
    other["classifier"]["model"]["backbone"]["base_channels"] *= 2
    classifier = open_store(work / "classifier")
    with pytest.raises(ConfigError, match=f"{classifier.uri}.*does not fit"):
        train_affinity(root, classifier, seeds, open_store(work / "mismatch"), other, ClassList())


def test_an_ensembles_affinity_net_grows_from_its_first_member(affinity_run):
    root, _, seeds, _, config, _, work = affinity_run
    ensemble = copy.deepcopy(config)
    ensemble["classifier"]["ensemble_members"] = 2
    classifier = open_store(work / "ensemble")
    train_classifier(root, classifier, ensemble, ClassList())
    trained = train_affinity(root, classifier, seeds, open_store(work / "ensemble-affinity"), ensemble, ClassList())
    assert trained["backbone_tensors"] == len(build_affinity_net(config).backbone.state_dict())


def test_propagate_walks_the_cams_and_refines_them_into_masks(affinity_run):
    root, cams, seeds, affinity, config, _, work = affinity_run
    out = open_store(work / "propagate")
    summary = propagate(root, cams, seeds, affinity, out, config, ClassList())
    assert summary["walked"] == summary["images"] > 0 and "published_store" not in summary
    key = next(key for key in out.list() if key.endswith(".png") and "/" not in key)
    walked, labels = read_cam_file(out.child("cams").get_bytes(key.replace(".png", ".npz")))
    original, _ = read_cam_file(cams.get_bytes(key.replace(".png", ".npz")))
    assert walked.shape == original.shape and not np.allclose(walked, original, atol=0.05)
    assert set(np.unique(decode_mask_png(out.get_bytes(key)))) <= {0, IGNORE_INDEX, *labels.tolist()}


def test_without_affinity_both_steps_hand_the_seeds_on(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    config = default_config("cpu-tiny")
    seeds = open_store(tmp_path / "seeds")
    assert train_affinity(root, None, seeds, open_store(tmp_path / "a"), config, ClassList()) == {
        "affinity": "disabled"}
    summary = propagate(root, cams, seeds, None, open_store(tmp_path / "p"), config, ClassList())
    assert summary["published_store"] == seeds.uri and not any(open_store(tmp_path / "p").list())


def test_seam_walks_its_cams_over_an_affinity_net_grown_from_its_own_backbone(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    config = method_config(default_config("cpu-tiny"), "seam")
    config["working_size"] = None
    config["crf"].update(crf_config()["crf"])
    classifier, seeds, affinity = (open_store(tmp_path / name) for name in ("classifier", "seeds", "affinity"))
    train_classifier(root, classifier, config, ClassList())
    refine_with_crf(root, cams, seeds, config, ClassList())
    trained = train_affinity(root, classifier, seeds, affinity, config, ClassList())
    assert trained["images"] > 0
    assert trained["backbone_tensors"] == len(build_affinity_net(config).backbone.state_dict())
    summary = propagate(root, cams, seeds, affinity, open_store(tmp_path / "propagate"), config, ClassList())
    assert summary["walked"] == summary["images"] > 0


def test_a_walk_reaches_the_same_share_of_any_grid():
    from wsseg.wsss.random_walk import walk_steps

    small, large = walk_steps((32, 43), 5, 0.6), walk_steps((96, 128), 5, 0.6)
    assert 5 * small ** 0.5 == pytest.approx(0.6 * 32, rel=0.05)
    assert 5 * large ** 0.5 == pytest.approx(0.6 * 96, rel=0.05)
