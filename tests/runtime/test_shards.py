"""Shards, end to end: `wsseg run wsss` on a synthetic set of the demo's kind (the demo's 128 px shapes, cpu-tiny
preset; 120 train and 40 val images, where the demo has 300 and 100, to keep `make test` short: docs/RESULTS.md
§19.1 has the demo set itself) once in one shard, once in three with one shard killed mid-way and the run started
again.

Each run goes through kfp.local with the components a cluster runs, as separate processes; the kill is a SIGKILL
to the whole run while the refine task of shard 2 of 3 has stored some of its masks, as a node loss would leave it.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wsseg.data import make_synthetic_voc
from wsseg.runtime.shards import shard_index

pytestmark = pytest.mark.slow

KILLED_SHARD = 1
SHARDS = 3
TRAIN_IMAGES = 120


def wsss_command(data: Path, out: Path, shards: int) -> list[str]:
    return [sys.executable, "-m", "wsseg.cli", "run", "wsss", "--data", str(data), "--out", str(out),
            "--preset", "cpu-tiny", "--shards", str(shards)]


def per_image_files(step: Path, suffix: str) -> dict[str, Path]:
    """The per-image outputs a step stored (not the store's temporary files)."""
    return {path.stem: path for path in step.glob(f"*{suffix}") if not path.name.startswith(".wsseg-")}


def shard_record(step: Path, index: int, count: int = SHARDS) -> dict:
    return json.loads((step / "shards" / f"{index}-of-{count}" / "summary.json").read_text())


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory) -> Path:
    return make_synthetic_voc(tmp_path_factory.mktemp("demo") / "data", train=TRAIN_IMAGES, val=40, seed=0, size=128)


@pytest.fixture(scope="module")
def train_ids(demo_set) -> list[str]:
    return (demo_set / "ImageSets" / "Segmentation" / "train.txt").read_text().split()


@pytest.fixture(scope="module")
def one_shard(demo_set, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-shard")
    subprocess.run(wsss_command(demo_set, out, 1), check=True, stdout=subprocess.DEVNULL)
    return out / "store" / "wsss"


@pytest.fixture(scope="module")
def three_shards_killed_and_resumed(demo_set, train_ids, tmp_path_factory) -> dict:
    return killed_and_resumed(demo_set, train_ids, tmp_path_factory.mktemp("three-shards"))


def killed_and_resumed(demo_set: Path, train_ids: list[str], out: Path) -> dict:
    """The run in three shards, killed while shard 2's refine task is half way, then started again: its store,
    and the per-image outputs (with their modification times) that were stored when it was killed."""
    run = out / "store" / "wsss"
    killed_slice = {image_id for image_id in train_ids if shard_index(image_id, SHARDS) == KILLED_SHARD}
    process = subprocess.Popen(wsss_command(demo_set, out, SHARDS), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None:
            if len(per_image_files(run / "refine", ".png").keys() & killed_slice) >= 5:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before shard 2's refine task began"
    stored = {str(path.relative_to(run)): path.stat().st_mtime_ns
              for step, suffix in (("mine-cams", ".npz"), ("refine", ".png"))
              for path in per_image_files(run / step, suffix).values()}
    subprocess.run(wsss_command(demo_set, out, SHARDS), check=True, stdout=subprocess.DEVNULL)
    return {"run": run, "stored": stored, "killed_slice": killed_slice}


def test_pseudo_masks_and_metrics_are_the_same_in_one_shard_and_in_three(one_shard, three_shards_killed_and_resumed):
    three = three_shards_killed_and_resumed["run"]
    masks_one, masks_three = per_image_files(one_shard / "refine", ".png"), per_image_files(three / "refine", ".png")
    assert len(masks_one) == TRAIN_IMAGES and masks_one.keys() == masks_three.keys()
    differing = [image_id for image_id in masks_one
                 if masks_one[image_id].read_bytes() != masks_three[image_id].read_bytes()]
    assert not differing, f"pseudo masks differ between 1 and 3 shards: {differing[:5]}"
    metrics_one = json.loads((one_shard / "evaluate" / "metrics.json").read_text())
    metrics_three = json.loads((three / "evaluate" / "metrics.json").read_text())
    for section in metrics_one:
        assert metrics_one[section] == metrics_three[section], f"metrics.json's {section} differs"
    # CAMs are mined in batches, which differ with the slices: oneDNN's convolutions round differently by batch,
    # so a map may differ in its float16 ulp; the masks (above) come out the same.
    cams_one = per_image_files(one_shard / "mine-cams", ".npz")
    cams_three = per_image_files(three / "mine-cams", ".npz")
    for image_id, path in cams_one.items():
        with np.load(path) as one, np.load(cams_three[image_id]) as other:
            assert np.array_equal(one["labels"], other["labels"])
            np.testing.assert_allclose(one["cams"], other["cams"], rtol=0, atol=1e-3)


def test_a_shard_killed_mid_way_computes_only_its_remaining_images_when_the_run_starts_again(
        train_ids, three_shards_killed_and_resumed):
    run, stored = three_shards_killed_and_resumed["run"], three_shards_killed_and_resumed["stored"]
    killed_slice = three_shards_killed_and_resumed["killed_slice"]
    slices = [sum(shard_index(image_id, SHARDS) == index for image_id in train_ids) for index in range(SHARDS)]
    refined_before = {Path(key).stem for key in stored if key.startswith("refine/")}
    killed_done = len(refined_before & killed_slice)
    assert 0 < killed_done < slices[KILLED_SHARD]
    for index in range(SHARDS):
        done_before = sum(shard_index(image_id, SHARDS) == index for image_id in refined_before)
        record = shard_record(run / "refine", index)
        assert (record["already_done"], record["images"]) == (done_before, slices[index] - done_before), index
        cams = shard_record(run / "mine-cams", index)
        assert (cams["existing"], cams["images"]) == (slices[index], 0), f"mine-cams shard {index} mined again"
    rewritten = [key for key, mtime in stored.items() if (run / key).stat().st_mtime_ns != mtime]
    assert not rewritten, f"outputs stored before the kill were computed again: {rewritten[:5]}"
