"""`wsseg predict`: a trained segmenter labels new images, a folder, a manifest or a store prefix of them.

For every image the output store gets `masks/<id>.png` (a palette PNG, as VOC's and refine's masks), and on
request `overlays/<id>.png` (image | mask), `areas/<id>.json` (pixels per class) and `instances/<id>.json`
(COCO annotations, gathered into one COCO `instances.json` at the end): an instance model's instances (a
train-instance-heads output, `wsseg.wsss.instance_segmentor`, grouped with the config's `instances.grouping`), else
each connected region of a class; each scored by its class's mean probability over it. Masks are what
`evaluate` scores: the same `wsseg.segmenter.inference.predict` with the same test-time augmentation, the
`evaluate` section's unless overridden. The model runs on the GPU when there is one, one image at a time (so a
mask never depends on what else was in a batch); reading and decoding the next batch of images and writing the
last one's outputs run beside it. An image whose outputs are all stored is skipped, so a re-run resumes; a
corrupt image is skipped and counted, or stops the run with `strict`.

Split into shards (`wsseg.runtime.shards`), each task labels its slice of the images and keeps its summary and
its images' instances under `shards/<k>-of-<N>/`; `merge_predictions` sums the summaries and numbers the
instances into one COCO document, reading N records rather than an instance file per image.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

import numpy as np

from wsseg.errors import DataError, StoreError
from wsseg.runtime.shards import SHARD_SUMMARY, WHOLE, Shard, shard_records, summed, write_shard_record
from wsseg.store import ArtifactStore

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
INSTANCES = "instances.json"
COUNTS = ("images", "predicted", "already_stored", "corrupt")
# Output folder of each optional output, by its setting.
EXTRAS = {"overlays": "overlays/{}.png", "areas": "areas/{}.json", "instances": "instances/{}.json"}
MASK = "masks/{}.png"


def default_config(preset: str) -> dict:
    """The `predict` section; test-time augmentation comes from `evaluate` (multi_scale, flip)."""
    return {"overlays": False, "areas": False, "instances": False,
            "min_instance_area": 1,  # pixels; smaller connected regions are no instance
            "batch_size": 8}  # images read ahead of the model and written behind it


def predict_images(segmenter: ArtifactStore, images: str, out: ArtifactStore, config: dict, strict: bool = False,
                   multi_scale: bool | None = None, flip: bool | None = None, device=None,
                   shard: Shard | None = None) -> dict:
    """Label every image of `images` (see `wsseg.serving.image_sources`) into `out`; returns the run's summary.
    With `shard`, label its slice only and return its summary (`merge_predictions` makes the run's)."""
    summary = predict_shard(segmenter, images, out, config, strict, multi_scale, flip, device, shard or WHOLE)
    return summary if shard else merge_predictions(out, config, WHOLE.count)


def predict_shard(segmenter: ArtifactStore, images: str, out: ArtifactStore, config: dict, strict: bool,
                  multi_scale: bool | None, flip: bool | None, device, shard: Shard) -> dict:
    from tqdm import tqdm

    from wsseg.segmenter.inference import load_segmenter
    from wsseg.serving.image_sources import list_images

    settings = config["predict"]
    tta = dict(multi_scale=config["evaluate"]["multi_scale"] if multi_scale is None else multi_scale,
               flip=config["evaluate"]["flip"] if flip is None else flip)
    wanted = [MASK] + [pattern for name, pattern in EXTRAS.items() if settings[name]]
    sources = shard.take(list_images(images))
    stored = set(out.list())
    pending = [image for image in sources if any(key.format(image.image_id) not in stored for key in wanted)]
    model = load_segmenter(segmenter, device)
    class_names = list(model.dataset_meta["classes"])
    corrupt, started = [], time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool, tqdm(total=len(pending), desc="predict", unit="img") as bar:
        writes = []
        for batch in _read_ahead(pending, settings["batch_size"], pool):
            for image, pixels in batch:
                if isinstance(pixels, DataError):
                    if strict:
                        raise pixels
                    corrupt.append(image.image_id)
                else:
                    labels, instances = _predict(model, pixels, tta, config if settings["instances"] else None)
                    writes.append(pool.submit(_write_outputs, out, image, pixels, labels, instances, class_names,
                                              settings))
                bar.update()
            writes = [write for write in writes if _still_running(write)]
        for write in writes:
            write.result()
    seconds = time.perf_counter() - started
    summary = dict(images=len(sources), predicted=len(pending) - len(corrupt),
                   already_stored=len(sources) - len(pending), corrupt=len(corrupt), corrupt_ids=corrupt,
                   seconds=round(seconds, 1), segmenter=segmenter.uri, source=images, **tta)
    if settings["instances"]:
        write_shard_record(out, shard, INSTANCES, _slice_instances(out, sources, corrupt, class_names))
    write_shard_record(out, shard, SHARD_SUMMARY, summary)
    log.info("predict %s: %d images labelled, %d already stored, %d corrupt -> %s", shard, summary["predicted"],
             summary["already_stored"], len(corrupt), out.uri)
    return summary


def merge_predictions(out: ArtifactStore, config: dict, shards: int) -> dict:
    """The run's `summary.json` (and, with instances, `instances.json`) from its `shards` shards' records."""
    records = shard_records(out, shards)
    corrupt = [image_id for record in records for image_id in record["corrupt_ids"]]
    summary = dict(summed(records, COUNTS), corrupt_ids=corrupt,
                   seconds=round(sum(record["seconds"] for record in records), 1), shards=shards,
                   **{key: records[0][key] for key in ("segmenter", "source", "multi_scale", "flip")})
    if config["predict"]["instances"]:
        summary["instances"] = _gather_instances(out, shard_records(out, shards, INSTANCES))
    out.put_bytes(SUMMARY, json.dumps(summary, indent=2).encode())
    log.info("predict: %d images labelled, %d already stored, %d corrupt -> %s", summary["predicted"],
             summary["already_stored"], summary["corrupt"], out.uri)
    return summary


def _read_ahead(images: list, batch_size: int, pool: ThreadPoolExecutor):
    """Batches of (image, pixels or its DataError), the next one decoded while the caller works on this one."""
    batches = [images[start:start + batch_size] for start in range(0, len(images), batch_size)]
    ahead = pool.submit(_load_batch, batches[0]) if batches else None
    for index in range(len(batches)):
        current = ahead.result()
        ahead = pool.submit(_load_batch, batches[index + 1]) if index + 1 < len(batches) else None
        yield current


def _load_batch(batch: list) -> list:
    return [(image, _load(image)) for image in batch]


def _load(image):
    from wsseg.data import decode_image

    try:
        return decode_image(image.read(), image.location)
    except DataError as error:
        return error
    except (OSError, StoreError) as error:
        return DataError(image.location, f"cannot read image: {error}")


def _predict(model, pixels: np.ndarray, tta: dict, config: dict | None) -> tuple[np.ndarray, list | None]:
    """The image's mask and, given the run's `config`, its instances as COCO annotations."""
    from wsseg.segmenter.inference import class_probabilities

    probabilities = class_probabilities(model, pixels, **tta)
    labels = probabilities.argmax(dim=0).numpy().astype(np.uint8)
    if config is None:
        return labels, None
    return labels, _instances(model, pixels, probabilities, labels, config)


def _instances(model, pixels: np.ndarray, probabilities, labels: np.ndarray, config: dict) -> list[dict]:
    from wsseg.serving.instances import coco_annotations, connected_components
    from wsseg.wsss.instance_segmentor import InstanceSegmentor, segmenter_instances

    grouping = config["instances"]["grouping"]
    if isinstance(model, InstanceSegmentor):
        return coco_annotations(segmenter_instances(model, pixels, probabilities, grouping).masks())
    normalised = (probabilities / probabilities.sum(dim=0, keepdim=True)).numpy()
    return coco_annotations(connected_components(labels, config["predict"]["min_instance_area"], normalised))


def _still_running(write) -> bool:
    """Whether a write is still running; one that is done raises its error, if any, here."""
    if write.done():
        write.result()
        return False
    return True


def _write_outputs(out: ArtifactStore, image, pixels: np.ndarray, labels: np.ndarray, instances: list | None,
                   class_names: list[str], settings: dict) -> None:
    """The extras first and the mask last: a stored mask means the image is done."""
    from wsseg.evaluation.report import colorize, overlay_strip
    from wsseg.wsss.pseudo_masks import encode_mask_png

    image_id = image.image_id
    if settings["overlays"]:
        out.put_bytes(EXTRAS["overlays"].format(image_id), overlay_strip([pixels, colorize(labels)]))
    if settings["areas"]:
        out.put_bytes(EXTRAS["areas"].format(image_id), json.dumps(class_areas(labels, class_names)).encode())
    if settings["instances"]:
        record = dict(file_name=image_id + PurePosixPath(image.location).suffix, height=labels.shape[0],
                      width=labels.shape[1], annotations=instances)
        out.put_bytes(EXTRAS["instances"].format(image_id), json.dumps(record).encode())
    out.put_bytes(MASK.format(image_id), encode_mask_png(labels))


def class_areas(labels: np.ndarray, class_names: list[str]) -> dict:
    """Pixels and share of the image of each class present in `labels`."""
    counts = np.bincount(labels.ravel(), minlength=len(class_names))
    total = labels.size
    return {"height": labels.shape[0], "width": labels.shape[1],
            "classes": {class_names[index]: {"pixels": int(count), "fraction": round(int(count) / total, 6)}
                        for index, count in enumerate(counts[:len(class_names)]) if count}}


def _slice_instances(out: ArtifactStore, sources: list, corrupt: list[str], class_names: list[str]) -> dict:
    """The instances of a shard's labelled images (this run's and earlier ones'), for the merge to number."""
    skipped = set(corrupt)
    images, annotations = [], {}
    for image in sources:
        if image.image_id in skipped:
            continue
        record = json.loads(out.get_bytes(EXTRAS["instances"].format(image.image_id)))
        images.append(dict(image_id=image.image_id, file_name=record["file_name"], height=record["height"],
                           width=record["width"]))
        annotations[image.image_id] = record["annotations"]
    return {"images": images, "annotations": annotations, "classes": class_names}


def _gather_instances(out: ArtifactStore, parts: list[dict]) -> int:
    """One COCO document of every labelled image's instances, numbered in the images' order; their count."""
    from wsseg.serving.instances import coco_document

    images = sorted((image for part in parts for image in part["images"]), key=lambda image: image["image_id"])
    annotations = {image_id: found for part in parts for image_id, found in part["annotations"].items()}
    document = coco_document(images, annotations, parts[0]["classes"])
    out.put_bytes(INSTANCES, json.dumps(document).encode())
    return len(document["annotations"])


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="label images with a trained segmenter")
    parser.add_argument("--segmenter", required=True, metavar="URI",
                        help="store holding checkpoint.pth and mmseg_config.py (train-segmenter's output)")
    parser.add_argument("--images", required=True,
                        help="a folder of images, a .csv/.jsonl manifest or a store prefix (s3://bucket/prefix)")
    parser.add_argument("--out", required=True, metavar="URI", help="store to write masks and the rest to")
    parser.add_argument("--config", help="YAML config, a path or a store URI (merged over the preset)")
    parser.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the config's, else cpu)")
    for name in EXTRAS:
        parser.add_argument(f"--{name}", action="store_true", default=None, help=f"also write {EXTRAS[name]}")
    parser.add_argument("--multi-scale", action=argparse.BooleanOptionalAction,
                        help="multi-scale inputs (default: the config's evaluate.multi_scale)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction,
                        help="flipped inputs too (default: the config's evaluate.flip)")
    parser.add_argument("--strict", action="store_true", help="stop at the first corrupt image instead of skipping it")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from wsseg.config import load_config
    from wsseg.store import open_store

    config = load_config(args.config, args.preset)
    for name in EXTRAS:
        if getattr(args, name):
            config["predict"][name] = True
    summary = predict_images(open_store(args.segmenter), args.images, open_store(args.out), config,
                             strict=args.strict or config["strict"], multi_scale=args.multi_scale, flip=args.flip)
    print(json.dumps({key: value for key, value in summary.items() if key != "corrupt_ids"}))
    return 0
