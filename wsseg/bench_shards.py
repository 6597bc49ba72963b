"""`make bench`'s scaling figures: mine-cams and refine split into two shards, each shard its own process held to
one core (`taskset`, as a pod with `cpu: 1` is), both at once, beside one such process doing both shards' images.

`wall_ratio` (two at once / one alone) is what a second pod buys; `cpu_ratio` (the two processes' CPU time summed /
the one's) is what splitting costs. A process's CPU time is its own and its children's, start-up included (Python,
torch, the model), as a pod pays it; `step_seconds_ratio` leaves the start-up out (the seconds each shard's step
records, summed, over the one process's). On a machine other jobs share, the cores are not the shards' alone:
`load_average_before` and `_after` say how busy it was.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from wsseg.classes import ClassList
from wsseg.runtime.shards import Shard
from wsseg.steps.mine_cams import mine_cams
from wsseg.steps.refine import THRESHOLDS, choose_refine_levels, refine_with_crf
from wsseg.store import open_store

STEPS = {"mine_cams": mine_cams, "refine": refine_with_crf}


def shard_scaling(data: Path, classifier_uri: str, config: dict, work: Path) -> dict:
    """The figures for each step of STEPS, on the train images of `data`, from the classifier stored at
    `classifier_uri`; `work` is an empty folder for the runs' stores."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {"why": f"two cores are needed to run two shards at once; this process may use {len(cores)}"}
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    classes = ClassList(config["classes"])
    cams = open_store(work / "cams")
    mine_cams(data, open_store(classifier_uri), cams, config, classes)
    levels = open_store(work / "levels")
    choose_refine_levels(data, cams, levels, config, classes)
    inputs = {"mine_cams": classifier_uri, "refine": cams.uri}
    figures = {"load_average_before": [round(load, 2) for load in os.getloadavg()]}
    for step, input_uri in inputs.items():
        def spec(shard: Shard, run: str, step=step, input_uri=input_uri) -> dict:
            out = open_store(work / step / run)
            if step == "refine":
                out.put_bytes(THRESHOLDS, levels.get_bytes(THRESHOLDS))
            return {"step": step, "data": str(data), "input": input_uri, "out": out.uri, "config": str(config_path),
                    "shard": shard.index, "shards": shard.count,
                    "summary": str(work / f"{step}-{run}-{shard.index}.json")}

        alone = _at_once([(cores[0], spec(Shard(0, 1), "one-process"))])
        together = _at_once([(cores[index], spec(Shard(index, 2), "two-shards")) for index in range(2)])
        figures[step] = {"one_process": alone, "two_shards": together,
                         "wall_ratio": round(together["wall_seconds"] / alone["wall_seconds"], 3),
                         "cpu_ratio": round(together["cpu_seconds"] / alone["cpu_seconds"], 3),
                         "step_seconds_ratio": round(together["step_seconds"] / alone["step_seconds"], 3)}
    figures["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    return figures


def _at_once(jobs: list[tuple[int, dict]]) -> dict:
    """Run each job's shard in its own process pinned to its core, all at once: the wall time until the last
    ends, the processes' CPU seconds summed, and the steps' own seconds summed."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    processes = [subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-m", __name__, json.dumps(spec)],
                                  env=environment) for core, spec in jobs]
    cpu_seconds = 0.0
    for process in processes:
        # wait4 reports the child's CPU time (with that of the processes it waited for, refine's workers).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise RuntimeError(f"a shard process of the scaling bench failed with status {process.returncode}")
        cpu_seconds += usage.ru_utime + usage.ru_stime
    wall_seconds = time.perf_counter() - started
    summaries = [json.loads(Path(spec["summary"]).read_text()) for _, spec in jobs]
    return {"processes": len(jobs), "images": sum(summary["images"] for summary in summaries),
            "wall_seconds": round(wall_seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "step_seconds": round(sum(summary["seconds"] for summary in summaries), 2)}


def _run_shard(spec: dict) -> None:
    config = json.loads(Path(spec["config"]).read_text())
    summary = STEPS[spec["step"]](spec["data"], open_store(spec["input"]), open_store(spec["out"]), config,
                                  ClassList(config["classes"]), shard=Shard(spec["shard"], spec["shards"]))
    Path(spec["summary"]).write_text(json.dumps(summary))


if __name__ == "__main__":
    _run_shard(json.loads(sys.argv[1]))
