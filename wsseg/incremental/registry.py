"""A model registry in any artifact store: numbered versions of trained segmenters, and which one is current.

Under `<registry>/<name>/` (e.g. `s3://wsseg/registry/segmenter/`):
- `v0001/`, `v0002/`, ...: a version's `claim.json`, its model files, copied from a train-segmenter output, and
  `version.json` with its lineage (parent version, data URI, config, classes, metrics, time, a free `source` note,
  and the promotion gate's decision where the gate ran).
- `current.json`: the current version and the history of every pointer change (who, why, when, and an id),
  written in one atomic write, so pointer and history never disagree. `rollback` returns to the version that was
  current before the latest promotion still in effect.

Several writers may share a registry (a scheduled run and a manual retry, a person's `wsseg models rollback` while
a pipeline's gate promotes), through the store's conditional writes (`ArtifactStore.put_bytes`):
- A registration claims its number by creating `claim.json` only if absent: of writers that pick one number, one
  creates it and the others move on to the next, so no two registrations share a number and nobody ever writes
  into, or clears, a folder it did not claim. version.json is written last (also only if absent), so a version
  exists only once complete. A registration that crashed leaves its claim and no version.json: the registry
  ignores it, and a rerun of that same registration (the same model store and data, as `claim.json` records)
  finishes it in its folder; any other registration takes a higher number. That is safe because the only writer
  that ever enters a claimed folder is one copying the very model the claim names, and if two such reruns race,
  the same files land twice and the first version.json stands. A claim nobody reruns leaves a gap in the numbers.
- `current.json` changes by read, decide, and replace only if unchanged since the read (a compare-and-swap);
  on a conflict the change is decided again on the fresh pointer: `promote` and `rollback` never overwrite
  another writer's change. A rollback recomputes its target from the fresh history. The gate's promotion
  (`judged_against`) holds only while the version the gate compared the candidate with is still current; if
  another became current in between, it is refused with `StalePromotion`, never applied on a pointer it did not
  judge. Every change is thus applied once or refused with a `RegistryConflict`, none lost silently.
"""
from __future__ import annotations

import getpass
import json
import random
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone

from wsseg.errors import WssegError
from wsseg.store import ArtifactStore, StoreConflict, StoreNotFound
from wsseg.store.base import COPY_CHUNK_BYTES

# What train-segmenter writes (wsseg.steps.train_segmenter), named here so the registry loads without torch.
REQUIRED_MODEL_FILES = ("checkpoint.pth", "mmseg_config.py")
OPTIONAL_MODEL_FILES = ("metrics.json",)
VERSION_FILE = "version.json"
CLAIM_FILE = "claim.json"
POINTER_FILE = "current.json"
VERSION_FOLDER = re.compile(r"v(\d+)")
# The promotion gate's settings (`registry.gate`, checked by `wsseg.incremental.promotion`).
GATE_DEFAULTS = {"max_old_drop": 5.0, "min_new_miou": None}
# A compare-and-swap of current.json loses only to a writer that got in first, so each round some writer wins: a
# few dozen writers at once need at most as many rounds. The jittered backoff spreads the retries of a crowd out.
POINTER_ATTEMPTS = 40
FIRST_BACKOFF_S = 0.01
MAX_BACKOFF_S = 0.5
# `promote(judged_against=...)`'s default: the promotion holds whichever version is current.
ANY_CURRENT = object()


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


class RegistryConflict(RegistryError):
    """Other writers changed the registry so that this change no longer holds, or kept changing it."""


class StalePromotion(RegistryConflict):
    """The gate judged a candidate against a version that is no longer current."""


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
        number = self._claim_number({"copied_from": model.uri, "data": data})
        folder = self._version_store(number)
        if folder.exists(VERSION_FILE):
            return self.version(number)  # a rerun of a registration that is finished
        for key in files:
            _copy(model, key, folder)
        record = {"version": number, "parent": parent, "created": _now(), "data": data, "config": config,
                  "classes": list(classes), "metrics": metrics, "source": source, "files": files,
                  "copied_from": model.uri, "promotion": decision}
        try:
            folder.put_bytes(VERSION_FILE, _json(record), if_absent=True)
        except StoreConflict:
            return self.version(number)  # a rerun of this same registration finished first
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

    def promote(self, number: int, reason: str, by: str | None = None, *, judged_against=ANY_CURRENT) -> dict:
        """Make version `number` current; promoting the current version again changes nothing, so a retried
        step does not grow the history. Returns the pointer.

        `judged_against`: the version (None: no version) that was current when the gate judged `number`; if another
        is current by the time the pointer moves, the judgement no longer holds: `StalePromotion`."""
        self.version(number)

        def promotion(pointer: dict) -> dict | None:
            if pointer["version"] == number:
                return None
            if judged_against is not ANY_CURRENT and pointer["version"] != judged_against:
                raise StalePromotion(self._stale_message(number, judged_against, pointer))
            return _change("promote", number, pointer, reason, by)

        return self._change_pointer(promotion, f"promote version {number}")

    def rollback(self, reason: str, by: str | None = None) -> dict:
        """Make current again the version that was current before the latest promotion still in effect (in the
        history as it stands when the pointer moves)."""

        def rollback(pointer: dict) -> dict:
            target = _rollback_target(pointer["history"])
            if target is None:
                raise NoRollbackTarget(f"{self.uri}: no earlier current version to roll back to (current: "
                                       f"{pointer['version']}); make another version current with: "
                                       "wsseg models promote VERSION --registry ... --reason ...")
            return _change("rollback", target, pointer, reason, by)

        return self._change_pointer(rollback, "roll back")

    def model_store(self, number: int) -> ArtifactStore:
        """Version `number`'s folder, which holds its model files as train-segmenter stored them (`load_segmenter`
        reads it as it is)."""
        self.version(number)
        return self._version_store(number)

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
        """The complete versions' numbers."""
        return sorted(number for number, names in self._folders().items() if VERSION_FILE in names)

    def _folders(self) -> dict[int, set[str]]:
        """The names of the files in each version folder, complete or not, by number."""
        folders: dict[int, set[str]] = {}
        for key in self.store.list("v"):
            folder, _, name = key.partition("/")
            match = VERSION_FOLDER.fullmatch(folder)
            if match:
                folders.setdefault(int(match[1]), set()).add(name)
        return folders

    def _claim_number(self, registration: dict) -> int:
        """The number for `registration` (its model store and data): the one an earlier attempt at it claimed,
        finished or not (two reruns of one crashed registration, one finishing before the other looks), else the
        first free one above every folder in use, claimed by creating its claim.json. A model store is one training's
        output, so registering it again for the same data is a rerun, never a new version."""
        folders = self._folders()
        for number, names in sorted(folders.items()):
            if CLAIM_FILE in names and self._claimed_for(number) == registration:
                return number
        number = max(folders, default=0) + 1
        claim = _json({**registration, "by": who(), "at": _now()})
        while True:
            try:
                self._version_store(number).put_bytes(CLAIM_FILE, claim, if_absent=True)
                return number
            except StoreConflict:
                number += 1

    def _claimed_for(self, number: int) -> dict:
        claim = json.loads(self._version_store(number).get_bytes(CLAIM_FILE))
        return {key: claim[key] for key in ("copied_from", "data")}

    def _version_store(self, number: int) -> ArtifactStore:
        return self.store.child(f"v{number:04d}")

    def _pointer(self) -> dict:
        return self._read_pointer()[0]

    def _read_pointer(self) -> tuple[dict, str | None]:
        """The pointer and its store version (None while there is no current.json)."""
        try:
            data, version = self.store.get_versioned(POINTER_FILE)
        except StoreNotFound:
            return {"version": None, "history": []}, None
        return json.loads(data), version

    def _change_pointer(self, decide: Callable[[dict], dict | None], what: str) -> dict:
        """Append the change `decide` makes of the pointer (None: none to make) and move the pointer to its version,
        if current.json is unchanged since it was read; else read it again and decide again. Returns the pointer."""
        change_id = secrets.token_hex(8)
        for attempt in range(POINTER_ATTEMPTS):
            pointer, version = self._read_pointer()
            # A write can land although its answer was lost and the client retried it into a refusal.
            if any(entry.get("id") == change_id for entry in pointer["history"]):
                return pointer
            change = decide(pointer)
            if change is None:
                return pointer
            moved = {"version": change["version"], "history": [*pointer["history"], {**change, "id": change_id}]}
            try:
                if version is None:
                    self.store.put_bytes(POINTER_FILE, _json(moved), if_absent=True)
                else:
                    self.store.put_bytes(POINTER_FILE, _json(moved), if_version=version)
                return moved
            except StoreConflict:
                time.sleep(random.uniform(0, min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** attempt)))
        raise RegistryConflict(f"{self.uri}: could not {what}: other writers changed {POINTER_FILE} before each of "
                               f"{POINTER_ATTEMPTS} attempts; nothing was changed, try again")

    def _stale_message(self, number: int, judged_against: int | None, pointer: dict) -> str:
        since = ""
        if pointer["history"]:
            last = pointer["history"][-1]
            since = f" ({last['action']} by {last['by']} at {last['at']}: {last['reason']})"
        return (f"{self.uri}: version {number} was judged by the gate against version {judged_against}, but version "
                f"{pointer['version']} is current now{since}, so the judgement no longer holds; version {number} "
                f"stays registered, not current. Score it against version {pointer['version']} again, or promote "
                f"it by hand: wsseg models promote {number} --registry ... --reason ...")

    def _no_current_message(self) -> str:
        if not self._numbers():
            return f"{self.uri} holds no versions yet; a pipeline's register step adds them"
        return (f"{self.uri} has versions but none is current; make one current with: "
                "wsseg models promote VERSION --registry ... --reason ...")


def _change(action: str, number: int, pointer: dict, reason: str, by: str | None) -> dict:
    return {"action": action, "version": number, "previous": pointer["version"], "reason": reason,
            "by": by or who(), "at": _now()}


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


def who() -> str:
    """Who is acting, for the records: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid may have no passwd entry and no $USER
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
