"""A segmenter's predictions scored against the ground truth, shared by the evaluate step and an incremental step.

`read_ground_truth` reads a sample's mask and checks it against its image's size; `segmenter_matrix` is the
confusion matrix of a model's predictions over a split's images with masks (read ahead in threads, an unreadable
image skipped and counted, or raised with `strict`); `score_seen_classes` gives an incremental step's old/new/all
mIoU of a segmenter on the held-out split (the promotion gate's figures).
"""
from __future__ import annotations

from functools import partial

import numpy as np
from tqdm import tqdm

from wsseg.classes import ClassList
from wsseg.errors import ConfigError, DataError
from wsseg.evaluation.metrics import ConfusionMatrix, incremental_mious, unseen_as_background
from wsseg.runtime.read_ahead import read_ahead


class GroundTruthSizeError(DataError):
    """A mask whose size differs from its image's: a broken dataset that stops evaluation, even when lenient."""


def read_ground_truth(sample) -> np.ndarray:
    """The sample's mask, checked against its image's size."""
    from wsseg.data import read_mask
    from wsseg.data.images import image_size

    mask = read_mask(sample.mask_path)
    width, height = image_size(sample.image_path)
    if mask.shape != (height, width):
        raise GroundTruthSizeError(sample.mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but image "
                                          f"{sample.image_path} is {width}x{height}")
    return mask


def load_model(segmenter):
    """The segmenter train-segmenter stored in the store `segmenter`, or None without one."""
    if segmenter is None:
        return None
    from wsseg.segmenter.inference import load_segmenter

    return load_segmenter(segmenter)


def predict_mask(model, image: np.ndarray, settings: dict) -> np.ndarray:
    """The model's mask of an image, with the test-time augmentation of the `evaluate` section `settings`."""
    from wsseg.segmenter.inference import predict

    return predict(model, image, multi_scale=settings["multi_scale"], flip=settings["flip"])


def score_seen_classes(segmenter, samples, seen: ClassList, num_old: int, settings: dict,
                       strict: bool = False) -> dict:
    """An incremental step's figures for the segmenter in the store `segmenter` on `samples` (a held-out split with
    masks): `old_miou`, `new_miou` and `all_miou` (`wsseg.evaluation.metrics.incremental_mious`) over the classes
    `seen` so far, of which the first `num_old` foreground ones are old; classes not seen yet count as background
    (MiB's protocol); with the per-class IoU and the confusion counts they come from. A model that knows fewer
    classes (the current one, before the step) is scored on the same classes, so its figures and a candidate's
    compare."""
    model = load_model(segmenter)
    matrix, scored, skipped = segmenter_matrix(model, samples, len(seen), settings, strict,
                                               partial(unseen_as_background, num_seen=len(seen)))
    if not scored:
        raise ConfigError(f"no held-out image with a mask to score {segmenter.uri} on ({skipped} skipped); give a "
                          "dataset whose val split has masks (VOC's SegmentationClass, a manifest's mask column)")
    per_class = matrix.summary(seen.names)["per_class"]
    return {**incremental_mious(matrix, num_old), "per_class_iou": {name: figures["iou"] for name, figures in
                                                                   per_class.items()},
            "scored_images": scored, "skipped_images": skipped, "confusion_matrix": matrix.record(seen.names)}


def segmenter_matrix(model, samples, num_classes: int, settings: dict, strict: bool, ground_truth_of=None):
    """The confusion matrix of the model's predictions on the samples with masks (each mask through
    `ground_truth_of` where given), the images scored and those skipped as unreadable."""
    matrix, scored, skipped = ConfusionMatrix(num_classes), 0, 0
    labelled = [sample for sample in samples if sample.mask_path is not None]
    for _, outcome in tqdm(read_ahead(_read_val_image, labelled, settings["read_threads"]), total=len(labelled),
                           desc="evaluate val", unit="img"):
        try:
            image, ground_truth = unless_error(outcome)
        except GroundTruthSizeError:
            raise
        except DataError:
            if strict:
                raise
            skipped += 1
            continue
        if ground_truth_of is not None:
            ground_truth = ground_truth_of(ground_truth)
        matrix.update(predict_mask(model, image, settings), ground_truth)
        scored += 1
    return matrix, scored, skipped


def _read_val_image(sample) -> tuple[np.ndarray, np.ndarray]:
    from wsseg.data import read_image

    ground_truth = read_ground_truth(sample)
    return read_image(sample.image_path), ground_truth


def unless_error(outcome):
    """A read-ahead outcome's data, or its error raised here, in the scoring loop that decides about it."""
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
