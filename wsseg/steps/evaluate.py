"""evaluate: mIoU of each stage of the pipeline, and a report a person can read.

(a) the CAMs on train, at the background threshold that scores best (swept in one pass over the images, as
IRN's eval_cam does); (b) the pseudo masks on train, and the masks a self-trained segmenter completed from them
(`wsseg.wsss.self_training`), which it trained on; (c) the segmenter on val. Pseudo masks and final models
are scored on different splits on purpose: the papers report pseudo-mask quality on train, models on val.
The segmenter's scoring is `wsseg.evaluation.scoring`'s, which also gives an incremental step's old/new/all mIoU.
Given the instance steps' outputs (`instances.enabled`), (d) VOC's instance mAP of the instance pseudo labels on
train and of the instance model on val, each beside connected components (`wsseg.evaluation.instance_scoring`).

Every figure comes from confusion counts, which add up: split into shards, each task scores its slice of train
and val and keeps its counts (and the overlays of its first images) in `shards/<k>-of-<N>/scores.json`;
`merge_evaluation` sums them, keeps the overlays of the first images of the whole split, and writes the metrics
and reports, the same for any number of shards.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import numpy as np
from tqdm import tqdm

from wsseg.classes import ClassList
from wsseg.data.images import decode_problem
from wsseg.errors import ConfigError, DataError
from wsseg.evaluation.instance_scoring import instance_headline, score_instance_labels, score_instance_model
from wsseg.evaluation.metrics import ConfusionMatrix
from wsseg.evaluation.overlays import segmenter_overlays, store_overlays
from wsseg.evaluation.report import Overlay, cam_heatmap, colorize, overlay_strip, render_html, render_markdown
from wsseg.evaluation.scoring import (
    GroundTruthSizeError,
    load_model,
    predict_mask,
    read_ground_truth,
    segmenter_matrix,
    unless_error,
)
from wsseg.evaluation.train_scores import TrainScores
from wsseg.runtime.read_ahead import read_ahead
from wsseg.runtime.shards import WHOLE, Shard, shard_records, write_shard_record
from wsseg.steps.refine import THRESHOLDS
from wsseg.wsss.pseudo_masks import decode_mask_png, read_cam_file
from wsseg.wsss.self_training import relabelled_masks


def default_config(preset: str) -> dict:
    return {
        "cam_thresholds": [round(0.05 * step, 2) for step in range(1, 13)],  # 0.05 .. 0.60
        # Test-time augmentation, as the WSSS literature reports its segmenters; cpu-tiny, the tests' preset, skips it.
        "multi_scale": preset != "cpu-tiny",
        "flip": preset != "cpu-tiny",
        "overlays": 6,
        "upper_bound_miou": None,  # the fully supervised model's val mIoU, to show the ratio
        # Threads decoding the next images while one is scored (wsseg.runtime.read_ahead); 0: in line.
        "read_threads": 2,
    }


SCORES = "scores.json"


def evaluate(data_root, cams, pseudo_masks, segmenter, out, config: dict, classes: ClassList,
             strict: bool = False, shard: Shard | None = None, instance_labels=None, instances=None) -> dict:
    """Score the stages whose stores are given and write metrics and report to `out` (the headline figures); with
    `shard`, score its slice and keep its counts (their summary).

    Without CAMs (the supervised upper bound) only the segmenter is scored.
    """
    if instance_labels is not None and (cams is None or pseudo_masks is None):
        raise ConfigError(f"evaluate: the instance labels in {instance_labels.uri} are scored beside the connected "
                          "regions of the pseudo masks they were grouped from; give --cams and --pseudo-masks too")
    counts = score_shard(data_root, cams, pseudo_masks, segmenter, out, config, classes, strict, shard or WHOLE)
    if shard:
        return counts
    headline = merge_evaluation(pseudo_masks, out, config, classes, WHOLE.count)
    if instance_labels is None and instances is None:
        return headline
    return add_instance_figures(data_root, cams, pseudo_masks, instance_labels, instances, out, config, classes,
                                strict)


def score_shard(data_root, cams, pseudo_masks, segmenter, out, config: dict, classes: ClassList, strict: bool,
                shard: Shard) -> dict:
    """Score `shard`'s slice of train (CAMs, pseudo masks) and val (the segmenter); keep the counts."""
    from wsseg.data import load_samples
    from wsseg.data.dataset import split_positions

    if pseudo_masks is not None and cams is None:
        raise ConfigError(f"evaluate: the pseudo masks in {pseudo_masks.uri} are scored in the pass over the "
                          "train images' CAMs; give the CAM store too (--cams, the store mine-cams wrote)")
    settings = config["evaluate"]
    model = load_model(segmenter)
    relabelled = relabelled_masks(segmenter) if segmenter is not None and pseudo_masks is not None else None
    scores = TrainScores(len(classes), settings["cam_thresholds"], pseudo_masks is not None)
    counts, overlays, matrix = {}, [], None
    if cams is not None:
        counts, overlays = _score_train(load_samples(data_root, "train", classes, keep=shard.holds),
                                        split_positions(data_root, "train", classes), cams,
                                        MaskSources(pseudo_masks, relabelled), model, scores, out, settings, strict)
    if model is not None:
        val = load_samples(data_root, "val", classes, keep=shard.holds)
        matrix, counts["val_scored"], counts["val_skipped"] = segmenter_matrix(model, val, len(classes), settings,
                                                                                strict)
        if cams is None:
            positions = split_positions(data_root, "val", classes)
            found = segmenter_overlays(val, [("prediction", model)], settings, settings["overlays"])
            store_overlays(out, found)
            overlays = [(positions[overlay.image_id], overlay) for overlay in found]
    write_shard_record(out, shard, SCORES, {
        "counts": counts, "train": scores.to_json(), "segmenter": None if matrix is None else matrix.counts.tolist(),
        "overlays": [{"position": position, "image_id": overlay.image_id, "panels": list(overlay.panels)}
                     for position, overlay in overlays]})
    return counts


def merge_evaluation(pseudo_masks, out, config: dict, classes: ClassList, shards: int) -> dict:
    """The step's metrics and reports from its `shards` shards' counts; the headline figures."""
    settings = config["evaluate"]
    records = shard_records(out, shards, SCORES)
    scores = TrainScores.merged([TrainScores.from_json(record["train"]) for record in records])
    counts = {key: sum(record["counts"][key] for record in records) for key in records[0]["counts"]}
    segmenter_summary, confusion_matrices = None, scores.confusion_matrices(classes.names)
    if records[0]["segmenter"] is not None:
        matrix = ConfusionMatrix(len(classes))
        matrix.counts = sum(np.asarray(record["segmenter"], np.int64) for record in records)
        segmenter_summary = _segmenter_summary(matrix, classes, settings)
        confusion_matrices["segmenter"] = matrix.record(classes.names)
    overlays = _first_overlays(out, records, settings["overlays"])
    metrics = scores.metrics(classes, segmenter_summary, settings["upper_bound_miou"], counts)
    # Beside the figures: the counts they came from, for the report's heat maps and later readers, and which
    # overlays the report shows.
    metrics["confusion_matrices"] = confusion_matrices
    metrics["overlays"] = [{"image_id": overlay.image_id, "panels": list(overlay.panels)} for overlay in overlays]
    metrics["instances"] = {"train": None, "val": None}
    metrics["headline"].update(instance_headline(metrics["instances"]))
    if metrics["pseudo_masks"] and pseudo_masks.exists(THRESHOLDS):
        metrics["pseudo_masks"]["thresholds"] = json.loads(pseudo_masks.get_bytes(THRESHOLDS))
    return _write_evaluation(out, metrics, overlays)


def add_instance_figures(data_root, cams, pseudo_masks, instance_labels, instances, out, config: dict,
                         classes: ClassList, strict: bool) -> dict:
    """The merged evaluation in `out` with the instance figures of the stores given added; the headline figures.
    Scored whole, after the merge: an AP ranks every instance of the split."""
    metrics = json.loads(out.get_bytes("metrics.json"))
    metrics["instances"] = score_instances(data_root, cams, pseudo_masks, instance_labels, instances, config,
                                           classes, strict)
    metrics["headline"].update(instance_headline(metrics["instances"]))
    overlays = [_stored_overlay(out, entry) for entry in metrics["overlays"]]
    return _write_evaluation(out, metrics, overlays)


def _write_evaluation(out, metrics: dict, overlays: list[Overlay]) -> dict:
    out.put_bytes("metrics.json", json.dumps(metrics, indent=2).encode())
    out.put_bytes("report.md", render_markdown(metrics, overlays).encode())
    out.put_bytes("report.html", render_html(metrics, overlays).encode())
    return metrics["headline"]


def score_instances(data_root, cams, pseudo_masks, instance_labels, instances, config: dict, classes: ClassList,
                    strict: bool) -> dict:
    """The instance figures of the stores given: {"train": labels' figures, "val": the model's}, each None without.
    The config's `instances` section is read only then: a config for the semantic figures alone need not have it."""
    from wsseg.data import load_samples

    figures = {"train": None, "val": None}
    if instance_labels is None and instances is None:
        return figures
    grouping = config["instances"]["grouping"]
    if instance_labels is not None:
        figures["train"] = score_instance_labels(load_samples(data_root, "train", classes), instance_labels,
                                                 pseudo_masks, cams, classes, grouping, strict)
    if instances is not None:
        figures["val"] = score_instance_model(load_model(instances), load_samples(data_root, "val", classes),
                                              classes, config["evaluate"], grouping, strict)
    return figures


def _first_overlays(out, records: list[dict], count: int) -> list[Overlay]:
    """The overlays of the split's first `count` images that have one: each shard drew its slice's first, so these
    are those an unsharded step draws. The other shards' drawings are removed."""
    drawn = sorted((entry for record in records for entry in record["overlays"]), key=lambda entry: entry["position"])
    for entry in drawn[count:]:
        out.delete(f"overlays/{entry['image_id']}.png")
    return [_stored_overlay(out, entry) for entry in drawn[:count]]


def _stored_overlay(out, entry: dict) -> Overlay:
    """The overlay `entry` (its image id and panels, as metrics.json lists them) names, read from `out`."""
    return Overlay(entry["image_id"], tuple(entry["panels"]), out.get_bytes(f"overlays/{entry['image_id']}.png"))


@dataclass(frozen=True)
class MaskSources:
    """The pseudo masks scored on train: the pipeline's, and the ones a self-trained segmenter completed."""

    pseudo_masks: object | None
    relabelled: object | None = None


def _score_train(samples, positions: dict[str, int], cams, masks: MaskSources, model, scores, out, settings,
                 strict):
    """One pass over a shard's slice of train (`samples`): every CAM threshold and the pseudo masks; overlays of its
    first few images, each with its position in the split (`positions`)."""
    from wsseg.data import read_image

    pseudo_masks = masks.pseudo_masks

    counts = dict.fromkeys(("train_scored", "train_skipped", "without_cam", "without_pseudo_mask",
                            "without_ground_truth"), 0)
    cam_ids = _ids(cams, ".npz")
    mask_ids = _ids(pseudo_masks, ".png") if pseudo_masks is not None else set()
    scorable = []
    for sample in samples:
        if sample.mask_path is None or sample.image_id not in cam_ids:
            counts["without_ground_truth" if sample.mask_path is None else "without_cam"] += 1
        else:
            scorable.append(sample)
            counts["without_pseudo_mask"] += pseudo_masks is not None and sample.image_id not in mask_ids
    overlays: list[tuple[int, Overlay]] = []
    relabelled_ids = _ids(masks.relabelled, ".png") if masks.relabelled is not None else set()
    read = partial(_read_train_image, cams, masks, mask_ids, relabelled_ids)
    for sample, outcome in tqdm(read_ahead(read, scorable, settings["read_threads"]), total=len(scorable),
                                desc="evaluate train", unit="img"):
        try:
            ground_truth, cam_scores, labels, pseudo_mask, relabelled = unless_error(outcome)
            image = read_image(sample.image_path) if len(overlays) < settings["overlays"] else None
        except GroundTruthSizeError:
            raise
        except DataError:
            if strict:
                raise
            counts["train_skipped"] += 1
            continue
        scores.add(ground_truth, cam_scores, labels, pseudo_mask, relabelled)
        counts["train_scored"] += 1
        if image is not None:
            overlays.append((positions[sample.image_id], _overlay(out, sample.image_id, image, ground_truth,
                                                                  cam_scores, pseudo_mask, model, settings)))
    return counts, overlays


def _read_train_image(cams, masks: MaskSources, mask_ids: set[str], relabelled_ids: set[str], sample):
    """One train image's ground truth, CAMs, pseudo mask and relabelled mask (each None without one)."""
    ground_truth = read_ground_truth(sample)
    cam_scores, labels = _read_cams(cams, sample.image_id, ground_truth.shape)
    if sample.image_id not in mask_ids:
        return ground_truth, cam_scores, labels, None, None
    pseudo_mask = _read_pseudo_mask(masks.pseudo_masks, sample.image_id, ground_truth.shape)
    relabelled = None
    if sample.image_id in relabelled_ids:
        relabelled = _read_pseudo_mask(masks.relabelled, sample.image_id, ground_truth.shape)
    return ground_truth, cam_scores, labels, pseudo_mask, relabelled


def _read_cams(cams, image_id: str, shape: tuple[int, int]):
    key = f"{image_id}.npz"
    try:
        cam_scores, labels = read_cam_file(cams.get_bytes(key))
    except ValueError as error:
        raise DataError(f"{cams.uri}/{key}", str(error)) from None
    if cam_scores.shape[1:] != shape:
        raise DataError(f"{cams.uri}/{key}", f"CAMs are {cam_scores.shape[1:]} but the ground truth is {shape}")
    return cam_scores, labels


def _read_pseudo_mask(pseudo_masks, image_id: str, shape: tuple[int, int]) -> np.ndarray:
    key = f"{image_id}.png"
    try:
        mask = decode_mask_png(pseudo_masks.get_bytes(key))
    except (OSError, ValueError) as error:
        raise DataError(f"{pseudo_masks.uri}/{key}", f"cannot decode pseudo mask: {decode_problem(error)}") from None
    if mask.shape != shape:
        raise DataError(f"{pseudo_masks.uri}/{key}", f"pseudo mask is {mask.shape} but the ground truth is {shape}")
    return mask


def _segmenter_summary(matrix, classes: ClassList, settings: dict) -> dict:
    from wsseg.segmenter.inference import view_scales

    return {"split": "val", "multi_scale": settings["multi_scale"], "flip": settings["flip"],
            "scales": list(view_scales(settings["multi_scale"])), **matrix.summary(classes.names)}


def _overlay(out, image_id, image, ground_truth, cams, pseudo_mask, model, settings) -> Overlay:
    """image | CAM heat map | pseudo mask | prediction | ground truth, written to `out/overlays/`."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(ground_truth.shape, np.float32)
    panels = [("image", image), ("CAM", cam_heatmap(image, peak))]
    if pseudo_mask is not None:
        panels.append(("pseudo mask", colorize(pseudo_mask)))
    if model is not None:
        panels.append(("prediction", colorize(predict_mask(model, image, settings))))
    panels.append(("ground truth", colorize(ground_truth)))
    overlay = Overlay(image_id, tuple(title for title, _ in panels), overlay_strip([panel for _, panel in panels]))
    store_overlays(out, [overlay])
    return overlay


def _ids(store, suffix: str) -> set[str]:
    return {key[: -len(suffix)] for key in store.list() if key.endswith(suffix) and "/" not in key}
