"""The sampler of semi-supervised training: every batch holds a fixed number of labelled and unlabelled samples.

mmseg's loaders take one dataset; semi-supervised training reads two kinds of sample in each batch, as mmdet's
semi-supervised detectors do with their multi-source sampler. The train dataset is a ConcatDataset whose last
dataset holds the unlabelled images (`wsseg.segmenter.configs`); `LabelledUnlabelledSampler` yields, batch after
batch, `labelled` indices drawn from the datasets before it and `unlabelled` from it, each an endless run of
shuffled passes, so the DataLoader's batches of `labelled + unlabelled` samples always split the same way.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler


@DATA_SAMPLERS.register_module()
class LabelledUnlabelledSampler(Sampler):
    """Endless indices of a ConcatDataset: `labelled` from its first datasets, then `unlabelled` from its last,
    per batch. Each rank draws its own order from `seed` (mmengine's, shared across ranks) and its rank."""

    def __init__(self, dataset, labelled: int, unlabelled: int, seed: int | None = None):
        self.size = len(dataset)
        self.boundary = dataset.cumulative_sizes[-2]
        self.per_batch = dict(labelled=labelled, unlabelled=unlabelled)
        rank, _ = get_dist_info()
        self.seed = (sync_random_seed() if seed is None else seed) + rank

    def __iter__(self) -> Iterator[int]:
        labelled = _shuffled_passes(range(0, self.boundary), torch.Generator().manual_seed(self.seed))
        unlabelled = _shuffled_passes(range(self.boundary, self.size), torch.Generator().manual_seed(self.seed + 1))
        while True:
            yield from islice(labelled, self.per_batch["labelled"])
            yield from islice(unlabelled, self.per_batch["unlabelled"])

    def __len__(self) -> int:
        # As mmengine's InfiniteSampler: the dataset's size, for the loops' and hooks' progress figures.
        return self.size


def _shuffled_passes(indices: range, generator: torch.Generator) -> Iterator[int]:
    while True:
        for position in torch.randperm(len(indices), generator=generator).tolist():
            yield indices[position]
