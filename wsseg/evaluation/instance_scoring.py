"""A run's instance figures, VOC's mAP at IoU 0.5 and 0.7 (`wsseg.evaluation.instance_metrics`), each beside the
connected-components baseline on the same masks (what `wsseg predict --instances` gave before the instance model):

- train: the instance pseudo labels (group-instances), scored as IRN scores them, against the connected regions
  of the pseudo masks they were grouped from, each scored by its class's mean CAM over it;
- val: the instance model (train-instance-heads) against the connected regions of its segmenter's masks, both
  scored by their class's mean probability (`instance_score`), so that the two differ in the grouping alone. The
  masks are the ones the semantic figures score, with the same test-time views.

Images need VOC's SegmentationObject PNGs (the synthetic datasets write them too); the others are counted.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from wsseg.classes import ClassList
from wsseg.data import read_image, read_mask
from wsseg.errors import DataError
from wsseg.evaluation.instance_metrics import InstanceAveragePrecision, ground_truth_instances
from wsseg.serving.instances import connected_components
from wsseg.wsss.instance_labels import read_instances, stored_ids
from wsseg.wsss.pseudo_masks import decode_mask_png, read_cam_file

# metrics.json's headline: (key, section, split, figure)
HEADLINE = (("instance_map50", "instance_model", "val", "map50"), ("instance_map70", "instance_model", "val", "map70"),
            ("connected_components_map50", "connected_components", "val", "map50"),
            ("connected_components_map70", "connected_components", "val", "map70"),
            ("instance_label_map50", "instance_labels", "train", "map50"),
            ("instance_label_map70", "instance_labels", "train", "map70"),
            ("pseudo_mask_components_map50", "pseudo_mask_components", "train", "map50"),
            ("pseudo_mask_components_map70", "pseudo_mask_components", "train", "map70"))


def score_instance_labels(samples, instance_labels, pseudo_masks, cams, classes: ClassList, grouping: dict,
                          strict: bool) -> dict:
    """Train: the instance pseudo labels and the pseudo masks' connected regions."""
    labelled = stored_ids(instance_labels)
    labels_ap, components_ap = InstanceAveragePrecision(len(classes)), InstanceAveragePrecision(len(classes))
    scorable, counts = _with_instances(samples, labelled)
    for sample in tqdm(scorable, desc="evaluate instance labels", unit="img"):
        try:
            truth, void = read_instance_truth(sample)
            instances = read_instances(instance_labels, sample.image_id)
            mask = decode_mask_png(pseudo_masks.get_bytes(f"{sample.image_id}.png"))
            maps, labels = read_cam_file(cams.get_bytes(f"{sample.image_id}.npz"))
            _check_shapes(sample, void.shape, instances.ids.shape, mask.shape, maps.shape[1:])
        except (DataError, ValueError) as error:
            if strict:
                raise DataError(sample.image_path, str(error)) from None
            counts["skipped"] += 1
            continue
        labels_ap.add(list(instances.masks()), truth, void)
        components_ap.add(connected_components(mask, class_scores=dict(zip(labels.tolist(), maps, strict=True)),
                                               min_fragment=grouping["min_fragment"]), truth, void)
        counts["scored"] += 1
    return {"instance_labels": labels_ap.summary(classes.names),
            "pseudo_mask_components": components_ap.summary(classes.names), "counts": counts}


def score_instance_model(model, samples, classes: ClassList, settings: dict, grouping: dict, strict: bool) -> dict:
    """Val: the instance model and its segmenter's connected regions, with the test-time views of `settings`."""
    from wsseg.segmenter.inference import class_probabilities
    from wsseg.wsss.instance_segmentor import segmenter_instances

    model_ap, components_ap = InstanceAveragePrecision(len(classes)), InstanceAveragePrecision(len(classes))
    scorable, counts = _with_instances(samples)
    for sample in tqdm(scorable, desc="evaluate instances", unit="img"):
        try:
            truth, void = read_instance_truth(sample)
            image = read_image(sample.image_path)
            _check_shapes(sample, void.shape, image.shape[:2])
        except DataError:
            if strict:
                raise
            counts["skipped"] += 1
            continue
        probabilities = class_probabilities(model, image, settings["multi_scale"], settings["flip"])
        normalised = (probabilities / probabilities.sum(dim=0, keepdim=True)).numpy()
        model_ap.add(list(segmenter_instances(model, image, probabilities, grouping).masks()), truth, void)
        components_ap.add(connected_components(normalised.argmax(axis=0).astype(np.uint8), class_scores=normalised,
                                               min_fragment=grouping["min_fragment"]), truth, void)
        counts["scored"] += 1
    return {"instance_model": model_ap.summary(classes.names),
            "connected_components": components_ap.summary(classes.names), "counts": counts,
            "multi_scale": settings["multi_scale"], "flip": settings["flip"]}


def instance_headline(figures: dict) -> dict:
    """The headline's instance figures (None where not scored): `figures` maps "train" and "val" to what
    `score_instance_labels` and `score_instance_model` return."""
    headline = {}
    for key, section, split, figure in HEADLINE:
        scored = figures.get(split) or {}
        headline[key] = (scored.get(section) or {}).get(figure)
    return headline


def read_instance_truth(sample) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
    """The sample's ground-truth instances (class, mask) and void pixels."""
    objects, classes = read_mask(sample.object_mask_path), read_mask(sample.mask_path)
    if objects.shape != classes.shape:
        raise DataError(sample.object_mask_path, f"instance mask is {objects.shape}, class mask {classes.shape}")
    return ground_truth_instances(objects, classes)


def _with_instances(samples, ids: set[str] | None = None) -> tuple[list, dict]:
    scorable = [sample for sample in samples if sample.object_mask_path and sample.mask_path
                and (ids is None or sample.image_id in ids)]
    return scorable, dict(scored=0, skipped=0, without_instance_ground_truth=sum(
        1 for sample in samples if not (sample.object_mask_path and sample.mask_path)))


def _check_shapes(sample, *shapes) -> None:
    if len({tuple(shape) for shape in shapes}) > 1:
        sizes = ", ".join(map(str, shapes))
        raise DataError(sample.image_path, f"ground truth and predictions differ in size: {sizes}")
