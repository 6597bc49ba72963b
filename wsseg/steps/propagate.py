"""propagate: CAMs spread by a random walk over the learned affinities (PSA, Ahn & Kwak CVPR'18; IRN, CVPR'19),
then refined into pseudo masks exactly as the refine step refines CAMs. Off unless `affinity.enabled`: then the
step passes the refine step's pseudo masks on unchanged (its output names their store).

Writes the walked maps as CAM files into `cams/` (resumable, like mine-cams' output), then the pseudo masks and
`thresholds.json` (chosen again, from the walked maps) beside them.
"""
from __future__ import annotations

import io
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
from wsseg.steps.refine import refine_with_crf
from wsseg.steps.train_affinity import load_affinity_net
from wsseg.store import ArtifactStore
from wsseg.wsss.classifiers.affinity_net import pair_affinities
from wsseg.wsss.pseudo_masks import read_cam_file
from wsseg.wsss.random_walk import random_walk, walk_steps
from wsseg.wsss.training import autocast, pick_device

log = logging.getLogger(__name__)

WALKED = "cams"


def propagate(data_root, cams: ArtifactStore, masks: ArtifactStore, affinity: ArtifactStore, out: ArtifactStore,
              config: dict, classes: ClassList, strict: bool = False) -> dict:
    settings = config["affinity"]
    if not settings["enabled"]:
        return {"affinity": "disabled", PUBLISHED_STORE: masks.uri}
    device = pick_device(settings["device"])
    model = load_affinity_net(affinity, config, device)
    walked = out.child(WALKED)
    done = {key[:-4] for key in walked.list() if key.endswith(".npz")}
    with_cams = {key[:-4] for key in cams.list() if key.endswith(".npz") and "/" not in key}
    samples = [s for s in load_samples(data_root, "train", classes) if s.image_id in with_cams - done]
    counts, started = Counter(walked=0, skipped=0), time.perf_counter()
    for sample in tqdm(samples, desc="random walk", unit="img"):
        try:
            maps, labels = _walked_maps(model, sample, cams, settings, config["working_size"], device)
        except (DataError, ValueError) as error:
            if strict:
                raise DataError(sample.image_path, str(error)) from None
            log.warning("random walk: skipped %s: %s", sample.image_id, error)
            counts["skipped"] += 1
            continue
        buffer = io.BytesIO()
        np.savez_compressed(buffer, cams=maps.astype(np.float16), labels=labels.astype(np.int16))
        walked.put_bytes(f"{sample.image_id}.npz", buffer.getvalue())
        counts["walked"] += 1
    walk_seconds = time.perf_counter() - started
    refined = refine_with_crf(data_root, walked, out, config, classes, strict)
    return dict(refined, walked=counts["walked"], walk_skipped=counts["skipped"],
                walk_seconds=round(walk_seconds, 1))


@torch.no_grad()
def _walked_maps(model, sample, cams: ArtifactStore, settings: dict, working_size: int | None, device):
    """The image's CAMs walked on the embedding grid of its working-size copy, back at image resolution."""
    maps, labels = read_cam_file(cams.get_bytes(f"{sample.image_id}.npz"))
    image = read_image(sample.image_path)
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
