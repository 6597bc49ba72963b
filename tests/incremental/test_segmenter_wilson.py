"""WILSON (Cermelli et al., CVPR'22) as the segmenter's "wilson" mode: the segmentor grown from an old one, its
losses, learning rates and settings (`test_wilson_losses` has the pooling and pseudo label on hand-made maps,
`test_wilson_steps` real training of chained steps)."""
from __future__ import annotations

import math

import pytest
import torch

from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.errors import ConfigError
from wsseg.segmenter.configs import build_mmseg_config

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


@pytest.mark.parametrize("old_model_prior", [True, False])
def test_fine_tuning_starts_from_the_old_model_but_trains_without_its_scores(old_segmenter, old_model_prior):
    model = build_segmentor(wilson_settings(old_segmenter, old_model_prior=old_model_prior),
                            ClassList(CLASSES.names[:4]))
    model.init_weights()
    model.train()
    # The old classes' image labels, on by default, come from the old model: fine-tuning has none to read.
    assert model.localizer.old_model_image_labels is old_model_prior
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


def two_colour_batch():
    """Images dark on their left half and light on their right, labelled with the new class 3; a little noise makes
    their pixels' features differ, so that `localizer_claiming_left_halves` fits them exactly."""
    inputs, samples = batch([(3,), (1, 3)])
    halves = torch.where(torch.arange(SIDE) < SIDE // 2, -1.0, 1.0).expand(2, 3, SIDE, SIDE)
    return halves + 0.1 * inputs, samples


@torch.no_grad()
def localizer_claiming_left_halves(model, inputs: torch.Tensor, score: float = 2.0) -> None:
    """The localizer's classifier fitted (least squares, exact for these few pixels) to score the new class `score`
    and the background -`score` on each image's left half, the reverse on its right, and the old classes 0."""
    localizer = model.localizer
    hidden = localizer.convs(localizer._transform_inputs(model.extract_feat(inputs)))
    pixels = hidden.permute(0, 2, 3, 1).flatten(0, 2)
    left = torch.arange(hidden.shape[-1]) < hidden.shape[-1] // 2
    wanted = torch.where(left, score, -score).expand(hidden.shape[0], *hidden.shape[-2:]).reshape(-1, 1)
    solution = torch.linalg.lstsq(torch.cat([pixels, torch.ones(len(pixels), 1)], 1), wanted).solution[:, 0]
    classifier = localizer.conv_seg
    classifier.weight.zero_()
    classifier.bias.zero_()
    for row, sign in ((3, 1.0), (0, -1.0)):
        classifier.weight[row, :, 0, 0] = sign * solution[:-1]
        classifier.bias[row] = sign * solution[-1]


@pytest.mark.parametrize("self_training", [True, False])
def test_localizer_self_training_counts_from_the_pseudo_label_start_and_trains_the_localizer_not_the_decode_head(
        old_segmenter, self_training):
    from mmengine.logging import MessageHub

    settings = wilson_settings(old_segmenter, pseudo_label_start=0.5, localizer_self_training=self_training)
    settings["iterations"] = 100
    model = build_segmentor(settings, ClassList(CLASSES.names[:4]))
    model.init_weights()
    model.train()
    inputs, samples = two_colour_batch()
    localizer_claiming_left_halves(model, inputs)
    hub = MessageHub.get_instance("wilson-localizer-self-training")
    hub.update_info("iter", 49)
    assert "loss_self" not in model.loss(inputs, samples)
    hub.update_info("iter", 50)
    losses = model.loss(inputs, samples)
    assert ("loss_self" in losses) is self_training
    if self_training:
        # The new class on the left halves and the background on the right, refined by PAMR within each colour half,
        # are confident targets in both images: the loss and its gradient are not 0.
        localizer_gradient, decode_head_gradient = torch.autograd.grad(
            losses["loss_self"], [model.localizer.conv_seg.weight, model.decode_head.conv_seg.weight],
            allow_unused=True)
        assert float(losses["loss_self"].detach()) > 0 and float(localizer_gradient.abs().sum()) > 0
        assert decode_head_gradient is None


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


@pytest.mark.parametrize("old_model_image_labels", [True, False])
def test_old_model_image_labels_make_a_new_class_that_claims_every_pixel_lose_l_cls(old_segmenter,
                                                                                    old_model_image_labels):
    # 15-1's failure: every image of a batch shows new class 3, so WILSON's L_CLS is lowest where class 3 claims
    # every pixel. Here the old model predicts class 1 on the left half and the background on the right one.
    model = build_segmentor(wilson_settings(old_segmenter, old_model_image_labels=old_model_image_labels),
                            ClassList(CLASSES.names[:4]))
    old_logits = torch.full((1, 3, 4, 4), -4.0)
    old_logits[0, 1, :, :2] = 4.0
    old_logits[0, 0, :, 2:] = 4.0
    greedy = torch.zeros(1, 4, 4, 4)
    greedy[0, 3] = 10.0
    sharing = torch.zeros(1, 4, 4, 4)
    sharing[0, 1, :, :2] = 10.0
    sharing[0, 3, :, 2:] = 10.0
    labels = torch.tensor([[1.0]])

    def classification_loss(maps: torch.Tensor) -> float:
        return float(model.localizer.loss_by_maps(maps, labels, old_logits)["loss_cls"])

    if old_model_image_labels:
        assert classification_loss(greedy) > classification_loss(sharing) + 1.0
    else:
        assert classification_loss(greedy) <= classification_loss(sharing)


def test_a_label_of_a_later_steps_class_counts_as_background(wilson_segmentor):
    # Protocol overlap: a step-1 image of task 2-1 may also show class 4, which step 2 learns. Step 1 leaves it out of
    # its image labels, as if the image showed class 3 alone.
    later, alone = (batch([(3, 4), (1, 3)]), batch([(3,), (1, 3)]))
    torch.manual_seed(0)
    with_later = wilson_segmentor.loss(*later)
    torch.manual_seed(0)
    without = wilson_segmentor.loss(*alone)
    for name, value in without.items():
        torch.testing.assert_close(with_later[name], value, msg=name)


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
    with pytest.raises(ConfigError, match="segmenter.wilson.localizer_self_training is 'yes'; set true .* or false"):
        build_segmentor(wilson_settings(old_segmenter, localizer_self_training="yes"), ClassList(CLASSES.names[:4]))
    with pytest.raises(ConfigError, match="segmenter.wilson.old_model_image_labels is 1; set true .* or false"):
        build_segmentor(wilson_settings(old_segmenter, old_model_image_labels=1), ClassList(CLASSES.names[:4]))


def test_a_step_learns_at_a_share_of_the_presets_learning_rate(old_segmenter):
    preset_rate = default_config("cpu-tiny")["segmenter"]["optimizer"]["lr"]
    step = mmseg_config(wilson_settings(old_segmenter, lr_factor=0.1), ClassList(CLASSES.names[:4]))
    first = mmseg_config(default_config("cpu-tiny")["segmenter"], OLD_CLASSES)

    assert step.optim_wrapper.optimizer.lr == pytest.approx(preset_rate * 0.1)
    assert step.param_scheduler[0].eta_min == pytest.approx(preset_rate * 0.1 / 100)
    assert first.optim_wrapper.optimizer.lr == pytest.approx(preset_rate)


def test_an_old_model_trained_with_softmax_is_flagged_one_trained_per_class_is_not(old_segmenter, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="wsseg.incremental.wilson"):
        mmseg_config(wilson_settings(old_segmenter), ClassList(CLASSES.names[:4]))
    assert "trained with softmax cross-entropy" in caplog.text and "segmenter.loss: binary_cross_entropy" in caplog.text

    caplog.clear()
    per_class = stored_old_segmenter(tmp_path, loss="binary_cross_entropy")
    with caplog.at_level("WARNING", logger="wsseg.incremental.wilson"):
        mmseg_config(wilson_settings(per_class), ClassList(CLASSES.names[:4]))
    assert "softmax" not in caplog.text


def test_an_old_checkpoint_that_does_not_fit_its_mmseg_config_is_named(old_segmenter, tmp_path):
    settings = default_config("cpu-tiny")["segmenter"]
    wider = dict(settings, width=2 * settings["width"])
    torch.save(dict(meta={}, state_dict=build_segmentor(wider, OLD_CLASSES).state_dict()), tmp_path / "checkpoint.pth")
    (tmp_path / "mmseg_config.py").write_text((old_segmenter / "mmseg_config.py").read_text())
    with pytest.raises(ConfigError, match=f"segmenter.wilson.old_checkpoint: {tmp_path}.* does not fit the model "
                                          r"\(.*size mismatch.*\); name the output of the previous step"):
        build_segmentor(wilson_settings(tmp_path), ClassList(CLASSES.names[:4])).init_weights()
