"""segmenter.mode band: the masks' uncertain pixels learn that their class is the background or one of the
image's labels (wsseg.wsss.band)."""
from __future__ import annotations

import numpy as np
import torch

from wsseg.classes import IGNORE_INDEX
from wsseg.config import default_config
from wsseg.segmenter.configs import build_mmseg_config
from wsseg.wsss.band import band_loss

CLASSES = 4


def candidates_of(*labels: int) -> torch.Tensor:
    row = torch.zeros(1, CLASSES, dtype=torch.bool)
    row[0, [0, *labels]] = True
    return row


def test_band_loss_is_minus_the_log_of_the_candidates_mass_averaged_over_the_image():
    logits = torch.tensor([1.0, -0.5, 2.0, 0.3])[None, :, None, None].repeat(1, 1, 2, 2)
    masks = torch.tensor([[[IGNORE_INDEX, 0], [IGNORE_INDEX, 1]]])
    probabilities = np.exp([1.0, -0.5, 2.0, 0.3]) / np.exp([1.0, -0.5, 2.0, 0.3]).sum()
    # two band pixels of four, each with the candidates' mass of the background and class 1
    expected = -2 * np.log(probabilities[0] + probabilities[1]) / 4

    loss = band_loss(logits, masks, candidates_of(1), torch.ones(1, 2, 2, dtype=torch.bool))

    assert abs(loss.item() - expected) < 1e-5


def test_band_loss_reads_neither_the_labelled_pixels_nor_the_padding():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, CLASSES, 4, 4, generator=generator)
    masks = torch.full((1, 4, 4), IGNORE_INDEX)
    masks[:, :2] = 2  # labelled rows
    in_image = torch.ones(1, 4, 4, dtype=torch.bool)
    in_image[:, :, 3] = False  # padding: 255 too, outside the image
    loss = band_loss(logits, masks, candidates_of(2), in_image)

    elsewhere = logits.clone()
    elsewhere[:, :, :2] = torch.randn(1, CLASSES, 2, 4, generator=generator)
    elsewhere[:, :, :, 3] = torch.randn(1, CLASSES, 4, generator=generator)
    band = logits.clone()
    band[:, :, 2, 0] += torch.tensor([0.0, 3.0, 0.0, 0.0])

    assert torch.isclose(band_loss(elsewhere, masks, candidates_of(2), in_image), loss)
    assert band_loss(band, masks, candidates_of(2), in_image) > loss


def test_band_loss_lowers_every_class_the_image_does_not_show_and_raises_its_own():
    logits = torch.zeros(1, CLASSES, 1, 1, requires_grad=True)
    band_loss(logits, torch.full((1, 1, 1), IGNORE_INDEX), candidates_of(3), torch.ones(1, 1, 1, dtype=torch.bool)
              ).backward()
    descent = -logits.grad[0, :, 0, 0]

    assert descent[0] > 0 and descent[3] > 0
    assert descent[1] < 0 and descent[2] < 0


def band_settings(**changes) -> dict:
    return dict(default_config("cpu-tiny")["segmenter"], mode="band", **changes)


def test_band_segmentor_trains_the_band_toward_the_image_labels_where_cross_entropy_has_nothing(classes):
    """Masks that are all band give cross-entropy no pixel; the band's loss alone moves the decode head, and its
    steps raise the probability of the background and the image's classes on the band."""
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(0)
    config = build_mmseg_config(band_settings(), classes, dict(train=dict(type="WssegDataset")), "work", "out",
                                distributed=False, cuda=False, seed=0)
    assert config.model.type == "BandSegmentor"
    model = MODELS.build(config.model)
    model.init_weights()
    labels = ((12,), (5, 7))
    samples = []
    for image_labels in labels:
        sample = SegDataSample(metainfo=dict(image_labels=image_labels, img_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.full((1, 64, 64), IGNORE_INDEX, dtype=torch.long))
        samples.append(sample)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    candidates = torch.zeros(2, len(classes), dtype=torch.bool)
    candidates[:, 0] = True
    for row, image_labels in zip(candidates, labels, strict=True):
        row[list(image_labels)] = True

    def candidates_mass() -> float:
        model.eval()
        with torch.no_grad():
            probabilities = model.decode_head(model.extract_feat(images)).softmax(1)
        model.train()
        return (probabilities * candidates[:, :, None, None]).sum(1).mean().item()

    before = candidates_mass()
    optimizer = torch.optim.SGD(model.decode_head.parameters(), lr=0.5)
    for _ in range(5):
        losses = model.loss(images, samples)
        assert losses["decode.loss_ce"].item() == 0 and losses["decode.loss_band"].item() > 0
        optimizer.zero_grad()
        losses["decode.loss_band"].backward()
        optimizer.step()

    assert candidates_mass() > before + 0.1


def test_the_batchs_padding_is_not_band():
    """mmseg's data preprocessor pads a smaller image below and right with 255, the band's label."""
    from mmseg.structures import SegDataSample

    from wsseg.wsss.band import pixels_in_image

    samples = [SegDataSample(metainfo=dict(img_shape=shape)) for shape in ((40, 50), (64, 64))]
    inside = pixels_in_image(samples, torch.full((2, 64, 64), IGNORE_INDEX))

    assert inside[0, :40, :50].all() and not inside[0, 40:].any() and not inside[0, :, 50:].any()
    assert inside[1].all()
