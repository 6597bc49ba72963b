"""A step's time adds up over its attempts: finished, failed and killed ones."""
import json
import signal
import subprocess
import sys
import time

import pytest

from wsseg.runtime.step_clock import ATTEMPT_RECORD, STEP_RECORD, StepClock
from wsseg.store import open_store

HOUR = 3600.0


def clock_reading(*times):
    readings = iter(times)
    return lambda: next(readings)


def seconds_in(store, key):
    return json.loads(store.get_bytes(key))["seconds"]


def test_a_finished_step_records_its_seconds_and_leaves_no_attempt_behind(tmp_path):
    out = open_store(tmp_path)
    with StepClock(out, "refine", beat_seconds=HOUR, now=clock_reading(10.0, 25.5)) as clock:
        clock.record({"images": 3})
    record = json.loads(out.get_bytes(STEP_RECORD))
    # A local store moves nothing through S3: the step's traffic is all zeros.
    no_traffic = dict.fromkeys(("gets", "bytes_read", "puts", "bytes_written", "heads", "lists"), 0)
    assert record == {"command": "refine", "seconds": 15.5, "summary": {"images": 3}, "store_traffic": no_traffic}
    assert not out.exists(ATTEMPT_RECORD)


def test_a_failed_attempts_seconds_count_in_the_attempt_that_finishes(tmp_path):
    out = open_store(tmp_path)
    with pytest.raises(RuntimeError), StepClock(out, "refine", beat_seconds=HOUR, now=clock_reading(0.0, 40.0)):
        raise RuntimeError("the CRF ran out of memory")
    assert seconds_in(out, ATTEMPT_RECORD) == 40.0
    assert not out.exists(STEP_RECORD)
    with StepClock(out, "refine", beat_seconds=HOUR, now=clock_reading(100.0, 102.0)) as clock:
        clock.record({})
    assert seconds_in(out, STEP_RECORD) == 42.0 and not out.exists(ATTEMPT_RECORD)


KILLED_ATTEMPT = """
import sys, time
from wsseg.runtime.step_clock import StepClock
from wsseg.store import open_store
with StepClock(open_store(sys.argv[1]), "train-classifier", beat_seconds=0.05):
    time.sleep(600)
"""


def test_a_killed_attempt_keeps_the_seconds_of_its_last_beat_for_the_next_attempt(tmp_path):
    out = open_store(tmp_path)
    attempt = subprocess.Popen([sys.executable, "-c", KILLED_ATTEMPT, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not (out.exists(ATTEMPT_RECORD) and seconds_in(out, ATTEMPT_RECORD) >= 0.3):
            assert attempt.poll() is None and time.monotonic() < deadline, "the attempt never beat"
            time.sleep(0.05)
    finally:
        attempt.send_signal(signal.SIGKILL)
        attempt.wait()
    killed = seconds_in(out, ATTEMPT_RECORD)
    with StepClock(out, "train-classifier", beat_seconds=HOUR, now=clock_reading(0.0, 1.0)) as clock:
        clock.record({})
    assert seconds_in(out, STEP_RECORD) == pytest.approx(killed + 1.0)
    assert not out.exists(ATTEMPT_RECORD)


def test_a_step_rerun_on_a_finished_run_adds_to_what_it_recorded(tmp_path):
    out = open_store(tmp_path)
    for started, ended in ((0.0, 60.0), (0.0, 6.0)):
        with StepClock(out, "evaluate", beat_seconds=HOUR, now=clock_reading(started, ended)) as clock:
            clock.record({})
    assert seconds_in(out, STEP_RECORD) == 66.0


def test_a_step_run_alone_keeps_its_time_as_a_pipeline_step_does(tiny_voc, tmp_path):
    from wsseg.cli import main

    out, step = open_store(tmp_path / "evaluate"), ["evaluate", "--data", str(tiny_voc), "--preset", "cpu-tiny"]
    # Pseudo masks without their CAMs are a config error: this attempt fails and leaves its seconds behind.
    assert main([*step, "--pseudo-masks", str(tmp_path / "masks"), "--out", out.uri]) == 2
    failed = seconds_in(out, ATTEMPT_RECORD)
    assert main([*step, "--out", out.uri]) == 0
    record = json.loads(out.get_bytes(STEP_RECORD))
    assert record["command"] == "evaluate" and record["seconds"] >= failed
    assert not out.exists(ATTEMPT_RECORD)
