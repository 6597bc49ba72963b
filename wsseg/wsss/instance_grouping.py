"""Instances from a displacement field, a boundary map and class scores (IRN, Ahn et al. CVPR'19).

1. Centroids: every pixel follows the displacement field (bilinearly, `centroid_iterations` times) to the point
   its instance converges on; the regions where the field is weak (|D| < `centroid_threshold` cells) are the
   converging points, and pixels whose walk ends in the same one form one class-agnostic cluster. With a
   `boundary_threshold` (not IRN's; off by default), each cluster is then cut along the boundary map: its
   4-connected parts where B < `boundary_threshold` are clusters of their own.
2. Seeds: each class score map times each cluster's mask, and times 1 − B, as IRN damps seeds on boundaries,
   where the extent is that class.
3. Propagation: the seeds random-walk over the boundary map's affinities (`wsseg.wsss.random_walk`, the walk
   the `affinity` method runs over AffinityNet's), so each spreads over its instance and stops at boundaries.
4. Each pixel of class c in `extent` (the pseudo mask, or the segmenter's prediction) takes the cluster whose
   walked map of class c is strongest there; each connected part of a cluster is an instance, scored by the peak
   of its walked map (IRN's code), 0 when under `min_fragment` of the image (IRN: 1 %).

The same function makes the pseudo labels from CAMs (the group-instances step) and the instance model's
predictions from the segmenter's probabilities (`predict_instances`).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from wsseg.classes import IGNORE_INDEX
from wsseg.wsss.instance_labels import Instances
from wsseg.wsss.random_walk import boundary_affinities, random_walk, walk_steps


def group_instances(scores: torch.Tensor, labels, extent: np.ndarray, displacement: torch.Tensor,
                    boundary: torch.Tensor, settings: dict) -> Instances:
    """Instances of `extent` ((H, W) classes, 0 background, 255 unknown) from (L, h, w) `scores` of the classes
    `labels` (L,), a (2, h, w) displacement field in cells of that grid and (h, w) boundary probabilities."""
    clusters = centroid_clusters(displacement, settings["centroid_iterations"], settings["centroid_threshold"])
    threshold = settings["boundary_threshold"]
    members = (cluster_masks(clusters) if threshold is None else cut_along_boundaries(clusters, boundary, threshold))
    grid = cv2.resize(extent, tuple(boundary.shape)[::-1], interpolation=cv2.INTER_NEAREST)
    where_class = torch.from_numpy(grid[None] == np.asarray(labels).reshape(-1, 1, 1)).float()
    seeds = (scores.float()[:, None] * where_class[:, None] * members[None] * (1 - boundary.float())).flatten(0, 1)
    radius = settings["walk_radius"]
    walked = random_walk(seeds, boundary_affinities(boundary.float()[None], radius)[0], radius, settings["beta"],
                         walk_steps(tuple(boundary.shape), radius, settings["walk_reach"]))
    walked = F.interpolate(walked[None], extent.shape, mode="bilinear", align_corners=False)[0]
    return split_instances(walked.view(len(scores), len(members), *extent.shape).numpy(), labels, extent,
                           settings["min_fragment"])


def centroid_clusters(displacement: torch.Tensor, iterations: int, threshold: float) -> torch.Tensor:
    """(h, w) int64 cluster of each pixel: the weak-displacement region its converged point lies in, numbered
    from 0 (points outside every region share one more cluster)."""
    weak = (displacement.float().norm(dim=0) < threshold).numpy().astype(np.uint8)
    _, regions = cv2.connectedComponents(weak, connectivity=4)
    points = converged_points(displacement, iterations).round().long()
    landed = regions[points[0].numpy(), points[1].numpy()]
    _, clusters = np.unique(landed, return_inverse=True)
    return torch.from_numpy(clusters.reshape(landed.shape)).long()


def cluster_masks(clusters: torch.Tensor) -> torch.Tensor:
    """(K, h, w) masks of the clusters numbered 0..K-1 in (h, w) `clusters`."""
    return (torch.arange(int(clusters.max()) + 1)[:, None, None] == clusters[None]).float()


def cut_along_boundaries(clusters: torch.Tensor, boundary: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K, h, w) masks of the 4-connected parts of each cluster where the boundary map is under `threshold`;
    cells on a boundary belong to none (the walk reaches them), unless nothing is under it (the clusters whole)."""
    inside, clusters = (boundary.float() < threshold).numpy(), clusters.numpy()
    parts = np.full(clusters.shape, -1, np.int64)
    for cluster in np.unique(clusters):
        _, numbers = cv2.connectedComponents((inside & (clusters == cluster)).astype(np.uint8), connectivity=4)
        parts = np.where(numbers > 0, numbers + parts.max(), parts)
    if parts.max() < 0:
        parts = clusters
    return torch.from_numpy(np.arange(parts.max() + 1)[:, None, None] == parts[None]).float()


def converged_points(displacement: torch.Tensor, iterations: int) -> torch.Tensor:
    """(2, h, w): where each pixel ends after `iterations` steps along the (2, h, w) field (dy, dx), sampled
    bilinearly where it stands, kept inside the grid."""
    _, height, width = displacement.shape
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
    field = displacement.float()[None]
    for _ in range(iterations):
        where = torch.stack([cols / max(width - 1, 1) * 2 - 1, rows / max(height - 1, 1) * 2 - 1], dim=-1)
        step = F.grid_sample(field, where[None], mode="bilinear", align_corners=True)[0]
        rows, cols = (rows + step[0]).clamp(0, height - 1), (cols + step[1]).clamp(0, width - 1)
    return torch.stack([rows, cols])


def split_instances(walked: np.ndarray, labels, extent: np.ndarray, min_fragment: float) -> Instances:
    """Instances from (L, K, H, W) walked maps per class and cluster over `extent` (see `group_instances`, 4)."""
    found = []
    for row, class_index in enumerate(labels):
        pixels = extent == class_index
        if not pixels.any():
            continue
        choice = walked[row].argmax(axis=0)
        for cluster in np.unique(choice[pixels]):
            count, parts = cv2.connectedComponents((pixels & (choice == cluster)).astype(np.uint8), connectivity=4)
            for part in range(1, count):
                mask = parts == part
                small = mask.sum() < min_fragment * mask.size
                found.append((0.0 if small else float(walked[row, cluster][mask].max()), int(class_index), mask))
    claimed = np.isin(extent, [0, *labels])
    return Instances.from_masks(found, unassigned=(extent == IGNORE_INDEX) | ~claimed)
