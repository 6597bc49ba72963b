"""Self-training over the uncertain band: the pseudo masks' unlabelled pixels labelled by a segmenter that was
trained on the rest of them.

Refine leaves 255 where its two CRF passes disagree, and a segmenter trained on those masks learns from the
confident pixels alone. Where a CAM fires on a part of its object, most of the object falls in the band, and
that class is left with too few pixels: the segmenter under-predicts it. A first segmenter, trained on the
confident pixels, generalises from them to the band; its labels there, restricted to the background and the
image's own classes (its image-level labels, which the method is given), complete the masks a second segmenter
trains on. This is one round of Simple Does It's recursive training (Khoreva et al., CVPR'17: a network's
outputs, kept within the weak annotation, are the next round's labels), with the image labels as the annotation
and only the band relabelled: the confident pixels keep their labels. No pixel label is read.
"""
from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np
import torch
from tqdm import tqdm

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data import load_samples, read_image
from wsseg.errors import DataError
from wsseg.store import ArtifactStore
from wsseg.wsss.pseudo_masks import decode_mask_png, encode_mask_png

log = logging.getLogger(__name__)

BACKGROUND = 0
# The first segmenter and the pseudo masks it completed, inside train-segmenter's output store.
FIRST_ROUND, RELABELLED = "first-round", "relabelled"


def fill_band(mask: np.ndarray, probabilities: np.ndarray, image_labels) -> np.ndarray:
    """`mask` (H, W) with each 255 pixel given the most probable of the background and `image_labels` under
    `probabilities` (K, H, W); the other pixels keep their labels."""
    allowed = np.array(sorted({BACKGROUND, *image_labels}))
    choice = allowed[probabilities[allowed].argmax(axis=0)]
    return np.where(mask == IGNORE_INDEX, choice, mask).astype(np.uint8)


def relabel_band(data_root, masks: ArtifactStore, segmenter: ArtifactStore, out: ArtifactStore,
                 classes: ClassList, tta: dict, strict: bool = False) -> dict:
    """Every train image's pseudo mask from `masks` into `out` with its band labelled by the segmenter stored in
    `segmenter` (with the test-time augmentation `tta`: multi_scale, flip). Masks already in `out` are kept, so a
    re-run resumes."""
    from wsseg.segmenter.inference import class_probabilities, load_segmenter

    done, with_masks = set(out.list()), set(masks.list())
    samples = [sample for sample in load_samples(data_root, "train", classes)
               if f"{sample.image_id}.png" in with_masks and f"{sample.image_id}.png" not in done]
    model = load_segmenter(segmenter, "cuda" if torch.cuda.is_available() else "cpu")
    counts, started = Counter(relabelled=0, without_band=0, skipped=0, band_pixels=0), time.perf_counter()
    for sample in tqdm(samples, desc="relabel band", unit="img"):
        key = f"{sample.image_id}.png"
        mask = decode_mask_png(masks.get_bytes(key))
        band = int(np.count_nonzero(mask == IGNORE_INDEX))
        if band:
            try:
                image = read_image(sample.image_path)
            except DataError as error:
                if strict:
                    raise
                log.warning("relabel band: skipped %s: %s", sample.image_id, error)
                counts["skipped"] += 1
                continue
            probabilities = class_probabilities(model, image, **tta).numpy()
            mask = fill_band(mask, probabilities, sample.labels)
        out.put_bytes(key, encode_mask_png(mask))
        counts["relabelled" if band else "without_band"] += 1
        counts["band_pixels"] += band
    summary = dict(counts, already_done=len(done & with_masks), seconds=round(time.perf_counter() - started, 1))
    log.info("relabel band: %d masks relabelled (%d band pixels), %d without a band, %d skipped -> %s",
             counts["relabelled"], counts["band_pixels"], counts["without_band"], counts["skipped"], out.uri)
    return summary


def relabelled_masks(segmenter: ArtifactStore) -> ArtifactStore:
    """Where a self-trained segmenter's store holds the completed masks its model trained on (empty for a
    segmenter trained once)."""
    return segmenter.child(RELABELLED)
