"""WILSON (Cermelli et al., CVPR'22) as the segmenter's "wilson" mode: the localizer's pooling, focal penalty and
losses and the pseudo label on hand-made maps, the grown segmentor built from an old one, and steps of real training
on a tiny synthetic set whose new images have no masks, chained as an incremental task's steps are."""
from __future__ import annotations

import json
import math

import pytest
import torch

from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.data import load_samples, make_synthetic_voc, read_image
from wsseg.errors import ConfigError
from wsseg.segmenter.configs import build_mmseg_config
from wsseg.segmenter.wilson import focal_size_penalty, ngwp_scores, pseudo_labels
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two old classes, then one new class per step: task 2-1, three steps.
CLASSES = ClassList(("background", "a", "b", "c", "d"))
OLD_CLASSES = ClassList(CLASSES.names[:3])
SIDE = 64


def wilson_settings(old_checkpoint, old_classes: int = 2, new_classes: int = 1, **changes) -> dict:
    settings = dict(default_config("cpu-tiny")["segmenter"], mode="wilson")
    settings["wilson"].update(old_checkpoint=str(old_checkpoint), old_classes=old_classes, new_classes=new_classes,
                              **changes)
    return settings


def mmseg_config(settings: dict, classes: ClassList):
    return build_mmseg_config(settings, classes, dict(train=dict(type="WssegDataset")), "work", "out",
                              distributed=False, cuda=False, seed=0)


def build_segmentor(settings: dict, classes: ClassList):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    return MODELS.build(mmseg_config(settings, classes).model)


def stored_old_segmenter(folder, loss: str = "cross_entropy"):
    """`folder` as train-segmenter leaves it, holding an untrained cpu-tiny DeepLabV3+ of the two old classes (with
    its auxiliary head, as the first step trains one), its heads' loss `loss`."""
    settings = dict(default_config("cpu-tiny")["segmenter"], loss=loss)
    model = build_segmentor(settings, OLD_CLASSES)
    model.init_weights()
    torch.save(dict(meta={}, state_dict=model.state_dict()), folder / "checkpoint.pth")
    (folder / "mmseg_config.py").write_text(mmseg_config(settings, OLD_CLASSES).pretty_text)
    return folder


@pytest.fixture(scope="module")
def old_segmenter(tmp_path_factory):
    return stored_old_segmenter(tmp_path_factory.mktemp("old_segmenter"))


@pytest.fixture
def wilson_segmentor(old_segmenter):
    model = build_segmentor(wilson_settings(old_segmenter), ClassList(CLASSES.names[:4]))
    model.init_weights()
    return model.train()


def batch(labels_per_image: list[tuple[int, ...]], seed: int = 0):
    """Normalised inputs and data samples carrying image labels and no mask, as WILSON's pipeline packs them."""
    from mmseg.structures import SegDataSample

    inputs = torch.randn(len(labels_per_image), 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))
    samples = [SegDataSample(metainfo=dict(image_labels=labels, img_shape=(SIDE, SIDE), pad_shape=(SIDE, SIDE),
                                           ori_shape=(SIDE, SIDE)))
               for labels in labels_per_image]
    return inputs, samples


def test_ngwp_pooling_equals_the_formula_on_hand_made_maps():
    maps = torch.tensor([[[[2.0, 0.0], [0.0, -1.0]],
                          [[0.0, 3.0], [1.0, 0.0]],
                          [[-1.0, 1.0], [4.0, 0.5]]]])
    epsilon = 1.0
    expected = []
    for c in range(3):
        masks, weighted = 0.0, 0.0
        for y in range(2):
            for x in range(2):
                column = [float(maps[0, k, y, x]) for k in range(3)]
                share = math.exp(column[c]) / sum(math.exp(value) for value in column)
                masks += share
                weighted += share * column[c]
        expected.append(weighted / (epsilon + masks))
    torch.testing.assert_close(ngwp_scores(maps, epsilon), torch.tensor([expected]))
    # ε keeps a class that claims no pixel near 0, however high its score on a pixel another class wins.
    unclaimed = torch.zeros(1, 2, 4, 4)
    unclaimed[:, 0] = 30.0
    unclaimed[0, 1, 0, 0] = 20.0
    assert abs(float(ngwp_scores(unclaimed, epsilon)[0, 1])) < 1e-3


def test_focal_size_penalty_favours_classes_that_spread_over_their_object():
    def one_class_on(pixels: int) -> torch.Tensor:
        maps = torch.zeros(1, 2, 4, 4)
        maps[:, 0] = 30.0
        maps[0, 1].view(-1)[:pixels] = 60.0
        return maps

    gamma, lam = 3.0, 0.01
    penalties = [float(focal_size_penalty(one_class_on(pixels), gamma, lam)[0, 1]) for pixels in (0, 1, 8, 16)]
    assert penalties[0] == pytest.approx(math.log(lam), abs=1e-3)  # a class claiming nothing: log λ
    assert penalties[0] < penalties[1] < penalties[2] < penalties[3]
    assert penalties[3] == pytest.approx(0.0, abs=1e-6)  # claiming the whole image: no penalty
    share = 1 / 16
    assert penalties[1] == pytest.approx((1 - share) ** gamma * math.log(lam + share), abs=1e-4)


def test_pseudo_label_mixes_hard_and_soft_localizer_maps_and_takes_the_background_minimum():
    # Classes: background, old 1 and 2, new 3. Two pixels: the localizer says background on the first, class 3 on
    # the second; the old model is sure of background on the first and not on the second.
    maps = torch.tensor([[3.0, 1.5], [0.0, 0.0], [2.0, 0.0], [1.0, 2.0]]).view(1, 4, 1, 2)
    old_logits = torch.tensor([[4.0, -3.0], [-2.0, -1.0], [-3.0, 1.0]]).view(1, 3, 1, 2)
    labelled = torch.tensor([[1.0]])
    alpha = 0.5
    targets = pseudo_labels(maps, old_logits, labelled, alpha)

    old_scores = old_logits.sigmoid()
    # m: the softmax over all four classes, kept for the background and the labelled new class only.
    masks = maps.softmax(1) * torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 4, 1, 1)
    hard = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(1, 4, 1, 2)
    localizer = alpha * hard + (1 - alpha) * masks
    torch.testing.assert_close(targets[:, 1:3], old_scores[:, 1:3])
    torch.testing.assert_close(targets[:, 3], localizer[:, 3])
    # The first pixel's background comes from the localizer (below the old model's), the second's from the old
    # model (below the localizer's): neither alone gives both.
    assert localizer[0, 0, 0, 0] < old_scores[0, 0, 0, 0] and old_scores[0, 0, 0, 1] < localizer[0, 0, 0, 1]
    torch.testing.assert_close(targets[0, 0, 0], torch.stack([localizer[0, 0, 0, 0], old_scores[0, 0, 0, 1]]))

    # An image not labelled with the new class gets no target for it, wherever the localizer puts it.
    unlabelled = pseudo_labels(maps, old_logits, torch.tensor([[0.0]]), alpha)
    assert float(unlabelled[:, 3].max()) == 0.0


def test_pseudo_label_without_the_old_model_is_the_localizers_with_old_classes_at_zero():
    maps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    labelled = torch.tensor([[1.0], [0.0]])
    alpha = 0.5
    targets = pseudo_labels(maps, None, labelled, alpha)

    masks = maps.softmax(1) * torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]).view(2, 4, 1, 1)
    hard = torch.nn.functional.one_hot(masks.argmax(1), 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(targets, alpha * hard + (1 - alpha) * masks)
    assert float(targets[:, 1:3].abs().max()) == 0.0
    # With the old model's prior, the same maps give other targets for the old classes and the background.
    with_prior = pseudo_labels(maps, torch.zeros(2, 3, 3, 3), labelled, alpha)
    assert not torch.allclose(with_prior[:, :3], targets[:, :3])
    torch.testing.assert_close(with_prior[:, 3], targets[:, 3])


@pytest.mark.parametrize("old_model_prior", [True, False])
def test_fine_tuning_starts_from_the_old_model_but_trains_without_its_scores(old_segmenter, old_model_prior):
    model = build_segmentor(wilson_settings(old_segmenter, old_model_prior=old_model_prior),
                            ClassList(CLASSES.names[:4]))
    model.init_weights()
    model.train()
    old_classifier = model.old_model.decode_head.conv_seg
    torch.testing.assert_close(model.decode_head.conv_seg.weight[:3], old_classifier.weight)
    inputs, samples = batch([(3,), (1, 3)])

    def losses() -> dict:
        torch.manual_seed(0)  # the decode head's dropout draws the same masks in both passes
        with torch.no_grad():
            return model.loss(inputs, samples)

    before = losses()
    with torch.no_grad():
        old_classifier.bias += torch.tensor([4.0, -3.0, 2.0])
    after = losses()
    assert ("loss_loc" in before) is old_model_prior
    if old_model_prior:
        assert not torch.allclose(before["loss_seg"], after["loss_seg"])
        assert not torch.allclose(before["loss_loc"], after["loss_loc"])
    else:
        assert before.keys() == after.keys() == {"loss_cls", "loss_seg"}
        torch.testing.assert_close(before, after)


def test_encoder_distillation_holds_the_encoder_to_the_old_ones_features(old_segmenter):
    import torch.nn.functional as F

    inputs, samples = batch([(3,), (1, 3)])
    model = build_segmentor(wilson_settings(old_segmenter, encoder_distillation=2.0), ClassList(CLASSES.names[:4]))
    model.init_weights()
    model.eval()  # both encoders on their running statistics: equal weights give equal features
    with torch.no_grad():
        assert float(model.loss(inputs, samples)["loss_de"]) < 1e-10
        generator = torch.Generator().manual_seed(3)
        for parameter in model.backbone.parameters():
            parameter += 0.05 * torch.randn(parameter.shape, generator=generator)
        drifted = model.loss(inputs, samples)["loss_de"]
        features, old_features = model.extract_feat(inputs)[-1], model.old_model.extract_feat(inputs)[-1]
    assert float(drifted) > 0
    torch.testing.assert_close(drifted, 2.0 * F.mse_loss(features, old_features))

    without = build_segmentor(wilson_settings(old_segmenter, encoder_distillation=0.0), ClassList(CLASSES.names[:4]))
    without.init_weights()
    with torch.no_grad():
        assert "loss_de" not in without.train().loss(inputs, samples)


def test_pseudo_labels_count_from_their_start_iteration(old_segmenter):
    from mmengine.logging import MessageHub

    settings = wilson_settings(old_segmenter, pseudo_label_start=0.5)
    settings["iterations"] = 100
    model = build_segmentor(settings, ClassList(CLASSES.names[:4]))
    model.init_weights()
    inputs, samples = batch([(3,), (1, 3)])
    hub = MessageHub.get_instance("wilson-pseudo-label-start")
    seg_losses = []
    for iteration in (49, 50):
        hub.update_info("iter", iteration)
        with torch.no_grad():
            seg_losses.append(float(model.train().loss(inputs, samples)["loss_seg"]))
    assert seg_losses[0] == 0 and seg_losses[1] > 0


def test_the_decode_head_and_the_localizer_learn_faster_than_the_encoder(old_segmenter):
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    config = mmseg_config(wilson_settings(old_segmenter, head_lr_mult=10.0), ClassList(CLASSES.names[:4]))
    model = MODELS.build(config.model)
    rates = {id(parameter): group["lr"] for group in build_optim_wrapper(model, config.optim_wrapper).param_groups
             for parameter in group["params"]}
    encoder_rate = config.optim_wrapper.optimizer.lr
    assert rates[id(next(model.backbone.parameters()))] == pytest.approx(encoder_rate)
    assert rates[id(model.decode_head.conv_seg.weight)] == pytest.approx(10 * encoder_rate)
    assert rates[id(model.localizer.conv_seg.weight)] == pytest.approx(10 * encoder_rate)


def test_localization_prior_vanishes_where_the_localizer_matches_the_old_model(wilson_segmentor):
    localizer = wilson_segmentor.localizer
    labels = torch.tensor([[1.0]])
    confident_old = torch.where(torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5, 12.0, -12.0)
    new_class = torch.zeros(1, 1, 4, 4)
    matching = torch.cat([confident_old, new_class], 1)
    assert float(localizer.loss_by_maps(matching, labels, confident_old)["loss_loc"]) < 1e-4
    assert float(localizer.loss_by_maps(torch.cat([-confident_old, new_class], 1), labels,
                                        confident_old)["loss_loc"]) > 1.0

    # With an unsure old model, BCE keeps its targets' entropy; matching them is still its minimum: no gradient.
    soft_old = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    maps = torch.cat([soft_old, new_class], 1).requires_grad_()
    localizer.loss_by_maps(maps, labels, soft_old)["loss_loc"].backward()
    assert float(maps.grad.abs().max()) < 1e-7


def test_localization_prior_changes_the_localizer_gradient_and_pseudo_labels_do_not_train_it(wilson_segmentor):
    inputs, samples = batch([(3,), (1, 3)])

    def localizer_gradient(*names: str) -> torch.Tensor | None:
        wilson_segmentor.zero_grad()
        losses = wilson_segmentor.loss(inputs, samples)
        sum(losses[name] for name in names).backward()
        gradient = wilson_segmentor.localizer.conv_seg.weight.grad
        return None if gradient is None else gradient.clone()

    with_prior = localizer_gradient("loss_cls", "loss_loc")
    without_prior = localizer_gradient("loss_cls")
    assert not torch.allclose(with_prior, without_prior)
    # L_SEG trains the segmentation model on the pseudo labels, never the localizer that made them.
    assert localizer_gradient("loss_seg") is None
    assert wilson_segmentor.decode_head.conv_seg.weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in wilson_segmentor.old_model.parameters())


def test_the_decode_head_grows_from_the_old_one_and_the_old_model_stays_frozen(wilson_segmentor, old_segmenter):
    old_state = torch.load(old_segmenter / "checkpoint.pth", weights_only=False)["state_dict"]
    old_weight, old_bias = old_state["decode_head.conv_seg.weight"], old_state["decode_head.conv_seg.bias"]
    classifier = wilson_segmentor.decode_head.conv_seg
    assert classifier.out_channels == 4 and old_weight.shape[0] == 3
    torch.testing.assert_close(classifier.weight[:3], old_weight)
    torch.testing.assert_close(classifier.weight[3], old_weight[0])  # the new class starts as the background
    torch.testing.assert_close(classifier.bias[1:3], old_bias[1:])
    balanced = old_bias[0] - math.log(2)  # MiB: the background's score shared with one new class
    torch.testing.assert_close(classifier.bias[[0, 3]], torch.stack([balanced, balanced]))
    for name, value in wilson_segmentor.backbone.state_dict().items():
        torch.testing.assert_close(value, old_state[f"backbone.{name}"])
    torch.testing.assert_close(wilson_segmentor.decode_head.image_pool[1].conv.weight,
                               old_state["decode_head.image_pool.1.conv.weight"])

    old_model = wilson_segmentor.old_model
    assert not old_model.training and not any(parameter.requires_grad for parameter in old_model.parameters())
    assert not old_model.with_auxiliary_head and not wilson_segmentor.with_auxiliary_head
    torch.testing.assert_close(old_model.decode_head.conv_seg.weight, old_weight)


def test_prediction_uses_neither_the_localizer_nor_the_old_model(wilson_segmentor):
    def refuse(*args, **kwargs):
        raise AssertionError("prediction must not run this")

    wilson_segmentor.localizer.forward = refuse
    wilson_segmentor.old_model.extract_feat = refuse
    wilson_segmentor.old_model.decode_head.forward = refuse
    inputs, samples = batch([(3,)])
    predicted = wilson_segmentor.eval().predict(inputs, samples)[0]
    assert predicted.seg_logits.data.shape == (4, SIDE, SIDE)
    assert int(predicted.pred_sem_seg.data.max()) < 4


def test_settings_that_do_not_fit_the_old_model_are_refused_by_name(old_segmenter):
    with pytest.raises(ConfigError, match="segmenter.wilson.old_classes is 3.*set old_classes: 2"):
        build_segmentor(wilson_settings(old_segmenter, old_classes=3, new_classes=1), ClassList(CLASSES.names[:5]))
    with pytest.raises(ConfigError, match="segmenter.wilson.alpha"):
        build_segmentor(wilson_settings(old_segmenter, alpha=1.5), ClassList(CLASSES.names[:4]))
    with pytest.raises(ConfigError, match="segmenter.wilson.old_model_prior is 'no'; set true .* or false"):
        build_segmentor(wilson_settings(old_segmenter, old_model_prior="no"), ClassList(CLASSES.names[:4]))
    with pytest.raises(ConfigError, match="segmenter.wilson.pseudo_label_start is 1; .* below 1"):
        build_segmentor(wilson_settings(old_segmenter, pseudo_label_start=1), ClassList(CLASSES.names[:4]))
    with pytest.raises(ConfigError, match="segmenter.wilson.lr_factor is 0; .* above 0"):
        build_segmentor(wilson_settings(old_segmenter, lr_factor=0), ClassList(CLASSES.names[:4]))


def test_a_step_learns_at_a_share_of_the_presets_learning_rate(old_segmenter):
    preset_rate = default_config("cpu-tiny")["segmenter"]["optimizer"]["lr"]
    step = mmseg_config(wilson_settings(old_segmenter, lr_factor=0.1), ClassList(CLASSES.names[:4]))
    first = mmseg_config(default_config("cpu-tiny")["segmenter"], OLD_CLASSES)

    assert step.optim_wrapper.optimizer.lr == pytest.approx(preset_rate * 0.1)
    assert step.param_scheduler[0].eta_min == pytest.approx(preset_rate * 0.1 / 100)
    assert first.optim_wrapper.optimizer.lr == pytest.approx(preset_rate)


def test_an_old_model_trained_with_softmax_is_flagged_one_trained_per_class_is_not(old_segmenter, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="wsseg.segmenter.wilson"):
        mmseg_config(wilson_settings(old_segmenter), ClassList(CLASSES.names[:4]))
    assert "trained with softmax cross-entropy" in caplog.text and "segmenter.loss: binary_cross_entropy" in caplog.text

    caplog.clear()
    per_class = stored_old_segmenter(tmp_path, loss="binary_cross_entropy")
    with caplog.at_level("WARNING", logger="wsseg.segmenter.wilson"):
        mmseg_config(wilson_settings(per_class), ClassList(CLASSES.names[:4]))
    assert "softmax" not in caplog.text


@pytest.fixture
def incremental_voc(tmp_path):
    """A 2-1 task's data: the first step's images (classes a, b) and, apart, the images of all four classes the
    later steps pick from, their train masks deleted."""
    old_data = make_synthetic_voc(tmp_path / "old", train=4, val=1, seed=0, size=SIDE, classes=OLD_CLASSES)
    new_data = make_synthetic_voc(tmp_path / "new", train=16, val=1, seed=0, size=SIDE, classes=CLASSES)
    for sample in load_samples(new_data, "train", CLASSES):
        sample.mask_path.unlink()
    return old_data, new_data


def test_wilson_steps_train_on_image_labels_alone_and_chain(incremental_voc, tmp_path):
    from wsseg.segmenter.inference import load_segmenter, predict
    from wsseg.steps.train_segmenter import train_segmenter

    old_data, new_data = incremental_voc
    first = open_store(tmp_path / "step0")
    config = default_config("cpu-tiny")
    config["segmenter"].update(iterations=2, validate=False)
    train_segmenter(old_data, None, first, config, OLD_CLASSES)

    stores = [first]
    for step, iterations in ((1, 3), (2, 2)):
        config = default_config("cpu-tiny")
        config["segmenter"].update(mode="wilson", iterations=iterations)
        config["segmenter"]["wilson"].update(old_checkpoint=stores[-1].uri, old_classes=1 + step, new_classes=1)
        stores.append(open_store(tmp_path / f"step{step}"))
        summary = train_segmenter(new_data, None, stores[-1], config, CLASSES)

        metrics = json.loads(stores[-1].get_bytes("metrics.json"))
        assert metrics["iterations"] == summary["iterations"] == iterations
        assert not metrics["supervised"] and "val_miou" not in metrics
        assert "WILSONSegmentor" in stores[-1].get_bytes("mmseg_config.py").decode()
        model = load_segmenter(stores[-1], device="cpu")
        assert model.decode_head.conv_seg.out_channels == 3 + step
        assert model.old_model.decode_head.conv_seg.out_channels == 2 + step
        labels = predict(model, read_image(load_samples(new_data, "val", CLASSES)[0].image_path))
        assert labels.shape == (SIDE, SIDE) and int(labels.max()) < 3 + step

    # Each step starts from its old model: a few AdamW steps of lr 0.008 move no weight by more than 0.03, where a
    # fresh initialisation would differ by about the weights' own size.
    models = [load_segmenter(store, device="cpu") for store in stores]
    for earlier, later in zip(models, models[1:], strict=False):
        stem = [model.backbone.stem[0].weight for model in (earlier, later)]
        assert float((stem[1] - stem[0]).abs().max()) < 0.03 < float(stem[0].abs().max())
    # The old model of the second new step is the first new step's segmentor, not that step's own old model.
    torch.testing.assert_close(models[2].old_model.decode_head.conv_seg.weight, models[1].decode_head.conv_seg.weight)


def test_wilson_step_names_the_setting_of_a_missing_old_segmenter(incremental_voc, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    _, new_data = incremental_voc
    config = default_config("cpu-tiny")
    config["segmenter"].update(mode="wilson", iterations=1)
    config["segmenter"]["wilson"].update(old_classes=2, new_classes=1)
    with pytest.raises(ConfigError, match="segmenter.wilson.old_checkpoint"):
        train_segmenter(new_data, None, open_store(tmp_path / "out"), config, CLASSES)
    empty = tmp_path / "empty"
    empty.mkdir()
    config["segmenter"]["wilson"]["old_checkpoint"] = str(empty)
    with pytest.raises(ConfigError, match="segmenter.wilson.old_checkpoint: .* holds no checkpoint.pth"):
        train_segmenter(new_data, None, open_store(tmp_path / "out"), config, CLASSES)
