"""The inbox: where new labelled images arrive, batch by batch, for the `incremental` pipeline (docs/METHODS.md §2).

Under `<inbox>/` (any store, e.g. `s3://wsseg/inbox/`), one folder per batch:
- `<batch>/manifest.csv` or `<batch>/manifest.jsonl`: the batch's images and their image-level labels, in the
  manifest format `wsseg.data.load_samples` reads (`image,labels`; paths relative to the batch's folder), and the
  images themselves. Masks are not read: an incremental step learns from image labels alone.
- `<batch>/lease.json`: who is processing the batch, since when and until when (`Lease`).
- `<batch>/processed.json`: the marker the update writes last, once the batch's version is registered and the gate
  has decided (which version, promoted or not, why). Created only if absent: a batch is marked once, whole.

A batch exists once its manifest does: upload the images first and the manifest last, so that a half-uploaded
batch is never picked. Batches are processed oldest first in name order: name them so that they sort by arrival,
such as `2026-12-01-bicycles`.

Several runs may look at the inbox at once (a scheduled run and a manual one, a retry): each claims a batch
before working on it, by creating its lease only if absent, so that exactly one run holds a batch. A run that
finds the oldest batch held takes the next one, or ends when none is free. The holder renews its lease while it
works (`HeldLease`); a lease not renewed by its expiry (a killed pod) may be taken over by another run, by
replacing it only if unchanged since read, and that run resumes the work where the first left it. A holder
checks that its lease still stands right before it registers a version and marks the batch, so a holder whose
lease was taken over stops there. Expiry compares the clocks of different machines: keep the lease (15 minutes)
much longer than their skew.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from wsseg.errors import StoreError, WssegError
from wsseg.incremental.registry import who
from wsseg.store import ArtifactStore, StoreConflict

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
PROCESSED_MARKER = "processed.json"
LEASE_FILE = "lease.json"
LEASE_S = 15 * 60
# Renewed three times per lease, so a holder keeps its batch through two failed renewals in a row.
RENEWALS_PER_LEASE = 3


class BatchTaken(WssegError):
    """The batch is processed already, or leased to another holder whose lease has not expired."""


class LeaseLost(WssegError):
    """Another holder took the batch over after this holder's lease expired."""


@dataclass(frozen=True)
class Lease:
    """`holder`'s exclusive claim on `batch` until `expires` (ISO 8601, UTC); `token` tells this tenure from a
    later one, even of the same holder."""

    batch: str
    holder: str
    token: str
    claimed: str
    expires: str

    def expired(self) -> bool:
        return datetime.fromisoformat(self.expires) <= datetime.now(timezone.utc)


def default_holder() -> str:
    """A holder name for a run started by hand: user@host and the process."""
    return f"{who()} pid {os.getpid()}"


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

    def claim(self, batch: str, holder: str, duration_s: float = LEASE_S) -> Lease | None:
        """Lease `batch` to `holder` for `duration_s`; None if it is processed, or leased to another holder whose
        lease has not expired. `holder`'s own lease is taken anew (a retried step resumes at once), an expired one
        taken over."""
        if self.processed(batch) is not None:
            return None
        store = self.store.child(batch)
        lease = _new_lease(batch, holder, duration_s)
        try:
            store.put_bytes(LEASE_FILE, _lease_json(lease), if_absent=True)
            return lease
        except StoreConflict:
            data, version = store.get_versioned(LEASE_FILE)
        held = Lease(**json.loads(data))
        if held.holder != holder and not held.expired():
            return None
        try:
            store.put_bytes(LEASE_FILE, _lease_json(lease), if_version=version)
        except StoreConflict:
            return None  # another holder took it over, or its holder renewed it, since the read
        if held.holder != holder:
            log.info("inbox: %s takes %s over from %s, whose lease expired at %s", holder, batch, held.holder,
                     held.expires)
        return lease

    def claim_next(self, holder: str, duration_s: float = LEASE_S) -> Lease | None:
        """The oldest pending batch that `holder` can claim (`claim`), claimed; None when there is none."""
        for batch in self.pending():
            lease = self.claim(batch, holder, duration_s)
            if lease is not None:
                return lease
        return None

    def renew(self, lease: Lease, duration_s: float = LEASE_S) -> Lease:
        """`lease` extended to `duration_s` from now; `LeaseLost` if another holder took the batch over since."""
        store = self.store.child(lease.batch)
        data, version = store.get_versioned(LEASE_FILE)
        held = Lease(**json.loads(data))
        if held.token != lease.token:
            raise self._lost(lease, held.holder)
        renewed = Lease(lease.batch, lease.holder, lease.token, lease.claimed, _from_now(duration_s))
        try:
            store.put_bytes(LEASE_FILE, _lease_json(renewed), if_version=version)
        except StoreConflict:
            raise self._lost(lease, "another holder") from None
        return renewed

    def release(self, lease: Lease) -> None:
        """Let any holder claim the batch at once: its lease expires now."""
        self.renew(lease, duration_s=0)

    def taken_message(self, batch: str) -> str:
        """Why `claim` refused `batch`."""
        marker = self.processed(batch)
        if marker is not None:
            return f"{self.batch_uri(batch)} was processed already (version {marker.get('version')})"
        held = Lease(**json.loads(self.store.child(batch).get_bytes(LEASE_FILE)))
        return (f"{self.batch_uri(batch)} is being processed by {held.holder} (since {held.claimed}, leased until "
                f"{held.expires}); it can be taken over once that lease expires unrenewed")

    def _lost(self, lease: Lease, taker: str) -> LeaseLost:
        return LeaseLost(f"{self.batch_uri(lease.batch)}: the lease of {lease.holder}, due to expire at "
                         f"{lease.expires}, was taken over by {taker}; this run stops so that the batch is not "
                         "processed twice")

    def fetch(self, batch: str, folder: Path) -> Path:
        """Copy the batch into the local `folder`; returns its manifest's path there."""
        manifest = self.fetch_manifest(batch, folder)
        source = self.store.child(batch)
        for key in source.list():
            if key not in (PROCESSED_MARKER, LEASE_FILE, manifest.name):
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
        """Mark `batch` processed with `outcome`, once: a batch marked already keeps its marker, which is returned."""
        marker = {"batch": batch, "processed": datetime.now(timezone.utc).isoformat(timespec="seconds"), **outcome}
        try:
            self.store.child(batch).put_bytes(PROCESSED_MARKER, json.dumps(marker, indent=2).encode(), if_absent=True)
        except StoreConflict:
            return self.processed(batch)
        return marker

    def _entries(self) -> list[tuple[str, str]]:
        """(batch, file name) of each file directly inside a batch's folder."""
        entries = []
        for key in self.store.list():
            folder, _, name = key.partition("/")
            if name and "/" not in name:
                entries.append((folder, name))
        return entries


class HeldLease:
    """A context that keeps `lease` renewed from a background thread while its work runs, and releases it if the
    work fails, so that the next run may retry the batch at once. `check()` renews at once, raising `LeaseLost` if
    the batch was taken over: call it right before a step that must happen once."""

    def __init__(self, inbox: Inbox, lease: Lease, duration_s: float = LEASE_S):
        self.inbox = inbox
        self.lease = lease
        self.duration_s = duration_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                         name=f"lease-{lease.batch}")

    def __enter__(self) -> HeldLease:
        self._renewer.start()
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        self._stop.set()
        self._renewer.join()
        if error_type is not None and not isinstance(error, LeaseLost):
            try:
                with self._lock:
                    self.inbox.release(self.lease)
            except (LeaseLost, StoreError) as release_error:
                log.warning("inbox: could not release %s: %s", self.lease.batch, release_error)

    def check(self) -> None:
        with self._lock:
            self.lease = self.inbox.renew(self.lease, self.duration_s)

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.duration_s / RENEWALS_PER_LEASE):
            try:
                self.check()
            except LeaseLost as lost:
                log.error("inbox: %s", lost)
                return
            except StoreError as error:  # the next renewal may get through; the lease outlives two failures
                log.warning("inbox: renewing the lease on %s failed: %s", self.lease.batch, error)


def _new_lease(batch: str, holder: str, duration_s: float) -> Lease:
    return Lease(batch, holder, secrets.token_hex(8), _from_now(0), _from_now(duration_s))


def _from_now(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _lease_json(lease: Lease) -> bytes:
    return json.dumps(asdict(lease), indent=2).encode()
