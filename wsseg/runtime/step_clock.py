"""The wall time a pipeline step took over all its attempts, killed ones included.

A step that finishes writes `step.json` with its summary and seconds. A step killed mid-way (a pod evicted, a run
stopped) writes nothing when it dies, yet it resumes from the progress it saved, so its next attempt alone would
under-report what the step cost. While a step runs, its clock therefore stores the seconds of its unfinished
attempts in `step-attempt.json` every `BEAT_SECONDS`; the next attempt carries them on, and the finished step
folds them into `step.json`. A killed attempt loses at most one beat's seconds. `step.json` also holds what the
finished attempt moved through S3 (`store_traffic`: requests and bytes each way, `wsseg.store.traffic`).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from wsseg.store import ArtifactStore, StoreError, traffic

log = logging.getLogger(__name__)

STEP_RECORD = "step.json"
ATTEMPT_RECORD = "step-attempt.json"
BEAT_SECONDS = 30.0


def _recorded_seconds(out: ArtifactStore, key: str) -> float:
    return json.loads(out.get_bytes(key))["seconds"] if out.exists(key) else 0.0


class StepClock:
    """Times one attempt of the step stored in `out`, from `with` to `record` (finished) or to the end of the
    `with` block (failed: its seconds stay for the next attempt)."""

    def __init__(self, out: ArtifactStore, command: str, beat_seconds: float = BEAT_SECONDS,
                 now: Callable[[], float] = time.perf_counter):
        self.out, self.command, self.beat_seconds, self.now = out, command, beat_seconds, now
        self._stopped = threading.Event()
        self._beats = threading.Thread(target=self._beat_until_stopped, name=f"{command}-clock", daemon=True)

    def __enter__(self) -> StepClock:
        self.carried = _recorded_seconds(self.out, ATTEMPT_RECORD)
        self.traffic_before = traffic.traffic()
        self.started = self.now()
        self._beats.start()
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self._beats.is_alive():
            self._stop()
            self._try_beat()

    def seconds(self) -> float:
        """The unfinished attempts' seconds, this one's so far included."""
        return self.carried + self.now() - self.started

    def beat(self) -> None:
        self.out.put_bytes(ATTEMPT_RECORD, json.dumps({"command": self.command,
                                                       "seconds": round(self.seconds(), 1)}).encode())

    def record(self, summary: dict) -> None:
        """`step.json`: the summary and the seconds of every attempt. A step rerun on a finished run adds its own
        to what the earlier attempts recorded, so that a run's table keeps what the step cost in all."""
        self._stop()
        seconds = round(_recorded_seconds(self.out, STEP_RECORD) + self.seconds(), 1)
        self.out.put_bytes(STEP_RECORD, json.dumps({"command": self.command, "seconds": seconds,
                                                    "store_traffic": traffic.since(self.traffic_before),
                                                    "summary": summary}, indent=2, default=str).encode())
        self.out.delete(ATTEMPT_RECORD)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self.beat_seconds):
            self._try_beat()

    def _try_beat(self) -> None:
        # A store that fails here must neither stop the step nor hide the error a failed step raises.
        try:
            self.beat()
        except StoreError as error:
            log.warning("%s: cannot store the attempt's time so far: %s", self.command, error)

    def _stop(self) -> None:
        self._stopped.set()
        self._beats.join()
