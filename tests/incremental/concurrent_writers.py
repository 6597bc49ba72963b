"""Writers of one registry or inbox in separate processes, released at the same moment.

Each writer is spawned, not forked: it shares no client, connection, lock or open file with the test or the other
writers, as separate pods would not. It opens the store from its URI (and the environment, for S3) itself.
A writer's result comes back through a queue; an exception comes back as `Raised` so a test can say which
writer failed and how.
"""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass

from wsseg.incremental.inbox import Inbox
from wsseg.incremental.registry import ModelRegistry, RegistryConflict
from wsseg.store import open_store

SPAWN = multiprocessing.get_context("spawn")
WAIT_S = 120
CLASSES = ["background", "aeroplane"]


@dataclass(frozen=True)
class Raised:
    error: str
    message: str


def together(target, calls: list[tuple]) -> list:
    """`target(meet, *call)` for each call, each in its own process; their results in order. `meet` is a barrier
    of them all: each target waits on it, once or more, to do its next step at the same moment as the others."""
    barrier = SPAWN.Barrier(len(calls))
    results = SPAWN.Queue()
    processes = [SPAWN.Process(target=_once, args=(target, call, barrier, results, index))
                 for index, call in enumerate(calls)]
    for process in processes:
        process.start()
    collected = dict(results.get(timeout=WAIT_S) for _ in processes)
    for process in processes:
        process.join(WAIT_S)
    return [collected[index] for index in range(len(calls))]


class Racers:
    """Processes that each run their action once a round, released together by `race()`; between rounds the test
    puts the store back as it wants it. Use as a context manager."""

    def __init__(self, actions: list[tuple], rounds: int):
        self.barrier = SPAWN.Barrier(len(actions) + 1)
        self.results = SPAWN.Queue()
        self.processes = [SPAWN.Process(target=_rounds, args=(action, rounds, self.barrier, self.results, index))
                          for index, action in enumerate(actions)]

    def __enter__(self) -> Racers:
        for process in self.processes:
            process.start()
        return self

    def race(self) -> list:
        """Release every racer for one round; their results, in the order of the actions."""
        self.barrier.wait(WAIT_S)
        collected = dict(self.results.get(timeout=WAIT_S) for _ in self.processes)
        return [collected[index] for index in range(len(self.processes))]

    def __exit__(self, *exc_info) -> None:
        for process in self.processes:
            process.join(WAIT_S if exc_info[0] is None else 0)
            if process.is_alive():
                process.kill()


def _once(target, call, barrier, results, index) -> None:
    results.put((index, _outcome(target, (barrier, *call))))


def _rounds(action, rounds, barrier, results, index) -> None:
    target, call = action
    for _ in range(rounds):
        barrier.wait(WAIT_S)
        results.put((index, _outcome(target, call)))


def _outcome(target, call):
    try:
        return target(*call)
    except Exception as error:
        return Raised(type(error).__name__, str(error))


def register_and_promote(meet, registry_uri: str, model_uri: str, writer: int) -> dict:
    """Register the model at `model_uri`, then make it current: what a pipeline's register step and a person's
    promote do, each at the same moment as the other writers. Returns the version and whether the promotion was
    applied (with its change's id) or refused."""
    registry = ModelRegistry(open_store(registry_uri))
    meet.wait(WAIT_S)
    record = registry.register(open_store(model_uri), classes=CLASSES, metrics={}, data=f"data of writer {writer}",
                               config="c", source=f"writer {writer}")
    meet.wait(WAIT_S)
    try:
        pointer = registry.promote(record["version"], reason=f"writer {writer}'s model", by=f"writer {writer}")
    except RegistryConflict as conflict:
        return {"version": record["version"], "promotion": "refused", "conflict": str(conflict)}
    return {"version": record["version"], "promotion": "applied", "change": pointer["history"][-1]["id"]}


def register(registry_uri: str, model_uri: str, data: str) -> int:
    record = ModelRegistry(open_store(registry_uri)).register(open_store(model_uri), classes=CLASSES, metrics={},
                                                              data=data, config="c")
    return record["version"]


def register_together(meet, registry_uri: str, model_uri: str, data: str) -> int:
    meet.wait(WAIT_S)
    return register(registry_uri, model_uri, data)


def rollback_with_the_cli(registry_uri: str) -> dict:
    """`wsseg models rollback`, as a person types it; its printed change, or Raised with its error line."""
    from wsseg.cli import main

    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        status = main(["models", "rollback", "--registry", registry_uri, "--name", "segmenter",
                       "--reason", "a person rolls back"])
    if status:
        return Raised("exit status", errors.getvalue())
    return {"action": "applied", "change": json.loads(printed.getvalue())["change"]}


def promote_as_the_gate(registry_uri: str, number: int, judged_against: int) -> dict:
    """The promotion gate's promotion of `number`, which it judged against version `judged_against`."""
    from wsseg.incremental.registry import StalePromotion

    registry = ModelRegistry(open_store(registry_uri))
    try:
        pointer = registry.promote(number, "passed the promotion gate", by="promotion gate",
                                   judged_against=judged_against)
    except StalePromotion as stale:
        return {"action": "refused", "conflict": str(stale)}
    return {"action": "applied", "change": pointer["history"][-1]}


def claim_and_process(inbox_uri: str, registry_uri: str, model_uri: str, holder: str) -> list[str]:
    """What an incremental run does with the inbox, its training aside: claim the next free batch, register its
    version, mark it processed; again until no batch is free. Returns the batches it processed."""
    inbox = Inbox(open_store(inbox_uri))
    processed = []
    while (lease := inbox.claim_next(holder)) is not None:
        version = register(registry_uri, trained_anew(model_uri), inbox.batch_uri(lease.batch))
        inbox.renew(lease)
        inbox.mark_processed(lease.batch, {"version": version, "holder": holder})
        processed.append(lease.batch)
    return processed


def trained_anew(model_uri: str) -> str:
    """A copy of the model at `model_uri` in a store of its own, as each run's training writes its own output."""
    model = open_store(model_uri)
    trained = open_store(f"{model_uri.rstrip('/')}-{uuid.uuid4().hex}")
    for key in model.list():
        trained.put_bytes(key, model.get_bytes(key))
    return trained.uri


def claim_and_die(inbox_uri: str, batch: str, holder: str, lease_s: float, claimed_file: str) -> None:
    """Claim `batch` for `lease_s`, say so in `claimed_file`, then hang as a pod that is about to be killed."""
    lease = Inbox(open_store(inbox_uri)).claim(batch, holder, lease_s)
    with open(claimed_file, "w") as file:
        json.dump({"claimed": lease is not None, "at": time.time(), "pid": os.getpid()}, file)
    time.sleep(WAIT_S)

