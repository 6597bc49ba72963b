"""How the refine step chooses its passes' per-class levels, with no pixel label of the training images.

From the CAMs: each class's Otsu thresholds (`wsseg.wsss.thresholds`), then one scale for all of them, the one at which
the edges of the CRF's labelling of a sample of images move least as the scale moves: where a threshold sits on
object edges the CRF snaps to them and small moves change nothing, where it sits in a CAM's smooth halo every move
shifts the boundary. Measured in pixels of edge movement, not in changed pixels, which shrink with the objects as
the threshold rises and led the scan to the highest scales: on the held-out look, 1.88 for affinity's walked CAMs
(masks at 40.60 mIoU, 54.03 at the 1.03 this scan chooses). On the tuning look (train pseudo-mask mIoU at the
chosen scale against the best of the scan) it chose 1.31 for plain CAMs (about 76 against 78.5), 1.48 for ACoL
(about 74 against 75.9), 1.16 for MDC (about 74 against 78.9) and 1.03 for affinity's (about 78.7 against 79.1;
walked maps then scaled each by its own maximum). With the walk's one maximum and β 12 it chose 1.16 for
affinity's walked CAMs on both looks (masks 84.92 and 59.34).
With `calibration`: the scale whose pseudo masks score best on the named pixel-labelled images instead.

Neither grows with the dataset: the histograms are counts the CAMs' writer summed over its shards
(`cam_statistics.json`, read back from the CAM files only where a store lacks it), and the scan and the calibration
label a fixed number of images, whose annotations alone are read (the split's list of ids and the CAM store's
listing name the others).
"""
from __future__ import annotations

import json

import numpy as np
from tqdm import tqdm

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data import load_samples, read_image, read_mask
from wsseg.data.dataset import split_positions
from wsseg.data.samples import Sample
from wsseg.errors import ConfigError, DataError
from wsseg.evaluation.metrics import ConfusionMatrix
from wsseg.runtime.read_ahead import read_ahead
from wsseg.wsss.pseudo_masks import read_cam_file
from wsseg.wsss.refinement import Refinement, foreground_pass, refine_image
from wsseg.wsss.thresholds import CALIBRATION_SCALES, CAM_STATISTICS, CamHistograms, PassLevels, most_stable_scale

# Images the stability scan labels at every scale: enough for the mean change to settle, few enough to take
# seconds on a CPU.
STABILITY_SAMPLE = 60
# CAM files read at once where a store has no summed histograms.
CAM_READERS = 8


def choose_levels(data_root, cams, config: dict, classes: ClassList) -> PassLevels:
    """The passes' levels for the train images of `data_root` with CAMs in `cams`."""
    settings, num_classes = config["crf"], len(classes)
    if settings["background"] == "constant":
        return PassLevels(dict.fromkeys(range(1, num_classes), settings["confident_fg_threshold"]),
                          dict.fromkeys(range(1, num_classes), settings["confident_bg_threshold"]), "config")
    with_cams = {key.removesuffix(".npz") for key in cams.list() if key.endswith(".npz")}
    train_ids = list(split_positions(data_root, "train", classes))
    mined = [image_id for image_id in train_ids if image_id in with_cams]
    levels = cam_histograms(mined, cams, num_classes).levels()
    refinement = Refinement(settings, levels, config["working_size"])
    if settings["calibration"]:
        return calibrate(levels, _calibration_samples(settings["calibration"], data_root, classes, set(mined)), cams,
                         refinement, num_classes)
    scanned = set(_evenly_spaced(mined, STABILITY_SAMPLE))
    return stabilised(levels, load_samples(data_root, "train", classes, keep=scanned.__contains__), cams, refinement)


def stabilised(levels: PassLevels, samples: list[Sample], cams, refinement: Refinement) -> PassLevels:
    """`levels` scaled to where the foreground pass's labelling of `samples` is most stable."""
    images = [loaded for loaded in (_readable(sample, cams) for sample in samples) if loaded]

    def labellings(scale: float) -> list[np.ndarray]:
        scaled = Refinement(refinement.settings, levels.scaled(scale), refinement.working_size)
        return [foreground_pass(image, image_cams, labels, scaled) for image, image_cams, labels in images]

    scale, shifts = most_stable_scale(labellings)
    scaled = levels.scaled(scale)
    return PassLevels(scaled.foreground, scaled.background, "cams",
                      {**levels.details, "scale": round(scale, 3), "images_scanned": len(images),
                       "edge_shift_by_scale": shifts})


def calibrate(levels: PassLevels, samples: list[Sample], cams, refinement: Refinement,
              num_classes: int) -> PassLevels:
    """`levels` scaled by the factor whose pseudo masks score best against the calibration images' pixel
    labels (uncertain pixels counted as background, as the evaluation's headline figure counts them)."""
    images = [(read_image(s.image_path), *read_cam_file(cams.get_bytes(f"{s.image_id}.npz")), read_mask(s.mask_path))
              for s in samples]
    scores = {}
    for scale in tqdm(CALIBRATION_SCALES, desc="calibration", unit="scale"):
        matrix = ConfusionMatrix(num_classes)
        scaled = Refinement(refinement.settings, levels.scaled(scale), refinement.working_size)
        for image, image_cams, labels, truth in images:
            mask = refine_image(image, image_cams, labels, scaled)
            matrix.update(np.where(mask == IGNORE_INDEX, 0, mask), truth)
        scores[scale] = round(100 * matrix.miou(), 2)
    best = max(scores, key=scores.get)
    scaled = levels.scaled(best)
    return PassLevels(scaled.foreground, scaled.background, "calibration",
                      {"images": [s.image_id for s in samples], "scale": best, "miou_by_scale": scores,
                       "scaled": levels.details})


def cam_histograms(image_ids: list[str], cams, num_classes: int) -> CamHistograms:
    """The histograms of the CAMs of `image_ids`: the ones the CAMs' writer summed, where they count these images,
    else read from the CAM files."""
    if cams.exists(CAM_STATISTICS):
        stored = CamHistograms.from_json(json.loads(cams.get_bytes(CAM_STATISTICS)))
        if stored.images == len(image_ids) and len(stored.counts) == num_classes:
            return stored
    histograms = CamHistograms(num_classes)
    read = read_ahead(lambda image_id: read_cam_file(cams.get_bytes(f"{image_id}.npz")), image_ids, CAM_READERS)
    for _, outcome in tqdm(read, total=len(image_ids), desc="CAM histograms", unit="img"):
        if isinstance(outcome, ValueError):
            continue  # the refining pass skips and counts the same file
        if isinstance(outcome, Exception):
            raise outcome
        histograms.add(*outcome)
    return histograms


def _readable(sample: Sample, cams) -> tuple | None:
    """(image, CAMs, labels), or None for an image or CAM file the refining pass will skip and count."""
    try:
        return read_image(sample.image_path), *read_cam_file(cams.get_bytes(f"{sample.image_id}.npz"))
    except (DataError, ValueError):
        return None


def _evenly_spaced(image_ids: list[str], count: int) -> list[str]:
    if len(image_ids) <= count:
        return list(image_ids)
    return [image_ids[round(i * (len(image_ids) - 1) / (count - 1))] for i in range(count)]


def _calibration_samples(image_ids: list[str], data_root, classes: ClassList, mined: set[str]) -> list[Sample]:
    """The train samples `image_ids` names (their annotations alone read) that have CAMs, in that order."""
    by_id = {sample.image_id: sample
             for sample in load_samples(data_root, "train", classes, keep=set(image_ids).__contains__)}
    unknown = [image_id for image_id in image_ids if image_id not in by_id]
    if unknown:
        raise ConfigError(f"crf.calibration names images that are not in the train split: {', '.join(unknown)}")
    unlabelled = [image_id for image_id in image_ids if by_id[image_id].mask_path is None]
    if unlabelled:
        raise ConfigError(f"crf.calibration names images without a pixel-label mask: {', '.join(unlabelled)}")
    return [by_id[image_id] for image_id in image_ids if image_id in mined]
