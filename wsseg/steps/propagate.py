"""propagate: CAMs spread by a random walk over the learned affinities (PSA, Ahn & Kwak CVPR'18; IRN, CVPR'19),
then refined into pseudo masks exactly as the refine step refines CAMs. Off unless `affinity.enabled`: then the
step passes the refine step's pseudo masks on unchanged (its output names their store).

Writes the walked maps as CAM files into `cams/` (resumable, like mine-cams' output), then the pseudo masks and
`thresholds.json` (chosen again, from the walked maps) beside them.

Split into shards, it runs as refine does, in four tasks: each shard walks its slice (`propagate` with a shard,
keeping its maps' histograms as mine-cams does), one reduce sums them and chooses the levels
(`choose_propagate_levels`), each shard refines its slice (`refine_walked`), and one merge
(`merge_propagate`) writes the summary.
"""
from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsseg.classes import ClassList
from wsseg.data import load_samples, read_image
from wsseg.data.images import resize_maps, working_shape
from wsseg.errors import DataError
from wsseg.runtime.pipeline_io import PUBLISHED_STORE
from wsseg.runtime.read_ahead import read_ahead
from wsseg.runtime.shards import SHARD_SUMMARY, WHOLE, Shard, shard_records, summed, write_shard_record
from wsseg.steps.mine_cams import SHARD_HISTOGRAMS, histograms_of_stored, merge_cam_histograms, store_cam_file
from wsseg.steps.refine import choose_refine_levels, merge_refine, refine_shard
from wsseg.steps.train_affinity import load_affinity_net
from wsseg.store import ArtifactStore
from wsseg.wsss.classifiers.affinity_net import pair_affinities
from wsseg.wsss.pseudo_masks import read_cam_file
from wsseg.wsss.random_walk import random_walk, walk_steps
from wsseg.wsss.training import autocast, pick_device

log = logging.getLogger(__name__)

WALKED = "cams"
# Images whose CAMs and pixels are read ahead of the walk.
READ_THREADS = 2


def propagate(data_root, cams: ArtifactStore, masks: ArtifactStore, affinity: ArtifactStore, out: ArtifactStore,
              config: dict, classes: ClassList, strict: bool = False, shard: Shard | None = None) -> dict:
    """Walk `shard`'s slice of the CAMs (its summary); without a shard, every image walked and refined (the step's
    summary)."""
    if not config["affinity"]["enabled"]:
        return _disabled(masks)
    if shard is not None:
        return walk_shard(data_root, cams, affinity, out, config, classes, strict, shard)
    walk_shard(data_root, cams, affinity, out, config, classes, strict, WHOLE)
    choose_propagate_levels(data_root, masks, out, config, classes, strict, WHOLE.count)
    refine_walked(data_root, masks, out, config, classes, strict, WHOLE)
    return merge_propagate(data_root, masks, out, config, classes, strict, WHOLE.count)


def walk_shard(data_root, cams: ArtifactStore, affinity: ArtifactStore, out: ArtifactStore, config: dict,
               classes: ClassList, strict: bool, shard: Shard) -> dict:
    settings = config["affinity"]
    device = pick_device(settings["device"])
    model = load_affinity_net(affinity, config, device)
    walked = out.child(WALKED)
    done = {key[:-4] for key in walked.list() if key.endswith(".npz") and "/" not in key}
    with_cams = {key[:-4] for key in cams.list() if key.endswith(".npz") and "/" not in key}
    slice_with_cams = [s for s in load_samples(data_root, "train", classes, keep=shard.holds)
                       if s.image_id in with_cams]
    histograms = histograms_of_stored(walked, [s for s in slice_with_cams if s.image_id in done], len(classes),
                                      READ_THREADS)
    samples = [s for s in slice_with_cams if s.image_id not in done]
    counts, started = Counter(walked=0, skipped=0), time.perf_counter()
    read = read_ahead(lambda sample: _walk_inputs(sample, cams), samples, READ_THREADS)
    for sample, inputs in tqdm(read, total=len(samples), desc="random walk", unit="img"):
        try:
            maps, labels = _walked_maps(model, *_unless_error(inputs), settings, config["working_size"], device)
        except (DataError, ValueError) as error:
            if strict:
                raise DataError(sample.image_path, str(error)) from None
            log.warning("random walk: skipped %s: %s", sample.image_id, error)
            counts["skipped"] += 1
            continue
        store_cam_file(walked, sample.image_id, maps, labels, histograms)
        counts["walked"] += 1
    summary = dict(walked=counts["walked"], walk_skipped=counts["skipped"],
                   walk_seconds=round(time.perf_counter() - started, 1))
    write_shard_record(walked, shard, SHARD_HISTOGRAMS, histograms.to_json())
    write_shard_record(walked, shard, SHARD_SUMMARY, summary)
    return summary


def choose_propagate_levels(data_root, masks: ArtifactStore, out: ArtifactStore, config: dict, classes: ClassList,
                            strict: bool, shards: int) -> dict:
    """The reduce after the walk: the shards' histograms summed, and from them the passes' levels."""
    if not config["affinity"]["enabled"]:
        return _disabled(masks)
    merge_cam_histograms(out.child(WALKED), shards)
    return choose_refine_levels(data_root, out.child(WALKED), out, config, classes, strict)


def refine_walked(data_root, masks: ArtifactStore, out: ArtifactStore, config: dict, classes: ClassList,
                  strict: bool, shard: Shard) -> dict:
    """`shard`'s slice of the walked maps refined into pseudo masks, at the levels the reduce chose."""
    if not config["affinity"]["enabled"]:
        return _disabled(masks)
    return refine_shard(data_root, out.child(WALKED), out, config, classes, strict, shard)


def merge_propagate(data_root, masks: ArtifactStore, out: ArtifactStore, config: dict, classes: ClassList,
                    strict: bool, shards: int) -> dict:
    if not config["affinity"]["enabled"]:
        return _disabled(masks)
    walks = summed(shard_records(out.child(WALKED), shards), ("walked", "walk_skipped", "walk_seconds"))
    return dict(merge_refine(out, shards), **walks)


def _disabled(masks: ArtifactStore) -> dict:
    return {"affinity": "disabled", PUBLISHED_STORE: masks.uri}


def _walk_inputs(sample, cams: ArtifactStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    maps, labels = read_cam_file(cams.get_bytes(f"{sample.image_id}.npz"))
    return maps, labels, read_image(sample.image_path)


def _unless_error(inputs):
    if isinstance(inputs, Exception):
        raise inputs
    return inputs


@torch.no_grad()
def _walked_maps(model, maps: np.ndarray, labels: np.ndarray, image: np.ndarray, settings: dict,
                 working_size: int | None, device):
    """The image's CAMs walked on the embedding grid of its working-size copy, back at image resolution."""
    height, width = image.shape[:2]
    tensor = torch.tensor(image).permute(2, 0, 1)[None].float().to(device)
    tensor = F.interpolate(tensor, working_shape(height, width, working_size), mode="bilinear", antialias=True)
    with autocast(device, settings["precision"]):
        embedding = model.embed(tensor).float()
    grid = tuple(embedding.shape[-2:])
    affinities = pair_affinities(embedding, settings["radius"])[0]
    seeds = torch.from_numpy(resize_maps(maps, grid)).to(device)
    walked = random_walk(seeds, affinities, settings["radius"], settings["beta"],
                         walk_steps(grid, settings["radius"], settings["walk_reach"]))
    return resize_maps(walked.cpu().numpy(), (height, width)), labels

