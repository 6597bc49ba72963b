"""group-instances: instance pseudo labels of the train images (IRN, Ahn et al. CVPR'19; docs/METHODS.md
§1.20). Off unless `instances.enabled`; then the step does nothing.

IRNet (the train-irn step's) gives each image's displacement field and boundary map at its working size; the
image's CAMs are the seeds and its pseudo mask the extent (`wsseg.wsss.instance_grouping`). Writes
`<image_id>.png` and `<image_id>.json` per image (`wsseg.wsss.instance_labels`; an image whose PNG is stored is
skipped, so a re-run resumes), then `summary.json`.
"""
from __future__ import annotations

import json
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
from wsseg.steps.train_irn import load_irn
from wsseg.store import ArtifactStore
from wsseg.wsss.instance_grouping import group_instances as group
from wsseg.wsss.instance_labels import stored_ids, write_instances
from wsseg.wsss.pseudo_masks import decode_mask_png, read_cam_file
from wsseg.wsss.training import autocast, pick_device

log = logging.getLogger(__name__)


def group_instances(data_root, cams: ArtifactStore, masks: ArtifactStore, irn: ArtifactStore, out: ArtifactStore,
                    config: dict, classes: ClassList, strict: bool = False) -> dict:
    settings = config["instances"]
    if not settings["enabled"]:
        return {"instances": "disabled"}
    device = pick_device(settings["device"])
    model = load_irn(irn, config, device)
    ready = _ids(cams, ".npz") & _ids(masks, ".png")
    done = stored_ids(out)
    samples = [sample for sample in load_samples(data_root, "train", classes) if sample.image_id in ready - done]
    counts, started = Counter(images=0, instances=0, skipped=0), time.perf_counter()
    for sample in tqdm(samples, desc="group instances", unit="img"):
        try:
            instances = _image_instances(model, sample, cams, masks, settings, config["working_size"], device)
        except (DataError, ValueError) as error:
            if strict:
                raise DataError(sample.image_path, str(error)) from None
            log.warning("group-instances: skipped %s: %s", sample.image_id, error)
            counts["skipped"] += 1
            continue
        write_instances(out, sample.image_id, instances)
        counts["images"] += 1
        counts["instances"] += len(instances.classes)
    summary = dict(counts, already_stored=len(done), seconds=round(time.perf_counter() - started, 1))
    out.put_bytes("summary.json", json.dumps(summary, indent=2).encode())
    log.info("group-instances: %s", " ".join(f"{key}={value}" for key, value in summary.items()))
    return summary


@torch.no_grad()
def image_relations(model, image: np.ndarray, size: tuple[int, int], device, precision: str):
    """IRNet's (h, w) boundary probabilities and (2, h, w) displacement field of an (H, W, 3) image scaled to
    `size`, on the CPU. The boundary map is averaged with the mirrored image's, as IRN's inference does."""
    tensor = torch.tensor(image).permute(2, 0, 1)[None].float().to(device)
    tensor = F.interpolate(tensor, size, mode="bilinear", antialias=True)
    with autocast(device, precision):
        boundary, displacement = model(torch.cat([tensor, tensor.flip(-1)]))
    boundary = torch.sigmoid(boundary.float())
    return ((boundary[0, 0] + boundary[1, 0].flip(-1)) / 2).cpu(), displacement[0].float().cpu()


def _image_instances(model, sample, cams: ArtifactStore, masks: ArtifactStore, settings: dict,
                     working_size: int | None, device):
    maps, labels = read_cam_file(cams.get_bytes(f"{sample.image_id}.npz"))
    extent = decode_mask_png(masks.get_bytes(f"{sample.image_id}.png"))
    image = read_image(sample.image_path)
    if extent.shape != image.shape[:2] or maps.shape[1:] != image.shape[:2]:
        raise DataError(sample.image_path, f"image {image.shape[:2]}, CAMs {maps.shape[1:]} and pseudo mask "
                                           f"{extent.shape} differ in size")
    boundary, displacement = image_relations(model, image, working_shape(*image.shape[:2], working_size), device,
                                             settings["precision"])
    scores = torch.from_numpy(resize_maps(maps, tuple(boundary.shape)))
    return group(scores, labels, extent, displacement, boundary, settings["grouping"])


def _ids(store: ArtifactStore, suffix: str) -> set[str]:
    return {key[: -len(suffix)] for key in store.list() if key.endswith(suffix) and "/" not in key}
