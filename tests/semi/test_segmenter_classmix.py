"""ClassMix with a mean teacher (Olsson et al., WACV'21) as the segmenter's "classmix" mode: the mixing, the teacher's
EMA, the confidence weight and its ramp on hand-made tensors and a cpu-tiny segmentor, and the sampler's batches
(`test_segmenter_classmix_training` has real training steps)."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.logging import MessageHub

from wsseg.classes import IGNORE_INDEX
from wsseg.config import default_config
from wsseg.semi.classmix import (
    DistributionAlignment,
    classmix_masks,
    colour_jitter,
    confidence_weights,
    confident_targets,
    gaussian_blur,
    mix,
    mix_pairs,
    sigmoid_rampup,
)

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIDE = 32


def classmix_settings(**changes) -> dict:
    return dict(default_config("cpu-tiny")["segmenter"], mode="classmix", **changes)


def build_segmentor(classes, **classmix):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from wsseg.segmenter.configs import build_mmseg_config

    register_all_modules()
    settings = classmix_settings()
    settings["classmix"].update(classmix)
    datasets = dict(train=dict(type="WssegDataset"), unlabelled=dict(type="WssegDataset"))
    config = build_mmseg_config(settings, classes, datasets, "work", "out", distributed=False, cuda=False, seed=0)
    model = MODELS.build(config.model)
    model.init_weights()
    return model.train()


def batch(labelled: int, unlabelled: int, seed: int = 0):
    """Normalised inputs and data samples: the first `labelled` with a mask (a square of class 5), the rest without."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for index in range(labelled + unlabelled):
        sample = SegDataSample(metainfo=dict(img_shape=(SIDE, SIDE), pad_shape=(SIDE, SIDE)))
        if index < labelled:
            mask = torch.zeros(1, SIDE, SIDE, dtype=torch.long)
            mask[:, 8:20, 8:20] = 5
            sample.gt_sem_seg = PixelData(data=mask)
        samples.append(sample)
    return torch.randn(len(samples), 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)), samples


def test_classmix_mask_takes_the_pixels_of_a_random_half_of_the_classes_present():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4], labels[0, 4:, 4:], labels[0, :2, 6:] = 3, 7, 9
    labels[0, 7] = IGNORE_INDEX
    halves = set()
    for seed in range(12):
        mask = classmix_masks(labels, torch.Generator().manual_seed(seed))[0]
        chosen = set(labels[0][mask].tolist())
        # Four classes present (0, 3, 7, 9): two, and every pixel of them, and no ignored pixel.
        assert len(chosen) == 2 and chosen <= {0, 3, 7, 9}
        assert torch.equal(mask, torch.isin(labels[0], torch.tensor(sorted(chosen))))
        halves.add(frozenset(chosen))
    assert len(halves) > 2, "the half must be drawn at random"
    # Three classes: two of them (rounded up); one class: the whole image.
    three = labels.clone()
    three[three == 9] = 0
    assert len(set(three[0][classmix_masks(three)[0]].tolist())) == 2
    assert classmix_masks(torch.full((1, 4, 4), 6)).all()


def test_mixed_image_and_target_take_a_from_the_mask_and_its_partner_elsewhere():
    images = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    labels = torch.tensor([1, 2, 3]).view(3, 1, 1).expand(3, 4, 4)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, :, :1] = True
    mixed_images, mixed_labels = mix_pairs(masks, images, labels)
    # Image i keeps its pixels under its mask and shows image i + 1 (the last, the first) elsewhere.
    for index, partner in ((0, 1), (1, 2), (2, 0)):
        assert (mixed_images[index][:, masks[index]] == index).all()
        assert (mixed_images[index][:, ~masks[index]] == partner).all()
        assert (mixed_labels[index][masks[index]] == index + 1).all()
        assert (mixed_labels[index][~masks[index]] == partner + 1).all()
    torch.testing.assert_close(mix(masks, images, 10 - images), torch.where(masks[:, None], images, 10 - images))


def test_the_student_learns_on_each_unlabelled_image_pasted_by_whole_teacher_classes_over_its_partner(classes):
    augmentation = classmix_settings()["classmix"]
    torch.manual_seed(0)  # initial weights whose teacher labels several classes, and the same halves of them
    model = build_segmentor(classes, distribution_alignment=False,
                            color_jitter=dict(augmentation["color_jitter"], probability=0.0),
                            blur=dict(augmentation["blur"], probability=0.0))
    model.update_teacher()
    inputs, samples = batch(labelled=0, unlabelled=2)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model.classmix_loss(inputs, samples)
        _, teacher_labels = model.teacher_predictions(inputs, torch.ones(2, SIDE, SIDE, dtype=torch.bool))
    (student_inputs,) = seen  # the teacher labels with its own copy of the backbone
    for index, partner in ((0, 1), (1, 0)):
        from_image = torch.isclose(student_inputs[index], inputs[index], atol=1e-4).all(0)
        from_partner = torch.isclose(student_inputs[index], inputs[partner], atol=1e-4).all(0)
        assert (from_image | from_partner).all() and from_image.any() and from_partner.any()
        labels = teacher_labels[index]
        assert len(labels.unique()) > 1, "the teacher labels more than one class, so half of them is not all"
        for label in labels.unique():
            assert len(from_image[labels == label].unique()) == 1, "a class is pasted whole or not at all"


def test_mixed_images_are_jittered_and_blurred_but_stay_images():
    image = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    always = dict(probability=1.0, brightness=0.25, contrast=0.25, saturation=0.25, hue=0.25)
    jittered = colour_jitter(image, always, torch.Generator().manual_seed(5))
    assert not torch.allclose(jittered, image) and 0 <= jittered.min() and jittered.max() <= 1
    assert torch.equal(colour_jitter(image, dict(always, probability=0.0)), image)
    blurred = gaussian_blur(image, dict(probability=1.0, sigma=[1.0, 1.0]))
    # A blur keeps the mean and smooths: neighbouring pixels differ less.
    torch.testing.assert_close(blurred.mean(), image.mean(), atol=0.02, rtol=0)
    assert blurred.diff(dim=2).abs().mean() < 0.6 * image.diff(dim=2).abs().mean()


def test_confidence_weight_is_the_share_of_valid_pixels_above_tau():
    confidence = torch.full((2, 4, 4), 0.5)
    confidence[0, :1] = 0.99  # 4 of 16 pixels above 0.968
    confidence[1, :, :2] = 0.97  # 8 of the 8 valid pixels
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[1, :, 2:] = False
    torch.testing.assert_close(confidence_weights(confidence, valid, 0.968), torch.tensor([0.25, 1.0]))
    assert confidence_weights(torch.full((1, 2, 2), 0.968), torch.ones(1, 2, 2, dtype=torch.bool), 0.968) == 0


def test_confident_targets_ignore_the_pixels_the_teacher_doubts():
    targets = torch.tensor([[[1, 2], [3, IGNORE_INDEX]]])
    confidence = torch.tensor([[[0.99, 0.968], [0.5, 0.99]]])
    assert confident_targets(targets, confidence, 0.968).tolist() == [[[1, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX]]]


def test_pixel_weighting_drops_the_doubted_pixels_from_the_loss_where_image_weighting_keeps_them(classes):
    torch.manual_seed(0)
    inputs, samples = batch(labelled=0, unlabelled=3)
    probe = build_segmentor(classes)
    probe.update_teacher()
    confidence, _ = probe.teacher_predictions(inputs, torch.ones(3, SIDE, SIDE, dtype=torch.bool))
    median = float(confidence.median())
    losses = {}
    for threshold in (0.0, median):
        for weighting in ("image", "pixel"):
            model = build_segmentor(classes, confidence=threshold, rampup_iterations=0, confidence_weighting=weighting)
            model.load_state_dict(probe.state_dict())
            torch.manual_seed(1)  # the same halves of classes and the same augmentation
            with torch.no_grad():
                losses[threshold, weighting] = model.classmix_loss(inputs, samples)
    everything, half = losses[0.0, "image"], losses[median, "image"]
    assert everything["classmix_confident_share"] == 1 and 0 < half["classmix_confident_share"] < 1
    torch.testing.assert_close(losses[0.0, "pixel"]["loss_classmix"], everything["loss_classmix"])
    assert losses[median, "pixel"]["loss_classmix"] != half["loss_classmix"]


def test_sigmoid_rampup_rises_from_near_zero_to_one_and_stays():
    ramp = [sigmoid_rampup(iteration, 100) for iteration in (0, 25, 50, 99, 100, 500)]
    assert ramp[0] == pytest.approx(math.exp(-5)) and ramp[2] == pytest.approx(math.exp(-1.25))
    assert ramp == sorted(ramp) and ramp[4] == ramp[5] == 1.0
    assert sigmoid_rampup(0, 0) == 1.0


def test_teacher_moves_toward_the_student_by_one_minus_alpha_and_gets_no_gradient(classes):
    model = build_segmentor(classes, ema_momentum=0.9)
    model.update_teacher()  # the first update copies the student
    student = dict(model._student().named_parameters())
    teacher = dict(model.teacher.module.named_parameters())
    assert set(student) == set(teacher)
    for name, parameter in student.items():
        torch.testing.assert_close(teacher[name], parameter)
    before = {name: parameter.detach().clone() for name, parameter in teacher.items()}
    with torch.no_grad():
        for parameter in student.values():
            parameter.add_(1.0)
    model.update_teacher()
    for name, parameter in teacher.items():
        torch.testing.assert_close(parameter, 0.9 * before[name] + 0.1 * student[name])

    assert not model.teacher.training and model.backbone.training
    losses = model.loss(*batch(labelled=2, unlabelled=2))
    sum(value for name, value in losses.items() if "loss" in name).backward()
    assert all(not parameter.requires_grad and parameter.grad is None for parameter in teacher.values())
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0


def test_classmix_loss_is_weighted_by_the_confident_share_and_the_ramp(classes):
    hub = MessageHub.get_current_instance()

    def classmix_loss(model, iteration: int) -> dict:
        hub.update_info("iter", iteration)
        torch.manual_seed(0)  # the same halves of classes and the same augmentation
        inputs, samples = batch(labelled=0, unlabelled=3)
        with torch.no_grad():
            return model.classmix_loss(inputs, samples)

    anything = build_segmentor(classes, confidence=0.0, rampup_iterations=100, unsupervised_weight=2.0)
    anything.update_teacher()
    ramped = classmix_loss(anything, 100)
    assert ramped["classmix_confident_share"] == 1 and ramped["classmix_rampup"] == 1
    assert ramped["loss_classmix"] > 0
    early = classmix_loss(anything, 0)
    torch.testing.assert_close(early["loss_classmix"], ramped["loss_classmix"] * math.exp(-5))

    nothing = build_segmentor(classes, confidence=1.0, rampup_iterations=100)
    nothing.update_teacher()
    assert classmix_loss(nothing, 100)["loss_classmix"] == 0
    hub.update_info("iter", 0)


def test_distribution_alignment_lifts_a_class_the_teacher_predicts_less_often_than_the_labels_show():
    alignment = DistributionAlignment(3, window=4)
    labels = torch.tensor([[0, 1, 2, 2], [2, 2, 2, 2], [0, 1, IGNORE_INDEX, IGNORE_INDEX]])
    alignment.observe_labels(labels)  # of the 10 labelled pixels: 2, 2 and 6
    torch.testing.assert_close(alignment.labelled, torch.tensor([0.2, 0.2, 0.6]))
    # The teacher puts class 2 second at most, on half of the pixels; the invalid pixel counts for nothing.
    first, second, skipped = [0.8, 0.1, 0.1], [0.1, 0.5, 0.4], [0.0, 0.0, 1.0]
    probabilities = torch.tensor([first, second, first, second, skipped]).T.reshape(1, 3, 1, 5)
    valid = torch.tensor([[[True, True, True, True, False]]])
    aligned = alignment.align(probabilities, valid)
    torch.testing.assert_close(alignment.predicted, torch.tensor([0.45, 0.3, 0.25]))
    torch.testing.assert_close(aligned.sum(1), torch.ones(1, 1, 5))
    assert probabilities.argmax(1).tolist() == [[[0, 1, 0, 1, 2]]]
    assert aligned.argmax(1).tolist() == [[[0, 2, 0, 2, 2]]]
    # A plain mean while the window fills, then each batch weighs 1/window.
    alignment.observe_labels(torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(alignment.labelled, torch.tensor([0.6, 0.1, 0.3]))
    for _ in range(3):
        alignment.observe_labels(torch.zeros(4, dtype=torch.long))
    before = alignment.labelled.clone()
    alignment.observe_labels(torch.ones(4, dtype=torch.long))
    torch.testing.assert_close(alignment.labelled, 0.75 * before + 0.25 * torch.tensor([0.0, 1.0, 0.0]))


def test_aligned_classmix_learns_the_labelled_distribution_and_labels_with_it(classes):
    aligned = build_segmentor(classes, distribution_alignment=True)
    plain = build_segmentor(classes, distribution_alignment=False)
    plain.load_state_dict(aligned.state_dict(), strict=False)
    for model in (aligned, plain):
        model.update_teacher()
        model.loss(*batch(labelled=2, unlabelled=2))
    square = 12 * 12 / SIDE ** 2  # the labelled masks: a square of class 5 on the background
    expected = torch.zeros(len(classes))
    expected[0], expected[5] = 1 - square, square
    torch.testing.assert_close(aligned.alignment.labelled, expected)
    assert plain.alignment is None and "alignment.predicted" in aligned.state_dict()
    inputs, samples = batch(labelled=0, unlabelled=2, seed=3)
    valid = torch.ones(2, SIDE, SIDE, dtype=torch.bool)
    aligned_labels = aligned.teacher_predictions(inputs, valid)[1]
    plain_labels = plain.teacher_predictions(inputs, valid)[1]
    assert set(aligned_labels.unique().tolist()) <= {0, 5}
    assert not torch.equal(aligned_labels, plain_labels)


def test_sampler_fills_each_batch_with_labelled_then_unlabelled_samples():
    from torch.utils.data import ConcatDataset

    from wsseg.semi.sampler import LabelledUnlabelledSampler

    dataset = ConcatDataset([list(range(3)), list(range(2)), list(range(5))])  # labelled 0-4, unlabelled 5-9
    indices = iter(LabelledUnlabelledSampler(dataset, labelled=2, unlabelled=3, seed=0))
    batches = [[next(indices) for _ in range(5)] for _ in range(10)]
    assert all(max(one[:2]) < 5 <= min(one[2:]) for one in batches)
    # Every unlabelled image comes round once per pass over them.
    first_pass = [index for one in batches[:5] for index in one[2:]]
    assert sorted(first_pass[:5]) == list(range(5, 10))
