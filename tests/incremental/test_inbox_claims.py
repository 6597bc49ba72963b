"""Inbox batches claimed exactly once by concurrent runs, each a separate process, on a local directory and on a real
S3 server (moto): two runs take different batches, a run killed holding a lease is taken over once the lease
expires, a held lease is renewed while its work runs, and a batch is marked processed once."""
import json
import os
import signal
import time

import pytest

from tests.incremental.concurrent_writers import SPAWN, Racers, claim_and_die, claim_and_process
from wsseg.incremental.inbox import HeldLease, Inbox, Lease, LeaseLost
from wsseg.incremental.registry import ModelRegistry
from wsseg.store import open_store

BATCHES = ("batch-1", "batch-2")
ROUNDS = 10
SHORT_LEASE_S = 2.0


@pytest.fixture(params=["local", "s3"])
def run_store_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_atomic_env")


@pytest.fixture
def inbox(run_store_uri) -> Inbox:
    """An inbox of two batches, each a manifest alone: claiming reads nothing else."""
    inbox = Inbox(open_store(run_store_uri).child("inbox"))
    for batch in BATCHES:
        inbox.store.put_bytes(f"{batch}/manifest.csv", b"image,labels\n")
    return inbox


def test_two_runs_started_together_process_each_batch_once(inbox, run_store_uri, fake_model):
    registry = ModelRegistry(open_store(run_store_uri).child("registry"))
    holders = ("run a", "run b")
    racers = [(claim_and_process, (inbox.uri, registry.uri.rpartition("/")[0], fake_model().uri, holder))
              for holder in holders]
    shares = []
    with Racers(racers, ROUNDS) as race:
        for _ in range(ROUNDS):
            known = {record["version"] for record in registry.versions()}
            processed = race.race()
            assert sorted(batch for batches in processed for batch in batches) == list(BATCHES), processed
            new = [record for record in registry.versions() if record["version"] not in known]
            assert sorted(record["data"] for record in new) == [inbox.batch_uri(batch) for batch in BATCHES]
            for holder, batches in zip(holders, processed, strict=True):
                assert all(inbox.processed(batch)["holder"] == holder for batch in batches)
            shares.append(tuple(len(batches) for batches in processed))
            for batch in BATCHES:  # the next round starts from a fresh inbox of the same two batches
                inbox.store.delete(f"{batch}/processed.json")
                inbox.store.delete(f"{batch}/lease.json")
    print(f"\n{inbox.uri}: {ROUNDS} rounds of two runs at once, batches each run processed: {shares}; "
          f"{len(registry.versions())} versions, one per batch and round")
    assert len(registry.versions()) == ROUNDS * len(BATCHES)


def test_a_run_killed_holding_a_lease_is_taken_over_after_it_expires(inbox, tmp_path):
    claimed_file = tmp_path / "claimed.json"
    killed = SPAWN.Process(target=claim_and_die, args=(inbox.uri, "batch-1", "killed run", SHORT_LEASE_S,
                                                       str(claimed_file)))
    killed.start()
    deadline = time.monotonic() + 60
    while not claimed_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.join()
    claim = json.loads(claimed_file.read_text())
    assert claim["claimed"]
    held = json.loads(inbox.store.get_bytes("batch-1/lease.json"))

    # While the lease stands, another run takes the next batch, and not the held one.
    assert inbox.claim("batch-1", "next run") is None
    assert "killed run" in inbox.taken_message("batch-1")
    assert inbox.claim_next("next run").batch == "batch-2"
    while (lease := inbox.claim("batch-1", "next run")) is None:
        time.sleep(0.1)
    waited = time.time() - claim["at"]
    print(f"\n{inbox.uri}: the killed run's {SHORT_LEASE_S:g} s lease was taken over {waited:.2f} s after its claim")
    assert waited >= SHORT_LEASE_S - 0.1  # `at` was taken just after the claim
    assert lease.holder == "next run" and lease.token != held["token"]
    inbox.mark_processed("batch-1", {"version": 2, "holder": lease.holder})
    assert inbox.processed("batch-1")["holder"] == "next run"
    # Had the killed run come back, its lease would be gone: it stops before registering or marking anything.
    with pytest.raises(LeaseLost, match="taken over by next run"):
        inbox.renew(Lease(**held))


def test_a_held_lease_is_renewed_while_its_work_runs_and_released_when_it_fails(inbox):
    lease = inbox.claim("batch-1", "run a", duration_s=0.6)
    with pytest.raises(RuntimeError, match="training failed"), HeldLease(inbox, lease, duration_s=0.6):
        time.sleep(1.5)  # more than two leases: only renewals keep it
        assert inbox.claim("batch-1", "run b", duration_s=0.6) is None
        raise RuntimeError("training failed")
    assert inbox.claim("batch-1", "run b").holder == "run b"


def test_a_batch_is_marked_processed_once(inbox):
    first = inbox.mark_processed("batch-1", {"version": 2})
    assert inbox.mark_processed("batch-1", {"version": 3}) == first
    assert inbox.processed("batch-1")["version"] == 2
    assert inbox.claim("batch-1", "run a") is None and inbox.pending() == ["batch-2"]
