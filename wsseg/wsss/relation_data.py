"""Training crops for IRN's branches: an image and its label map (a pseudo mask, or instance numbers) together.

Each image is scaled by its base scale (the working size for IRNet on the classifier, the segmenter's input scale
for the instance heads) times a random factor (IRN: 0.5-1.5), flipped half the time and cropped to S×S, padded
with `fill` and the labels with 255 (unknown), as IRN's affinity dataset does. Labels stay at the crop's full
resolution; the losses read them at the branches' grid (`labels_on_grid`).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from wsseg.data import read_image
from wsseg.store import ArtifactStore
from wsseg.wsss.pseudo_masks import decode_mask_png
from wsseg.wsss.training import random_crop, uniform


class RelationCrops(Dataset):
    """(3, S, S) float RGB in 0..255 and its (S, S) int64 labels, per sample; `labels` holds `<image_id>.png`
    and `base_scales` one factor per sample."""

    def __init__(self, samples: list, labels: ArtifactStore, base_scales: list[float], settings: dict,
                 fill: np.ndarray):
        self.samples, self.labels, self.base_scales = samples, labels, base_scales
        self.crop_size, self.scale_range, self.fill = settings["crop_size"], settings["scale_range"], fill

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = read_image(sample.image_path)
        labels = decode_mask_png(self.labels.get_bytes(f"{sample.image_id}.png"))
        scale = self.base_scales[index] * uniform(*self.scale_range)
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.float32)
        labels = np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))
        if uniform(0, 1) < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        image, labels = random_crop(image, self.crop_size, self.fill, labels)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(labels)).long())
