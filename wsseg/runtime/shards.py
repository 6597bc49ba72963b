"""Shards: a per-image step split into N tasks, each on its own slice of the images, then one light merge.

An image belongs to shard `blake2b(image id) mod N`. Its id alone decides, so each task finds its slice without
hearing from the others, a slice keeps its images when others join the dataset, and the slices are near equal in
size (each of 4 shards of 20,000 ids within 3 % of an equal share). Every shard writes its images' outputs into
the step's one store, as the unsharded step does, and skips those already there, so each resumes alone; its own
record (summary, statistics, time) goes under `shards/<k>-of-<N>/`, where the merge task reads all N.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from wsseg.errors import ConfigError, WssegError
from wsseg.store import ArtifactStore

Item = TypeVar("Item")
SHARDS_FOLDER = "shards"
SHARD_SUMMARY = "summary.json"


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index} of {self.count}: a step has shards 0..count-1, count >= 1")

    def holds(self, image_id: str) -> bool:
        return self.count == 1 or shard_index(image_id, self.count) == self.index

    def take(self, items: Iterable[Item], image_id: Callable[[Item], str] = lambda item: item.image_id) -> list[Item]:
        """The items of this shard's slice, in their order."""
        return [item for item in items if self.holds(image_id(item))]

    @property
    def folder(self) -> str:
        """Where this shard keeps its own record in the step's store."""
        return f"{SHARDS_FOLDER}/{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"


WHOLE = Shard(0, 1)


def shard_index(image_id: str, count: int) -> int:
    digest = hashlib.blake2b(image_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_count(config: dict, requested: int = 0) -> int:
    """The shards a run splits its per-image steps into: `requested` (a pipeline parameter) when above 0, else the
    config's `shards`."""
    count = requested if requested > 0 else config.get("shards", 1)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"shards: {count!r}; give a whole number of tasks per per-image step, 1 or more")
    return count


def write_shard_record(out: ArtifactStore, shard: Shard, name: str, record: dict) -> None:
    out.put_bytes(f"{shard.folder}/{name}", json.dumps(record, indent=2).encode())


def shard_records(out: ArtifactStore, count: int, name: str = SHARD_SUMMARY) -> list[dict]:
    """Record `name` of each of the `count` shards of the step stored in `out`; names the shards that have none."""
    shards = [Shard(index, count) for index in range(count)]
    missing = [str(shard) for shard in shards if not out.exists(f"{shard.folder}/{name}")]
    if missing:
        raise WssegError(f"{out.uri}: {', '.join(missing)} left no {name}; run those shards (they resume where they "
                         "stopped) before merging")
    return [json.loads(out.get_bytes(f"{shard.folder}/{name}")) for shard in shards]


def summed(records: list[dict], keys: Iterable[str]) -> dict:
    """The sum over the shards' records of each count in `keys`."""
    return {key: sum(record.get(key) or 0 for record in records) for key in keys}
