"""SEC (Kolesnikov & Lampert, ECCV'16) as the segmenter's "sec" mode: its three losses on small hand-made score
maps, the registered segmentor, and a few iterations of real training on the tiny synthetic VOC set."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from wsseg.classes import IGNORE_INDEX, voc_palette
from wsseg.config import default_config
from wsseg.data import load_samples
from wsseg.errors import ConfigError
from wsseg.segmenter.configs import SEC_CRF, build_mmseg_config, metainfo, sec_train_pipeline
from wsseg.store import open_store
from wsseg.wsss.crf import CrfParams
from wsseg.wsss.sec import (
    constrain_loss,
    crf_targets,
    expand_loss,
    floored,
    global_weighted_rank_pooling,
    scaled_decay,
    seed_loss,
)

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIDE = 16
# SEC's decays, on a 16x16 grid.
PRESENT, ABSENT, BACKGROUND = (scaled_decay(decay, SIDE * SIDE, 41 * 41) for decay in (0.996, 0.0, 0.999))


def sec_settings(**changes) -> dict:
    return dict(default_config("cpu-tiny")["segmenter"], mode="sec", **changes)


def square_mask(side: int, corner: int = 2, grid: int = SIDE) -> np.ndarray:
    mask = np.zeros((grid, grid), bool)
    mask[corner:corner + side, corner:corner + side] = True
    return mask


def scores(object_mask: np.ndarray, stray_mask: np.ndarray | None = None) -> torch.Tensor:
    """(1, 3, H, W) probabilities: class 1 confident on `object_mask`, class 2 on `stray_mask`, background
    elsewhere."""
    probabilities = np.full((3, *object_mask.shape), 0.05, np.float32)
    probabilities[1][object_mask] = 0.9
    if stray_mask is not None:
        probabilities[2][stray_mask] = 0.9
    probabilities[0] = 1 - probabilities[1:].sum(axis=0)
    return torch.from_numpy(probabilities)[None]


def expand(probabilities: torch.Tensor) -> torch.Tensor:
    """The expand loss of an image labelled with class 1 only."""
    present = torch.tensor([[True, True, False]])
    return expand_loss(probabilities, present, torch.tensor([[BACKGROUND, PRESENT, ABSENT]]))


def test_rank_pooling_is_max_pooling_at_decay_0_the_mean_at_1_and_between_otherwise():
    values = torch.rand(4, 50, generator=torch.Generator().manual_seed(0))
    decays = torch.tensor([0.0, 1.0, 0.9, 0.996])
    pooled = global_weighted_rank_pooling(values, decays)
    torch.testing.assert_close(pooled[0], values[0].max())
    torch.testing.assert_close(pooled[1], values[1].mean())
    for row in (2, 3):
        assert values[row].mean() < pooled[row] < values[row].max()
    # A smaller decay leans further towards the highest scores.
    assert global_weighted_rank_pooling(values[2], torch.tensor(0.5)) > pooled[2]


def test_scaled_decay_pools_an_image_and_its_pixel_replicated_double_to_the_same_value():
    probabilities = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1))
    doubled = probabilities.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    pooled = [global_weighted_rank_pooling(image.flatten(1), torch.tensor([scaled_decay(0.996, image[0].numel(),
                                                                                        41 * 41)]))
              for image in (probabilities, doubled)]
    torch.testing.assert_close(pooled[0], pooled[1])
    assert scaled_decay(0.0, 256, 41 * 41) == 0.0 and scaled_decay(0.996, 41 * 41, 41 * 41) == 0.996


def test_expand_loss_falls_as_a_present_class_covers_more_pixels():
    losses = [float(expand(scores(square_mask(side)))) for side in (2, 5, 9)]
    assert losses[0] > losses[1] > losses[2]


def test_expand_loss_pushes_an_absent_class_down_where_it_peaks():
    clean = scores(square_mask(6))
    stray = scores(square_mask(6), stray_mask=square_mask(1, corner=12)).requires_grad_()
    loss = expand(stray)
    assert float(loss) > float(expand(clean))
    loss.backward()
    # Max pooling (d = 0): only the absent class's strongest pixel is pushed, and pushed down.
    absent_gradient = stray.grad[0, 2]
    assert absent_gradient[12, 12] > 0
    assert (absent_gradient[~square_mask(1, corner=12)] == 0).all()


def test_seed_loss_ignores_255_and_counts_background_seeds():
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    seeds = torch.full((2, 8, 8), IGNORE_INDEX)
    seeds[:, :2] = 0  # background seeds
    seeds[:, 5:, 5:] = 1
    loss = seed_loss(floored(logits.softmax(1)), seeds)
    log_probabilities = floored(logits.softmax(1)).log()
    expected = torch.stack([-log_probabilities[image].gather(0, seeds[image].clamp(max=2)[None])[0][
        seeds[image] != IGNORE_INDEX].mean() for image in range(2)]).mean()
    torch.testing.assert_close(loss, expected)

    anything_on_unseeded = logits.clone()
    anything_on_unseeded[:, :, 3:5] = 50 * torch.randn(2, 3, 2, 8)
    torch.testing.assert_close(seed_loss(floored(anything_on_unseeded.softmax(1)), seeds), loss)
    object_on_background_seeds = logits.clone()
    object_on_background_seeds[:, 1, :2] = 20.0
    assert seed_loss(floored(object_on_background_seeds.softmax(1)), seeds) > loss + 1


def test_crf_target_moves_a_blurry_prediction_toward_the_image_edge():
    shape = square_mask(12, corner=10, grid=32)
    image = np.where(shape[..., None], [200, 40, 40], [40, 40, 200]).astype(np.uint8)
    blurry = np.clip(cv2.GaussianBlur(shape.astype(np.float32), (0, 0), 3.0), 0.02, 0.98)
    prediction = floored(torch.from_numpy(np.stack([1 - blurry, blurry]))[None])
    target = crf_targets(image[None], prediction, CrfParams.from_config(SEC_CRF))
    truth = torch.from_numpy(shape.astype(np.int64))[None, None]

    def kl_from_truth(probabilities: torch.Tensor) -> float:
        # KL(one-hot truth || p) is -log p of the true class.
        return float(-probabilities.gather(1, truth).log().mean())

    assert kl_from_truth(target) < 0.5 * kl_from_truth(prediction)
    # The constrain loss pulls the prediction toward that target, and vanishes once it is there.
    assert float(constrain_loss(prediction, target)) > 0.05
    assert abs(float(constrain_loss(target, target))) < 1e-6
    assert (target.argmax(1) == truth[:, 0]).float().mean() > (prediction.argmax(1) == truth[:, 0]).float().mean()


def test_sec_segmentor_reports_the_three_losses_and_the_constrain_loss_trains_the_decode_head(classes):
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    config = build_mmseg_config(sec_settings(), classes, dict(train=dict(type="WssegDataset")), "work", "out",
                                distributed=False, cuda=False, seed=0)
    model = MODELS.build(config.model)
    samples = []
    for labels in ((1,), (2, 7)):
        sample = SegDataSample(metainfo=dict(image_labels=labels, img_shape=(64, 64), pad_shape=(64, 64)))
        mask = torch.zeros(1, 64, 64, dtype=torch.long)
        mask[:, 20:40, 20:40] = labels[0]
        mask[:, :10] = IGNORE_INDEX
        sample.gt_sem_seg = PixelData(data=mask)
        samples.append(sample)
    losses = model.loss(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)), samples)

    assert {"loss_seed", "loss_expand", "loss_constrain"} <= set(losses)
    assert "decode.loss_ce" not in losses
    assert all(torch.isfinite(losses[name]) and losses[name] > 0
               for name in ("loss_seed", "loss_expand", "loss_constrain"))
    losses["loss_constrain"].backward()
    gradient = model.decode_head.conv_seg.weight.grad
    assert gradient is not None and gradient.abs().sum() > 0


def test_sec_training_pipeline_packs_the_annotated_labels_not_the_masks(tiny_voc, classes, tmp_path):
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules()
    samples = load_samples(tiny_voc, "train", classes)
    masks = open_store(tmp_path / "masks")
    for sample in samples:  # masks holding nothing but background seeds and uncertain pixels
        mask = Image.fromarray(np.where(np.arange(64)[:, None] < 32, 0, IGNORE_INDEX).astype(np.uint8)
                               .repeat(64, axis=1), mode="P")
        mask.putpalette(voc_palette())
        with masks.open_write(f"{sample.image_id}.png") as file:
            mask.save(file, format="PNG")
    dataset = DATASETS.build(dict(type="WssegDataset", dataset_root=str(tiny_voc), split="train",
                                  mask_store=masks.uri,
                                  metainfo=metainfo(classes), pipeline=sec_train_pipeline((32, 32), {})))
    labels = {str(sample.image_path): sample.labels for sample in samples}
    for index in range(len(dataset)):
        packed = dataset[index]["data_samples"]
        assert packed.img_shape == (32, 32)
        assert tuple(packed.metainfo["image_labels"]) == labels[packed.img_path] != ()


def test_standard_mode_config_has_no_sec_segmentor_and_no_label_meta_keys(classes):
    settings = default_config("cpu-tiny")["segmenter"]
    assert settings["mode"] == "standard"
    datasets = dict(train=dict(type="WssegDataset", dataset_root="voc"))
    text = build_mmseg_config(settings, classes, datasets, "work", "out", distributed=False, cuda=False,
                              seed=0).pretty_text
    assert "SECSegmentor" not in text and "image_labels" not in text and "custom_imports" not in text
    with pytest.raises(ConfigError, match="segmenter.mode"):
        build_mmseg_config(dict(settings, mode="seed"), classes, datasets, "work", "out", distributed=False,
                           cuda=False, seed=0)
