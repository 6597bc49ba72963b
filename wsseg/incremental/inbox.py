"""The inbox: where new labelled images arrive, batch by batch, for the `incremental` pipeline (METHODS.md §2).

Under `<inbox>/` (any store, e.g. `s3://wsseg/inbox/`), one folder per batch:
- `<batch>/manifest.csv` or `<batch>/manifest.jsonl`: the batch's images and their image-level labels, in the
  manifest format `wsseg.data.load_samples` reads (`image,labels`; paths relative to the batch's folder), and the
  images themselves. Masks are not read: an incremental step learns from image labels alone.
- `<batch>/processed.json`: the marker the update writes last, once the batch's version is registered and the gate
  has decided (which version, promoted or not, why). One atomic write per batch, so a marker is whole or absent.

A batch exists once its manifest does: upload the images first and the manifest last, so that a half-uploaded
batch is never picked. Batches are processed oldest first in name order: name them so that they sort by arrival,
such as `2026-12-01-bicycles`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from wsseg.errors import WssegError
from wsseg.store import ArtifactStore

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
PROCESSED_MARKER = "processed.json"


class Inbox:
    def __init__(self, store: ArtifactStore):
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    def batches(self) -> list[str]:
        """Every batch with a manifest, in name order."""
        return sorted({folder for folder, name in self._entries() if name in MANIFEST_NAMES})

    def pending(self) -> list[str]:
        """The batches not yet processed, oldest first."""
        processed = {folder for folder, name in self._entries() if name == PROCESSED_MARKER}
        return [batch for batch in self.batches() if batch not in processed]

    def oldest_pending(self) -> str | None:
        pending = self.pending()
        return pending[0] if pending else None

    def batch_uri(self, batch: str) -> str:
        return self.store.child(batch).uri

    def fetch(self, batch: str, folder: Path) -> Path:
        """Copy the batch into the local `folder`; returns its manifest's path there."""
        manifest = self.fetch_manifest(batch, folder)
        source = self.store.child(batch)
        for key in source.list():
            if key not in (PROCESSED_MARKER, manifest.name):
                source.get_file(key, folder / key)
        return manifest

    def fetch_manifest(self, batch: str, folder: Path) -> Path:
        """Copy the batch's manifest alone into the local `folder`; returns its path there."""
        source = self.store.child(batch)
        manifest = next((name for name in MANIFEST_NAMES if source.exists(name)), None)
        if manifest is None:
            raise WssegError(f"{source.uri} holds no {' or '.join(MANIFEST_NAMES)}; a batch is a folder of images "
                             "with a manifest of their image-level labels (see wsseg.incremental.inbox)")
        source.get_file(manifest, folder / manifest)
        return folder / manifest

    def processed(self, batch: str) -> dict | None:
        """The batch's marker, or None while it waits."""
        store = self.store.child(batch)
        return json.loads(store.get_bytes(PROCESSED_MARKER)) if store.exists(PROCESSED_MARKER) else None

    def mark_processed(self, batch: str, outcome: dict) -> dict:
        marker = {"batch": batch, "processed": datetime.now(timezone.utc).isoformat(timespec="seconds"), **outcome}
        self.store.child(batch).put_bytes(PROCESSED_MARKER, json.dumps(marker, indent=2).encode())
        return marker

    def _entries(self) -> list[tuple[str, str]]:
        """(batch, file name) of each file directly inside a batch's folder."""
        entries = []
        for key in self.store.list():
            folder, _, name = key.partition("/")
            if name and "/" not in name:
                entries.append((folder, name))
        return entries
