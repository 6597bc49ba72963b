"""A model registry in any artifact store: numbered versions of trained segmenters, and which one is current.

Under `<registry>/<name>/` (e.g. `s3://wsseg/registry/segmenter/`):
- `v0001/`, `v0002/`, ...: a version's model files, copied from a train-segmenter output, and `version.json`
  with its lineage (parent version, data URI, config, classes, metrics, time, a free `source` note, and the
  promotion gate's decision where the gate ran). version.json is written last, so a version exists only once
  complete: a crash mid-copy leaves a folder without it, which the registry ignores and the next
  registration reuses. Numbers are never reused once a version.json holds them.
- `current.json`: the current version and the history of every pointer change (who, why, when), written in
  one atomic write, so pointer and history never disagree. `rollback` returns to the version that was current
  before the latest promotion still in effect.

The store has no compare-and-swap, so two registrations into one name at the same moment could pick the same
number: register from one place (a pipeline's step; `wsseg schedule --max-concurrency 1`).
"""
from __future__ import annotations

import getpass
import json
import re
import shutil
import socket
from datetime import datetime, timezone

from wsseg.errors import WssegError
from wsseg.store import ArtifactStore
from wsseg.store.base import COPY_CHUNK_BYTES

# What train-segmenter writes (wsseg.steps.train_segmenter), named here so the registry loads without torch.
REQUIRED_MODEL_FILES = ("checkpoint.pth", "mmseg_config.py")
OPTIONAL_MODEL_FILES = ("metrics.json",)
VERSION_FILE = "version.json"
POINTER_FILE = "current.json"
VERSION_FOLDER = re.compile(r"v(\d+)")
# The promotion gate's settings (`registry.gate`, checked by `wsseg.incremental.promotion`).
GATE_DEFAULTS = {"max_old_drop": 5.0, "min_new_miou": None}


def default_config(preset: str) -> dict:
    return {"name": "segmenter", "gate": dict(GATE_DEFAULTS)}


class RegistryError(WssegError):
    """The registry cannot do what was asked; the message names the registry and the fix."""


class UnknownVersion(RegistryError):
    pass


class EmptyRegistry(RegistryError):
    pass


class NoRollbackTarget(RegistryError):
    pass


class ClassesDoNotExtendParent(RegistryError):
    pass


class ModelRegistry:
    """The versions of one model `name` in `root` (the registry's store, e.g. `<run store>/registry`)."""

    def __init__(self, root: ArtifactStore, name: str = "segmenter"):
        self.name = name
        self.store = root.child(name)

    @property
    def uri(self) -> str:
        return self.store.uri

    def register(self, model: ArtifactStore, *, classes: list[str], metrics: dict, data: str, config: str,
                 parent: int | None = None, source: str = "", decision: dict | None = None) -> dict:
        """Copy the trained segmenter in `model` into a new version and return its version.json record.

        `classes` must start with the parent's classes, in order: an incremental step adds classes after the
        ones its parent predicts, and the output channels keep their meaning.
        """
        if parent is not None:
            self._check_extends(parent, classes)
        files = self._model_files(model)
        number = max(self._numbers(), default=0) + 1
        folder = self._version_store(number)
        for key in folder.list():  # a crashed registration's leftovers
            folder.delete(key)
        for key in files:
            _copy(model, key, folder)
        record = {"version": number, "parent": parent, "created": _now(), "data": data, "config": config,
                  "classes": list(classes), "metrics": metrics, "source": source, "files": files,
                  "copied_from": model.uri, "promotion": decision}
        folder.put_bytes(VERSION_FILE, _json(record))
        return record

    def versions(self) -> list[dict]:
        """Every complete version's record, oldest first."""
        return [self.version(number) for number in self._numbers()]

    def version(self, number: int) -> dict:
        folder = self._version_store(number)
        if not folder.exists(VERSION_FILE):
            known = ", ".join(map(str, self._numbers())) or "none yet"
            raise UnknownVersion(f"{self.uri} has no version {number} (versions: {known}); "
                                 f"list them with: wsseg models list --registry ... --name {self.name}")
        return json.loads(folder.get_bytes(VERSION_FILE))

    def current_number(self) -> int | None:
        return self._pointer()["version"]

    def current(self) -> dict:
        number = self.current_number()
        if number is None:
            raise EmptyRegistry(self._no_current_message())
        return self.version(number)

    def history(self) -> list[dict]:
        """Every change of the current pointer, oldest first."""
        return self._pointer()["history"]

    def promote(self, number: int, reason: str, by: str | None = None) -> dict:
        """Make version `number` current; promoting the current version again changes nothing, so a retried
        step does not grow the history. Returns the pointer."""
        self.version(number)
        pointer = self._pointer()
        if pointer["version"] == number:
            return pointer
        return self._move_pointer(pointer, "promote", number, reason, by)

    def rollback(self, reason: str, by: str | None = None) -> dict:
        """Make current again the version that was current before the latest promotion still in effect."""
        pointer = self._pointer()
        target = _rollback_target(pointer["history"])
        if target is None:
            raise NoRollbackTarget(f"{self.uri}: no earlier current version to roll back to (current: "
                                   f"{pointer['version']}); make another version current with: "
                                   "wsseg models promote VERSION --registry ... --reason ...")
        return self._move_pointer(pointer, "rollback", target, reason, by)

    def fetch(self, number: int | None, into: ArtifactStore) -> ArtifactStore:
        """Copy version `number`'s model files (the current version's when None) to `into`, a store the
        evaluate and predict steps load a segmenter from."""
        record = self.current() if number is None else self.version(number)
        folder = self._version_store(record["version"])
        for key in record["files"]:
            _copy(folder, key, into)
        return into

    def _check_extends(self, parent: int, classes: list[str]) -> None:
        parent_classes = self.version(parent)["classes"]
        if list(classes[:len(parent_classes)]) != parent_classes:
            raise ClassesDoNotExtendParent(
                f"{self.uri}: the new version's classes {list(classes)} do not extend those of its parent, "
                f"version {parent}: {parent_classes}; keep the parent's classes first, in its order, and add "
                "new ones after them (or register without a parent)")

    def _model_files(self, model: ArtifactStore) -> list[str]:
        """The model files to copy: the version's manifest, so fetch copies these and no leftovers."""
        missing = [key for key in REQUIRED_MODEL_FILES if not model.exists(key)]
        if missing:
            raise RegistryError(f"{model.uri} holds no {', '.join(missing)}: register the output store of "
                                "train-segmenter, not the run's store or a step's parent folder")
        return [*REQUIRED_MODEL_FILES, *(key for key in OPTIONAL_MODEL_FILES if model.exists(key))]

    def _numbers(self) -> list[int]:
        numbers = []
        for key in self.store.list("v"):
            folder, _, name = key.partition("/")
            match = VERSION_FOLDER.fullmatch(folder)
            if match and name == VERSION_FILE:
                numbers.append(int(match[1]))
        return sorted(numbers)

    def _version_store(self, number: int) -> ArtifactStore:
        return self.store.child(f"v{number:04d}")

    def _pointer(self) -> dict:
        if not self.store.exists(POINTER_FILE):
            return {"version": None, "history": []}
        return json.loads(self.store.get_bytes(POINTER_FILE))

    def _move_pointer(self, pointer: dict, action: str, number: int, reason: str, by: str | None) -> dict:
        change = {"action": action, "version": number, "previous": pointer["version"], "reason": reason,
                  "by": by or _who(), "at": _now()}
        moved = {"version": number, "history": [*pointer["history"], change]}
        self.store.put_bytes(POINTER_FILE, _json(moved))
        return moved

    def _no_current_message(self) -> str:
        if not self._numbers():
            return f"{self.uri} holds no versions yet; a pipeline's register step adds them"
        return (f"{self.uri} has versions but none is current; make one current with: "
                "wsseg models promote VERSION --registry ... --reason ...")


def _rollback_target(history: list[dict]) -> int | None:
    """The version current before the latest promotion that no rollback has undone yet (a stack: each
    promotion pushes the version it replaced, each rollback pops one)."""
    replaced = []
    for change in history:
        if change["action"] == "promote":
            replaced.append(change["previous"])
        elif replaced:
            replaced.pop()
    return replaced[-1] if replaced else None


def _copy(source: ArtifactStore, key: str, target: ArtifactStore) -> None:
    with source.open_read(key) as reader, target.open_write(key) as writer:
        shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)


def _json(record: dict) -> bytes:
    return json.dumps(record, indent=2).encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid may have no passwd entry and no $USER
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
