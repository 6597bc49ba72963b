"""WILSON's localizer pooling, focal size penalty, pseudo label and the localizer's self-training targets and loss
(Cermelli et al., CVPR'22; docs/METHODS.md §2; WILSON's code), and the old classes' image labels read from the old
model, on hand-made maps, against their formulas."""
from __future__ import annotations

import math

import pytest
import torch

from wsseg.incremental.wilson_losses import (
    all_classes_image_loss,
    balanced_localizer_loss,
    confident_localizer_targets,
    focal_size_penalty,
    ngwp_scores,
    old_model_image_labels,
    pseudo_labels,
)


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


def test_confident_targets_keep_pixels_near_their_class_peak_and_leave_out_ambiguous_and_weak_ones():
    # Classes: background (peak 0.9, cutoff 0.7 · 0.9 = 0.63), 1 (peak 0.8, cutoff 0.48), 2 (peak 0.25: 0.6 · 0.25 =
    # 0.15 lies below the floor, so its cutoff is 0.2). One column per pixel.
    masks = torch.tensor([[0.90, 0.65, 0.10, 0.60, 0.50, 0.50],
                          [0.05, 0.10, 0.80, 0.30, 0.50, 0.32],
                          [0.05, 0.25, 0.10, 0.10, 0.00, 0.18]]).view(1, 3, 1, 6)
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # pixel 1: background and class 2, ambiguous
                             [0.0, 0.0, 1.0, 0.0, 1.0, 0.0],   # pixel 4: 0.5 > 0.48, though no more than the background
                             [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]).view(1, 3, 1, 6)  # pixel 3: under every cutoff
    torch.testing.assert_close(confident_localizer_targets(masks), expected)
    # Pixel 5's 0.18 passes 0.6 of class 2's peak but not the floor; pixel 3's background 0.6 passes 0.6 of its peak
    # but not the background's own 0.7.
    assert float(confident_localizer_targets(masks, floor=0.0)[0, 2, 0, 5]) == 1.0
    assert float(confident_localizer_targets(masks, background_share=0.6)[0, 0, 0, 3]) == 1.0


def test_balanced_loss_weighs_each_class_against_the_others_and_drops_images_missing_a_shown_class():
    # Classes: background, old 1, new 2. The first image has three background pixels, one of class 2 and one left out;
    # the second image shows class 2 too, but its targets have none: it weighs 0.
    maps = torch.randn(2, 3, 1, 5, generator=torch.Generator().manual_seed(4))
    targets = torch.zeros(2, 3, 1, 5)
    targets[0, 0, 0, :3] = 1.0
    targets[0, 2, 0, 3] = 1.0
    targets[1, 0, 0, :] = 1.0
    shown = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])

    def cross_entropy(pixel: int, label: int) -> float:
        scores = [float(maps[0, c, 0, pixel]) for c in range(3)]
        return math.log(sum(math.exp(score) for score in scores)) - scores[label]

    # N = 4 confident pixels: the background's weigh (4 - 3) / 5, class 2's (4 - 1) / 5; each class totals 0.6.
    first = (0.2 * sum(cross_entropy(pixel, 0) for pixel in range(3)) + 0.6 * cross_entropy(3, 2)) / 5
    loss = balanced_localizer_loss(maps, targets, shown)
    assert float(loss) == pytest.approx(first / 2, rel=1e-5)

    # The pixel left out and the image missing class 2 give no gradient.
    maps.requires_grad_()
    balanced_localizer_loss(maps, targets, shown).backward()
    assert float(maps.grad[0, :, 0, 4].abs().max()) == 0.0 and float(maps.grad[1].abs().max()) == 0.0


def test_old_classes_are_labelled_where_the_old_model_predicts_them_on_a_pixel_and_the_background_always():
    # Classes: background, old 1, 2 and 3; one column per pixel. In the first image, pixel 1 is class 1's (its argmax,
    # σ(3) > 0.5) though class 3 is above 0.5 there too; class 2 is pixel 2's argmax, but with σ(-0.5) < 0.5 the old
    # model does not predict it. In the second image the old model predicts nothing, not even the background.
    old_logits = torch.tensor([[[4.0, -2.0, -3.0],
                                [-4.0, 3.0, -2.0],
                                [-4.0, -3.0, -0.5],
                                [-4.0, 2.0, -1.0]],
                               [[-1.0, -1.0, -1.0],
                                [-3.0, -3.0, -3.0],
                                [-2.0, -0.2, -2.0],
                                [-3.0, -3.0, -3.0]]]).view(2, 4, 1, 3)
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(old_model_image_labels(old_logits), expected)


def test_all_classes_image_loss_weighs_each_class_as_wilsons_weighs_a_new_one():
    scores = torch.tensor([[2.0, -1.0, 0.5, 1.5], [-0.5, 1.0, -2.0, 0.0]])
    old_labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    new_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    def bce(score: float, label: float) -> float:
        probability = 1 / (1 + math.exp(-score))
        return -math.log(probability if label else 1 - probability)

    labels = torch.cat([old_labels, new_labels], 1)
    per_image = [sum(bce(float(scores[b, c]), float(labels[b, c])) for c in range(4)) for b in range(2)]
    # Two new classes: each image's sum over the four classes halved, then the mean over the two images.
    expected = sum(per_image) / 2 / 2
    assert float(all_classes_image_loss(scores, old_labels, new_labels)) == pytest.approx(expected, rel=1e-6)
