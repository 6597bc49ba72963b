"""WILSON's localizer pooling, focal size penalty and pseudo label (Cermelli et al., CVPR'22; METHODS.md §2) on
hand-made maps, against their formulas."""
from __future__ import annotations

import math

import pytest
import torch

from wsseg.segmenter.wilson import focal_size_penalty, ngwp_scores, pseudo_labels


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
