"""PAMR (Araslanov & Roth, CVPR'20) on hand-made images: masks follow colour edges and stay distributions."""
from __future__ import annotations

import torch

from wsseg.incremental.pamr import refine_with_pamr

SIDE = 16
EDGE = 8  # the first column of the right-hand region


def two_regions() -> torch.Tensor:
    """A dark left half and a light right half, each of one colour."""
    image = torch.zeros(1, 3, SIDE, SIDE)
    image[..., :EDGE] = torch.tensor([0.2, 0.3, 0.1]).view(3, 1, 1)
    image[..., EDGE:] = torch.tensor([0.9, 0.8, 0.7]).view(3, 1, 1)
    return image


def mask_bleeding_over_the_edge(columns: int) -> torch.Tensor:
    """Class 1 over the left half and `columns` more, class 0 on the rest: (1, 2, SIDE, SIDE) probabilities."""
    foreground = torch.zeros(1, 1, SIDE, SIDE)
    foreground[..., :EDGE + columns] = 0.9
    foreground[..., EDGE + columns:] = 0.1
    return torch.cat([1 - foreground, foreground], 1)


def test_a_mask_bleeding_over_a_colour_edge_is_pulled_back_to_it():
    masks = mask_bleeding_over_the_edge(columns=2)
    refined = refine_with_pamr(two_regions(), masks)
    labels = refined.argmax(1)[0]
    assert bool((labels[:, :EDGE] == 1).all()) and bool((labels[:, EDGE:] == 0).all())
    # The same mask on an image of one colour spreads evenly: without an edge nothing pulls it back.
    blurred = refine_with_pamr(torch.full((1, 3, SIDE, SIDE), 0.5), masks).argmax(1)[0]
    assert bool((blurred[:, EDGE:EDGE + 2] == 1).all())


def test_a_uniform_mask_stays_as_it_is_whatever_the_image():
    uniform = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1).expand(2, 3, SIDE, SIDE)
    image = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(refine_with_pamr(image, uniform), uniform)
    torch.testing.assert_close(refine_with_pamr(torch.ones(2, 3, SIDE, SIDE), uniform), uniform)


def test_refined_masks_stay_distributions_over_classes_on_grids_smaller_than_the_dilations():
    generator = torch.Generator().manual_seed(1)
    for side in (SIDE, 5):  # 5: WILSON's widest dilation, 12, reaches past the grid on every side
        masks = torch.randn(2, 4, side, side, generator=generator).softmax(1)
        refined = refine_with_pamr(torch.rand(2, 3, side, side, generator=generator), masks)
        assert refined.shape == masks.shape and float(refined.min()) >= 0
        torch.testing.assert_close(refined.sum(1), torch.ones(2, side, side))


def test_normalising_the_image_by_channel_leaves_the_refinement_unchanged():
    generator = torch.Generator().manual_seed(2)
    pixels = 255 * torch.rand(2, 3, SIDE, SIDE, generator=generator)
    masks = torch.randn(2, 3, SIDE, SIDE, generator=generator).softmax(1)
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    normalised = (pixels - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    torch.testing.assert_close(refine_with_pamr(normalised, masks), refine_with_pamr(pixels, masks))
