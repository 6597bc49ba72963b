"""Incremental updates (issue 10): old/new/all mIoU under MiB's protocol on hand-made predictions, the inbox, and
inbox batches growing the registry's model the WILSON way through the promotion gate, on a tiny synthetic task
(two old classes, then one new class per batch) with a few training iterations, crashes and reruns included."""
from __future__ import annotations

import base64
import dataclasses
import json
import shutil

import numpy as np
import pytest

from wsseg.classes import ClassList
from wsseg.config import default_config, dump_config
from wsseg.data import load_samples, make_synthetic_voc
from wsseg.errors import DataError
from wsseg.evaluation.metrics import ConfusionMatrix, incremental_mious, unseen_as_background
from wsseg.incremental.inbox import Inbox
from wsseg.incremental.registry import ModelRegistry
from wsseg.store import open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ClassList(("background", "a", "b", "c", "d"))
BATCHES = ["batch-1", "batch-2"]
OLD_CLASSES = ClassList(CLASSES.names[:3])


def test_classes_not_seen_yet_count_as_background_and_ignored_pixels_stay_ignored():
    ground_truth = np.array([[0, 1, 2, 3], [4, 255, 3, 1]], np.uint8)
    assert unseen_as_background(ground_truth, num_seen=3).tolist() == [[0, 1, 2, 0], [0, 255, 0, 1]]


def test_old_new_and_all_miou_on_hand_made_predictions():
    # Seen: background, a (old), b (new); the ground truth's class 3 is not seen yet and counts as background.
    ground_truth = np.array([0, 0, 1, 1, 2, 2, 3, 255], np.uint8)
    prediction = np.array([0, 1, 1, 1, 2, 0, 0, 2], np.uint8)
    matrix = ConfusionMatrix(3)
    matrix.update(prediction, unseen_as_background(ground_truth, 3))
    # background: 2 right of 3 true, 1 false positive (a) + 1 (from b) -> IoU 2/4; a: 2 / 3; b: 1 / 2.
    figures = incremental_mious(matrix, num_old=1)
    assert figures == {"old_miou": round((2 / 4 + 2 / 3) / 2 * 100, 2), "new_miou": 50.0,
                       "all_miou": round((2 / 4 + 2 / 3 + 1 / 2) / 3 * 100, 2)}


def test_a_first_version_reports_its_foreground_as_new_classes():
    matrix = ConfusionMatrix(2)
    matrix.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    assert incremental_mious(matrix, num_old=0) == {"old_miou": 50.0, "new_miou": 50.0, "all_miou": 50.0}


def drop_batch(inbox_root, name: str, samples, with_manifest: bool = True):
    """A batch as a labeller uploads it: the images, then a manifest of their image-level labels (no masks)."""
    folder = inbox_root / name
    folder.mkdir(parents=True)
    rows = ["image,labels"]
    for sample in samples:
        shutil.copy(sample.image_path, folder / sample.image_path.name)
        rows.append(f"{sample.image_path.name},{';'.join(CLASSES.names[label] for label in sample.labels)}")
    if with_manifest:
        (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_the_inbox_hands_out_complete_batches_oldest_first_until_marked(tmp_path):
    samples = [sample for sample in _data(tmp_path)["train"]]
    for name in ("2026-12-02", "2026-12-01"):
        drop_batch(tmp_path / "inbox", name, samples[:2])
    drop_batch(tmp_path / "inbox", "2026-12-03-uploading", samples[:2], with_manifest=False)
    inbox = Inbox(open_store(tmp_path / "inbox"))

    assert inbox.pending() == ["2026-12-01", "2026-12-02"]
    inbox.mark_processed("2026-12-01", {"version": 2})
    assert inbox.oldest_pending() == "2026-12-02" and inbox.processed("2026-12-01")["version"] == 2
    inbox.mark_processed("2026-12-02", {"version": 3})
    assert inbox.oldest_pending() is None


def test_a_batch_must_label_the_next_classes(tmp_path):
    from wsseg.steps.incremental_update import step_classes

    samples = _data(tmp_path)["train"]
    shows = {label: [s for s in samples if label in s.labels and max(s.labels) == label] for label in (2, 3, 4)}
    def labels(label: int) -> list[tuple[int, ...]]:
        return [sample.labels for sample in shows[label]]

    step = step_classes(list(OLD_CLASSES.names), labels(3), CLASSES, tmp_path / "manifest.csv")
    assert (step.seen.names, step.num_old, step.added) == (CLASSES.names[:4], 2, ["c"])
    with pytest.raises(DataError, match="no image shows c"):
        step_classes(list(OLD_CLASSES.names), labels(4), CLASSES, tmp_path / "manifest.csv")
    with pytest.raises(DataError, match="not segment yet.*label the batch's images with them, or remove"):
        step_classes(list(OLD_CLASSES.names), labels(2), CLASSES, tmp_path / "manifest.csv")


def _data(root) -> dict:
    """A tiny synthetic set of the four classes: 12 train images (c alone in 4 of them, d in 8), 3 val images."""
    folder = root / "voc"
    if not folder.exists():
        make_synthetic_voc(folder, train=12, val=3, seed=0, size=64, classes=CLASSES)
    return {split: load_samples(folder, split, CLASSES) for split in ("train", "val")} | {"root": folder}


def tiny_config(**gate) -> dict:
    config = default_config("cpu-tiny")
    config["classes"] = list(CLASSES.names)
    config["segmenter"].update(iterations=2, validate=False)
    config["evaluate"]["read_threads"] = 0
    config["registry"]["gate"].update(gate)
    return config


@pytest.fixture(scope="module")
def step_zero(tmp_path_factory):
    """The task's step 0: a supervised segmenter of the old classes, trained on their masks."""
    from wsseg.steps.train_segmenter import train_segmenter

    root = tmp_path_factory.mktemp("step0")
    old_data = make_synthetic_voc(root / "old", train=4, val=1, seed=1, size=64, classes=OLD_CLASSES)
    store = open_store(root / "train-segmenter")
    train_segmenter(old_data, None, store, tiny_config(), OLD_CLASSES)
    return store


@pytest.fixture
def incremental_task(tmp_path, step_zero):
    """A registry whose version 1 (current) is step 0, an inbox with batch 1 (c) and batch 2 (d), the held-out set."""
    from wsseg.steps.incremental_update import register_step_zero

    data = _data(tmp_path)
    registry = ModelRegistry(open_store(tmp_path / "registry"))
    record, decision = register_step_zero(registry, step_zero, OLD_CLASSES, tiny_config(), held_out=data["root"])
    assert record["version"] == 1 and decision.promoted and registry.current_number() == 1
    assert record["metrics"]["new_miou"] is not None and record["parent"] is None
    newest = {label: [s for s in data["train"] if max(s.labels) == label] for label in (3, 4)}
    drop_batch(tmp_path / "inbox", "batch-1", newest[3])
    drop_batch(tmp_path / "inbox", "batch-2", newest[4])
    return registry, Inbox(open_store(tmp_path / "inbox")), data["root"], open_store(tmp_path / "work")


def update_oldest(task, config) -> dict:
    from wsseg.steps.incremental_update import incremental_update

    registry, inbox, held_out, work = task
    batch = inbox.oldest_pending()
    return incremental_update(held_out, registry, inbox, batch, work.child(batch), config, CLASSES)


@pytest.mark.slow
def test_two_batches_become_two_versions_each_grown_from_the_last(incremental_task):
    registry, inbox, _, work = incremental_task
    config = tiny_config(max_old_drop=None)
    first, second = update_oldest(incremental_task, config), update_oldest(incremental_task, config)

    assert [(r["version"], r["parent"], r["classes"]) for r in registry.versions()] == [
        (1, None, list(OLD_CLASSES.names)), (2, 1, list(CLASSES.names[:4])), (3, 2, list(CLASSES.names))]
    assert registry.current_number() == 3 and inbox.pending() == []
    assert (first["classes_added"], second["classes_added"]) == (["c"], ["d"])
    assert inbox.processed("batch-2")["version"] == 3 and inbox.processed("batch-2")["promoted"]
    # Both models were scored on the same classes: the current one never predicts the class it does not know.
    assert second["current"]["per_class_iou"].keys() == second["candidate"]["per_class_iou"].keys()
    assert second["current"]["new_miou"] in (0.0, None)
    report = work.child("batch-2").get_bytes("report.md").decode()
    assert "**Promoted**" in report
    # The forgetting curve of version 3's lineage: one row per step, each with the figures its version recorded.
    curve = report.split("## Forgetting curve")[1]
    assert [line.split(" | ")[1] for line in curve.splitlines() if line[:3] in ("| 0", "| 1", "| 2")] == [
        "v1", "v2", "v3"]
    assert f"| {registry.version(3)['metrics']['old_miou']:.2f} |" in curve


@pytest.mark.slow
def test_a_gate_failure_keeps_the_current_version_and_says_so(incremental_task):
    registry, inbox, _, work = incremental_task
    result = update_oldest(incremental_task, tiny_config(min_new_miou=101))

    assert registry.current_number() == 1 and [r["version"] for r in registry.versions()] == [1, 2]
    assert not result["promoted"] and not registry.version(2)["promotion"]["promoted"]
    assert inbox.processed("batch-1")["promoted"] is False and inbox.oldest_pending() == "batch-2"
    report = work.child("batch-1").get_bytes("report.md").decode()
    assert "**Not promoted**" in report and "version 1 stays current" in report
    assert "registry.gate.min_new_miou 101" in report
    # Batch 2 builds on c, which only the refused version segments and which none of its images shows: it takes
    # batch 1's images in, and version 3 grows version 1 by c and d. Alone, it could not grow version 1 at all.
    result = update_oldest(incremental_task, tiny_config(min_new_miou=101))
    assert (result["version"], result["parent"], result["classes_added"]) == (3, 1, ["c", "d"])
    carried = "batch-2 and the batches the gate refused before (batch-1)"
    assert carried in registry.version(3)["source"]
    assert carried in work.child("batch-2").get_bytes("report.md").decode()
    assert inbox.oldest_pending() is None and registry.current_number() == 1


@pytest.mark.slow
def test_reruns_after_crashes_finish_the_batch_without_duplicate_versions(incremental_task, monkeypatch):
    import wsseg.steps.incremental_update as step

    registry, inbox, _, work = incremental_task
    config = tiny_config(min_new_miou=101)

    def crash(*args, **kwargs):
        raise RuntimeError("killed after training, before registration")

    with monkeypatch.context() as patch:
        patch.setattr(step, "propose", crash)
        with pytest.raises(RuntimeError, match="killed"):
            update_oldest(incremental_task, config)
    trained = work.child("batch-1").child("from-v0001").child("train-segmenter")
    checkpoint = trained.get_bytes("checkpoint.pth")
    assert [r["version"] for r in registry.versions()] == [1] and inbox.oldest_pending() == "batch-1"

    with monkeypatch.context() as patch:
        patch.setattr(Inbox, "mark_processed", crash)
        with pytest.raises(RuntimeError, match="killed"):
            update_oldest(incremental_task, config)
    # The rerun trained nothing more: the model it registered is the one the crashed attempt trained.
    assert trained.get_bytes("checkpoint.pth") == checkpoint
    assert registry.store.child("v0002").get_bytes("checkpoint.pth") == checkpoint

    result = update_oldest(incremental_task, config)
    assert result["version"] == 2 and [r["version"] for r in registry.versions()] == [1, 2]
    assert inbox.processed("batch-1")["version"] == 2

    # A registration killed while copying (no version.json yet) is invisible; the rerun registers into its folder.
    registry.store.child("v0002").delete("version.json")
    inbox.store.child("batch-1").delete("processed.json")
    assert update_oldest(incremental_task, config)["version"] == 2
    assert [r["version"] for r in registry.versions()] == [1, 2] and registry.current_number() == 1


def test_an_empty_inbox_run_ends_at_once_and_changes_nothing(tmp_path, fake_model):
    from wsseg.runtime.runner import run_incremental

    registry = ModelRegistry(open_store(tmp_path / "registry"))
    registry.promote(registry.register(fake_model(), classes=list(OLD_CLASSES.names), metrics={}, data="d",
                                       config="c")["version"], reason="step 0")
    before = sorted(registry.store.list()), registry.store.get_bytes("current.json")
    drop_batch(tmp_path / "inbox", "batch-1", _data(tmp_path)["train"][:1])
    Inbox(open_store(tmp_path / "inbox")).mark_processed("batch-1", {"version": 1})
    inbox_before = sorted(open_store(tmp_path / "inbox").list())

    marker = run_incremental(str(_data(tmp_path)["root"]), tmp_path / "run", tiny_config(), str(tmp_path / "registry"),
                             str(tmp_path / "inbox"))
    # Ending at once: the light check is the only task that ran; dsl.If skipped the run's set-up and the update.
    assert marker is None
    assert {task.name for task in (tmp_path / "run").glob("kfp-local/*/*") if task.is_dir()} == {"check-inbox"}
    assert (sorted(registry.store.list()), registry.store.get_bytes("current.json")) == before
    assert sorted(open_store(tmp_path / "inbox").list()) == inbox_before
    assert not (tmp_path / "run" / "store").exists()


def _refused_inbox(tmp_path, fake_model) -> tuple[ModelRegistry, Inbox]:
    """Version 1 (old classes) current; version 2, from batch-1, adds c and was refused by the gate; batch-1 has
    no marker yet (its update was interrupted after registering), batch-2 labels d, which comes after c."""
    registry = ModelRegistry(open_store(tmp_path / "registry"))
    registry.promote(registry.register(fake_model(), classes=list(OLD_CLASSES.names), metrics={}, data="d",
                                       config="c")["version"], reason="step 0")
    samples = _data(tmp_path)["train"]
    for name, label in (("batch-1", 3), ("batch-2", 4)):
        drop_batch(tmp_path / "inbox", name, [sample for sample in samples if max(sample.labels) == label])
    inbox = Inbox(open_store(tmp_path / "inbox"))
    registry.register(fake_model(), classes=list(CLASSES.names[:4]), metrics={}, data=inbox.batch_uri("batch-1"),
                      config="c", parent=1, decision={"promoted": False, "reasons": ["new mIoU below the floor"]})
    return registry, inbox


def test_a_batch_built_on_a_refused_version_carries_that_versions_batch(tmp_path, fake_model):
    from wsseg.steps.incremental_update import carried_batches

    registry, inbox = _refused_inbox(tmp_path, fake_model)
    current = registry.current()
    labels = {name: [sample.labels for sample in load_samples(tmp_path / "inbox" / name / "manifest.csv", "train",
                                                              CLASSES)] for name in ("batch-1", "batch-2")}
    assert carried_batches(registry, inbox, current, labels["batch-2"], CLASSES) == ["batch-1"]
    # A batch of c itself skips nothing: it stands alone, as would d's batch with images of c.
    assert carried_batches(registry, inbox, current, labels["batch-1"], CLASSES) == []
    assert carried_batches(registry, inbox, current, [*labels["batch-2"], (3,)], CLASSES) == []
    # Refusals of another version's children do not count: those batches were learned on another model.
    registry.promote(registry.register(fake_model(), classes=list(OLD_CLASSES.names), metrics={}, data="d",
                                       config="c")["version"], reason="a retrained step 0")
    assert carried_batches(registry, inbox, registry.current(), labels["batch-2"], CLASSES) == []


def test_merged_batches_hold_each_image_once_with_the_labels_of_every_batch_that_sent_it(tmp_path):
    from wsseg.steps.incremental_update import merged_samples

    first, second, other = _data(tmp_path)["train"][:3]
    shared = dataclasses.replace(first, labels=(3,)), dataclasses.replace(first, labels=(4,))
    # A different image under the shared image's id: both stay, the later one renamed after its batch.
    clash = dataclasses.replace(other, image_id=first.image_id, labels=(4,))
    merged = merged_samples([[shared[0], second], [shared[1], clash]], ["batch-1", "batch-2"])

    assert [(sample.image_id, sample.labels) for sample in merged] == [
        (first.image_id, (3, 4)), (second.image_id, second.labels), (f"batch-2-{first.image_id}", (4,))]
    assert merged[2].image_path == other.image_path


def test_check_inbox_passes_a_batch_that_carries_a_refused_one_reading_manifests_alone(tmp_path, fake_model):
    from wsseg.runtime.pipeline_io import claim_oldest_batch

    registry, inbox = _refused_inbox(tmp_path, fake_model)
    config = dump_config(tiny_config())
    # batch-1 already has its version: the check lets the interrupted update finish it.
    assert claim_oldest_batch(inbox.uri, str(tmp_path / "registry"), config, "run 1") == "batch-1"
    inbox.mark_processed("batch-1", {"version": 2, "promoted": False})
    for image in (tmp_path / "inbox").glob("*/*.jpg"):
        image.unlink()
    assert claim_oldest_batch(inbox.uri, str(tmp_path / "registry"), config, "run 2") == "batch-2"


def test_check_inbox_refuses_a_batch_built_on_a_refused_version_whose_batch_left_the_inbox(tmp_path, fake_model):
    from wsseg.runtime.pipeline_io import claim_oldest_batch

    registry, inbox = _refused_inbox(tmp_path, fake_model)
    inbox.mark_processed("batch-1", {"version": 2, "promoted": False})
    shutil.rmtree(tmp_path / "inbox" / "batch-1")
    # The refused batch is released: the next run stops on it too, rather than skip to a later batch.
    for run in ("run 1", "run 2"):
        with pytest.raises(DataError, match=r"batch-2/manifest.csv: the batch labels d but no image shows c.*"
                                            r"gate refused version 2.*wsseg models promote 2"):
            claim_oldest_batch(inbox.uri, str(tmp_path / "registry"), dump_config(tiny_config()), run)


def test_runs_started_together_take_different_batches_and_the_update_refuses_a_held_one(tmp_path, fake_model):
    from wsseg.incremental.inbox import BatchTaken
    from wsseg.runtime.pipeline_io import claim_oldest_batch
    from wsseg.steps.incremental_update import incremental_update

    registry, inbox = _refused_inbox(tmp_path, fake_model)
    config = dump_config(tiny_config())
    claimed = [claim_oldest_batch(inbox.uri, str(tmp_path / "registry"), config, run) for run in ("run 1", "run 2",
                                                                                                  "run 3")]
    assert claimed == ["batch-1", "batch-2", ""]
    # The update claims the batch check-inbox claimed for its run: another run's update of it is refused at once.
    with pytest.raises(BatchTaken, match="batch-1 is being processed by run 1"):
        incremental_update(_data(tmp_path)["root"], registry, inbox, "batch-1", open_store(tmp_path / "work"),
                           tiny_config(), CLASSES, holder="run 2")
    assert [record["version"] for record in registry.versions()] == [1, 2] and inbox.pending() == list(BATCHES)


def test_a_blocked_batch_fails_the_run_at_check_inbox(tmp_path, fake_model):
    from wsseg.runtime.runner import run_incremental

    registry, inbox = _refused_inbox(tmp_path, fake_model)
    inbox.mark_processed("batch-1", {"version": 2, "promoted": False})
    shutil.rmtree(tmp_path / "inbox" / "batch-1")
    with pytest.raises(RuntimeError, match="check-inbox"):
        run_incremental(str(_data(tmp_path)["root"]), tmp_path / "run", tiny_config(), str(tmp_path / "registry"),
                        inbox.uri)
    # The run stopped there: open-run never made the run's store, the update never started.
    assert not (tmp_path / "run" / "store").exists()
    assert [record["version"] for record in registry.versions()] == [1, 2] and registry.current_number() == 1


@pytest.mark.slow
def test_the_incremental_pipeline_turns_a_batch_into_a_gated_version(incremental_task, tmp_path):
    from wsseg.runtime.runner import run_incremental

    registry, inbox, held_out, _ = incremental_task
    marker = run_incremental(str(held_out), tmp_path / "run", tiny_config(max_old_drop=None),
                             str(tmp_path / "registry"), inbox.uri)
    assert marker["batch"] == "batch-1" and marker["version"] == 2 and marker["promoted"]
    assert registry.current_number() == 2 and inbox.oldest_pending() == "batch-2"
    # Each batch is its own run, named after it.
    run = open_store(tmp_path / "run" / "store").child("incremental-batch-1")
    update = run.child("incremental-update").child("batch-1")
    assert "**Promoted**" in update.get_bytes("report.md").decode()
    assert json.loads(update.get_bytes("step.json"))["summary"]["version"] == 2
    # KFP's HTML output is the report with the forgetting curve embedded.
    published = next((tmp_path / "run" / "kfp-local").rglob("report"), None)
    assert published is not None and published.read_bytes() == update.get_bytes("report.html")
    assert base64.b64encode(update.get_bytes("forgetting_curve.png")).decode() in published.read_text()


def test_models_register_makes_the_step_zero_segmenter_version_one(tmp_path, fake_model, capsys):
    from wsseg.cli import main

    segmenter = fake_model()
    assert main(["models", "register", "--registry", str(tmp_path / "registry"), "--segmenter", segmenter.uri,
                 "--classes", "15", "--trained-on", "voc-15-5-step0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    registry = ModelRegistry(open_store(tmp_path / "registry"))
    assert printed["version"] == 1 and printed["promoted"] and registry.current_number() == 1
    record = registry.current()
    assert len(record["classes"]) == 16 and record["parent"] is None and record["data"] == "voc-15-5-step0"
    assert main(["models", "register", "--registry", str(tmp_path / "registry"), "--segmenter", segmenter.uri,
                 "--classes", "15"]) == 2
    assert "holds versions already" in capsys.readouterr().err


def test_incremental_update_alone_does_nothing_when_no_batch_waits(tmp_path, capsys):
    from wsseg.cli import main

    (tmp_path / "inbox").mkdir()
    assert main(["incremental-update", "--data", str(tmp_path), "--registry", str(tmp_path / "registry"),
                 "--inbox", str(tmp_path / "inbox"), "--out", str(tmp_path / "out"), "--preset", "cpu-tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["batch"] is None
    assert not (tmp_path / "registry").exists() and not (tmp_path / "out").exists()
