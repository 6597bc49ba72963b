"""The CAM-expanding methods of the classifier (docs/METHODS.md §1): each test fails when the method's defining step
is taken out (no hiding, no mixing, no erasing, no dilation, no equivariance loss, no pixel correlation)."""
import io

import numpy as np
import pytest
import torch

from tests.wsss.test_classifier import CLASSES, tiny_classifier, tiny_config
from wsseg.config import default_config, load_config_text
from wsseg.errors import ConfigError
from wsseg.steps.mine_cams import load_localizers, mine_cams
from wsseg.steps.train_classifier import train_classifier
from wsseg.store import open_store
from wsseg.wsss.batch_augment import BatchAugment, hide_patches, mixup
from wsseg.wsss.cams import CAM, NO_TARGET
from wsseg.wsss.classifier import build_classifier
from wsseg.wsss.classifiers.seam_classifier import equivariance_loss
from wsseg.wsss.methods import METHODS, method_config, over_seeds, parse_methods, parse_seeds
from wsseg.wsss.training import erased_pixels, load_from_store

FILL = torch.tensor([123.675, 116.28, 103.53])


def model_of(method: str) -> torch.nn.Module:
    config = method_config(default_config("cpu-tiny"), method)
    torch.manual_seed(0)
    return build_classifier(config["classifier"]["model"], CLASSES)


# ---- Hide-and-Seek -----------------------------------------------------------------------------------------

def test_hide_and_seek_hides_whole_grid_cells_with_the_mean_pixel_about_half_the_time():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 64, 64) * 255
    hidden = hide_patches(images, patch=16, probability=0.5, fill=FILL)
    cells = (hidden == FILL.view(1, 3, 1, 1)).all(dim=1).unfold(1, 16, 16).unfold(2, 16, 16)  # (8, 4, 4, 16, 16)
    whole = cells.all(dim=-1).all(dim=-1)
    assert (cells.any(dim=-1).any(dim=-1) == whole).all(), "hiding follows the grid"
    assert 0.3 < whole.float().mean() < 0.7
    torch.testing.assert_close(hidden[~(hidden == FILL.view(1, 3, 1, 1)).all(dim=1, keepdim=True).expand_as(hidden)],
                               images[~(hidden == FILL.view(1, 3, 1, 1)).all(dim=1, keepdim=True).expand_as(hidden)])


def test_hide_and_seek_is_a_training_switch_that_leaves_batches_alone_when_off():
    torch.manual_seed(1)
    images, targets = torch.rand(4, 3, 64, 64) * 255, torch.eye(4, 20)
    settings = default_config("cpu-tiny")["classifier"]
    untouched, _ = BatchAugment(settings, FILL)(images, targets)
    assert torch.equal(untouched, images)
    hiding = method_config(default_config("cpu-tiny"), "has")["classifier"]
    hiding["hide_and_seek"]["patch_fractions"] = [0.25]
    hidden, same_targets = BatchAugment(hiding, FILL)(images, targets)
    assert (hidden == FILL.view(1, 3, 1, 1)).all(dim=1).any() and torch.equal(same_targets, targets)


# ---- Mixup -------------------------------------------------------------------------------------------------

def test_mixup_mixes_images_and_labels_with_one_lambda():
    torch.manual_seed(2)
    images, targets = torch.rand(6, 3, 8, 8), torch.eye(6, 20)  # each image's label names the image
    mixed, soft = mixup(images, targets, alpha=1.0)
    lambdas = set()
    for row in range(6):
        partner = next((int(k) for k in soft[row].nonzero().flatten() if k != row), row)
        lam = float(soft[row, row]) if partner != row else 1.0
        lambdas.add(round(lam, 5)) if partner != row else None
        torch.testing.assert_close(mixed[row], lam * images[row] + (1 - lam) * images[partner])
    assert len(lambdas) == 1 and not torch.equal(mixed, images)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(6))


def test_the_mixup_method_mixes_training_batches():
    torch.manual_seed(3)
    images, targets = torch.rand(6, 3, 8, 8), torch.eye(6, 20)
    mixed, soft = BatchAugment(method_config(default_config("cpu-tiny"), "mixup")["classifier"], FILL)(images,
                                                                                                        targets)
    assert (soft.count_nonzero(dim=1) == 2).any(), "some images take two labels"
    assert not torch.equal(mixed, images)


# ---- ACoL --------------------------------------------------------------------------------------------------

def test_acol_head_b_sees_the_features_erased_where_head_a_fires_above_delta():
    model = model_of("acol").eval()
    images, targets = torch.rand(2, 3, 64, 64) * 255, torch.zeros(2, 20)
    seen = {}
    model.head_b.register_forward_pre_hook(lambda module, inputs: seen.update(b=inputs[0]))
    with torch.no_grad():
        features = model.features(images)
        all_maps = model.head_a(features).relu()
        label = int((all_maps > 0).float().mean(dim=(0, 2, 3)).argmax())  # an untrained head: a class it fires on
        targets[:, label] = 1
        maps = all_maps[:, label]
        normalised = maps / maps.amax(dim=(1, 2), keepdim=True)
    model.erase_threshold = float(normalised.median())  # an untrained head: δ where half the map lies above it
    model.loss(images, targets)
    discriminative = normalised > model.erase_threshold
    assert discriminative.any() and (~discriminative).any()
    assert (seen["b"].abs().sum(dim=1)[discriminative] == 0).all(), "B must not see A's discriminative region"
    torch.testing.assert_close(seen["b"].permute(0, 2, 3, 1)[~discriminative],
                               features.permute(0, 2, 3, 1)[~discriminative])


def test_acol_trains_both_heads_and_maps_the_maximum_of_the_two():
    model = model_of("acol")
    images, targets = torch.rand(2, 3, 64, 64) * 255, torch.eye(2, 20)
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_cls_a", "loss_cls_b"}
    sum(losses.values()).backward()
    assert model.head_b.weight.grad.abs().sum() > 0 and model.head_a.weight.grad.abs().sum() > 0
    with torch.no_grad():
        fused = model.eval().localization_maps(images)
    assert fused.shape == (2, 20, 4, 4) and fused.max() <= 1 + 1e-6


# ---- MDC ---------------------------------------------------------------------------------------------------

def test_mdc_map_reaches_features_as_far_as_its_largest_dilation():
    model = model_of("mdc").eval()
    largest = max(model.dilations)
    features = torch.zeros(1, model.branches[0].in_channels, 9, 9)
    with torch.no_grad():
        quiet = model.class_activation(features)
        features[0, :, 4, 4] = 1.0
        touched = model.class_activation(features)
    changed = (touched - quiet).abs().sum(dim=1)[0] > 1e-6
    assert changed[4, 4 + largest] and changed[4 + largest, 4], "a dilated branch carries evidence that far"
    assert not changed[0, 0], "and no further: (4, 4) away is off every branch's grid"


def test_mdc_trains_one_classifier_per_dilation():
    model = model_of("mdc")
    losses = model.loss(torch.rand(2, 3, 64, 64) * 255, torch.eye(2, 20))
    assert set(losses) == {f"loss_cls_d{rate}" for rate in model.dilations} and len(losses) > 1


def test_mdc_without_the_plain_branch_is_a_config_error():
    with pytest.raises(ConfigError, match="dilations"):
        tiny_classifier(type="MDCClassifier", dilations=[2, 3])


# ---- SEAM --------------------------------------------------------------------------------------------------

def test_equivariance_loss_is_zero_only_for_equivariant_maps():
    maps = torch.rand(2, 4, 8, 8)
    assert equivariance_loss(maps, maps.clone()) == 0
    assert equivariance_loss(maps, maps.flip(-1)) > 0


def test_seam_loss_holds_the_equivariance_term_and_it_trains_the_backbone():
    model = model_of("seam")
    images, targets = torch.rand(2, 3, 96, 96) * 255, torch.eye(2, 20)
    losses = model.loss(images, targets)
    assert {"loss_cls", "loss_er", "loss_ecr"} <= set(losses) and losses["loss_er"] > 0
    losses["loss_er"].backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_seam_pixel_correlation_spreads_a_cam_over_pixels_of_similar_features_only():
    model = model_of("seam").eval()
    images = torch.zeros(1, 3, 64, 64)
    images[..., :, 32:] = 255  # right half white: the affinity embedding sees two regions
    with torch.no_grad():
        stages = model.backbone((images - model.mean) / model.std)
        height, width = stages[-1].shape[-2:]
        maps = torch.zeros(1, 2, height, width)
        maps[0, 0] = 1.0
        maps[0, 1, height // 2, -1] = 1.0       # one activated pixel, in the white half
        maps[0, 0, height // 2, -1] = 0.0
        refined = model.pixel_correlation(maps, images, stages)
    assert refined[0, 1, :, width // 2:].sum() > 0 and refined[0, 1].sum() > maps[0, 1].sum() * 0.99
    assert refined[0, 1, height // 2, -1] < 1, "the peak is shared with its neighbours"


# ---- AE-PSL ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def erasing_classifier(tiny_voc, tmp_path_factory):
    config = method_config(tiny_config(epochs=2, head_lr_multiplier=1.0), "aepsl")
    config["classifier"]["adversarial_erasing"].update(steps=2, stop_confidence=0.0)
    store = open_store(tmp_path_factory.mktemp("aepsl"))
    return store, train_classifier(tiny_voc, store, config, CLASSES), config


def test_adversarial_erasing_trains_the_second_classifier_on_images_erased_where_the_first_fired(erasing_classifier):
    store, summary, _ = erasing_classifier
    assert summary["rounds"] == 2
    assert store.child("round-1").exists("checkpoint.pth") and store.child("round-2").exists("checkpoint.pth")
    masks = [key for key in store.child("erased-1").list() if key.endswith(".png")]
    assert len(masks) == summary["train_images"]
    erased = [erased_pixels(store.child("erased-1"), key[:-4], (16, 16)).mean() for key in masks]
    assert 0 < np.mean(erased) < 1, "some of each image is erased, not all of it"


def test_adversarial_erasing_mines_the_union_of_its_classifiers_maps(tiny_voc, erasing_classifier, tmp_path):
    store, _, config = erasing_classifier
    (localizers,) = load_localizers(store, CLASSES, torch.device("cpu"))
    assert len(localizers) == 2
    images = torch.rand(1, 3, 64, 64) * 255
    targets = torch.tensor([[4, NO_TARGET]])
    with torch.no_grad():
        maps = [CAM(model)(images, targets) for model, _ in localizers]
    union = torch.maximum(*maps)
    assert (union >= maps[0]).all() and (union > maps[0]).any()
    summary = mine_cams(tiny_voc, store, open_store(tmp_path / "cams"), config, CLASSES)
    assert summary["images"] > 0


# ---- the classifier ensemble ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ensemble_classifier(tiny_voc, tmp_path_factory):
    config = method_config(tiny_config(epochs=1), "ensemble")
    config["classifier"]["ensemble_members"] = 2
    store = open_store(tmp_path_factory.mktemp("ensemble"))
    return store, train_classifier(tiny_voc, store, config, CLASSES), config


def test_an_ensemble_trains_each_member_from_its_own_seed(ensemble_classifier):
    store, summary, _ = ensemble_classifier
    assert summary["members"] == 2
    first, second = (load_from_store(store.child(f"member-{k}"), "checkpoint.pth")["state_dict"] for k in (1, 2))
    assert any(not torch.equal(first[key], second[key]) for key in first)


def read_maps(store, key):
    return np.load(io.BytesIO(store.get_bytes(key)))["cams"].astype(np.float32)


def test_an_ensemble_mines_the_mean_of_its_members_maps(tiny_voc, ensemble_classifier, tmp_path):
    store, _, config = ensemble_classifier
    members = [open_store(tmp_path / f"member-{k}") for k in (1, 2)]
    for number, out in enumerate(members, start=1):
        mine_cams(tiny_voc, store.child(f"member-{number}"), out, config, CLASSES)
    ensemble = open_store(tmp_path / "ensemble")
    mine_cams(tiny_voc, store, ensemble, config, CLASSES)
    keys = [key for key in ensemble.list() if key.endswith(".npz")]
    assert keys
    first, second = ([read_maps(member, key) for key in keys] for member in members)
    assert not all(np.allclose(a, b, atol=0.01) for a, b in zip(first, second, strict=True)), "members differ"
    for key, a, b in zip(keys, first, second, strict=True):
        np.testing.assert_allclose(read_maps(ensemble, key), (a + b) / 2, atol=2e-3)


@pytest.mark.parametrize("members", [0, 1.5, True])
def test_an_ensemble_of_no_whole_number_of_classifiers_is_a_config_error(tiny_voc, tmp_path, members):
    with pytest.raises(ConfigError, match="ensemble_members"):
        train_classifier(tiny_voc, open_store(tmp_path), tiny_config(ensemble_members=members), CLASSES)


# ---- the method switches -----------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_the_presets_run_the_ensemble_by_default_and_every_method_is_measured_from_one_classifier(preset):
    config = default_config(preset)
    assert config["classifier"]["ensemble_members"] == 5
    assert method_config(config, "ensemble") == config
    for method in ("cam", "gradcam", "advcam+affinity", "band@1"):
        assert method_config(config, method)["classifier"]["ensemble_members"] == 1
    assert method_config(config, "ensemble+band")["classifier"]["ensemble_members"] == 5


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_a_config_that_loads_and_whose_model_builds(method):
    config = method_config(default_config("cpu-tiny"), method)
    reloaded = load_config_text(__import__("wsseg.config", fromlist=["dump_config"]).dump_config(config))
    assert reloaded == config
    model = build_classifier(config["classifier"]["model"], CLASSES)
    assert model(torch.rand(1, 3, 64, 64) * 255).shape == (1, 20)


def test_method_lists_name_the_unknown_and_the_choices():
    assert parse_methods("cam, has,acol") == ["cam", "has", "acol"]
    with pytest.raises(ConfigError, match="unknown method 'foo'.*cam"):
        parse_methods("cam,foo")
    with pytest.raises(ConfigError, match="twice"):
        parse_methods("cam,cam")


def test_methods_joined_with_a_plus_run_together_unless_they_set_one_setting_two_ways():
    config = default_config("cpu-tiny")
    combined = method_config(config, "advcam+affinity@2")
    assert combined["cams"]["method"] == "advcam" and combined["affinity"]["enabled"] is True
    assert combined["seed"] == 2
    assert method_config(config, "seam+affinity")["classifier"]["model"]["type"] == "SEAMClassifier"
    assert parse_methods("cam,advcam+affinity") == ["cam", "advcam+affinity"]
    for bad, match in (("acol+mdc", "'acol' and 'mdc' set classifier.model.type"), ("has+has", "twice"),
                       ("advcam+foo", "unknown method 'foo'")):
        with pytest.raises(ConfigError, match=match):
            method_config(config, bad)


def test_a_method_named_with_a_seed_runs_the_method_at_that_seed():
    config = default_config("cpu-tiny")
    seeded = method_config(config, "acol@3")
    assert seeded["seed"] == 3 and seeded["classifier"]["model"]["type"] == "ACoLClassifier"
    assert method_config(config, "acol")["seed"] == config["seed"]
    assert parse_methods("cam@0,cam@1") == ["cam@0", "cam@1"]
    assert over_seeds(["cam", "has"], [0, 2]) == ["cam@0", "cam@2", "has@0", "has@2"]
    assert parse_seeds(" 0, 1,2") == [0, 1, 2]
    for bad, match in (("cam@x", "whole number"), ("foo@1", "unknown method 'foo'")):
        with pytest.raises(ConfigError, match=match):
            parse_methods(bad)
    with pytest.raises(ConfigError, match="one or the other"):
        over_seeds(["cam@1"], [0, 1])
    for bad, match in (("0,0", "twice"), ("1,two", "whole numbers"), ("", "whole numbers")):
        with pytest.raises(ConfigError, match=match):
            parse_seeds(bad)


def test_a_model_option_its_type_does_not_take_is_a_config_error():
    config = default_config("cpu-tiny")
    config["classifier"]["model"]["erase_threshold"] = 0.5   # an ACoL option on the plain CAM classifier
    with pytest.raises(ConfigError, match="classifier.model"):
        build_classifier(config["classifier"]["model"], CLASSES)
