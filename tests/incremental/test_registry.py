"""The model registry on a local directory and on a real S3 server (moto): numbering, crash safety, the current
pointer and its history, fetching, the errors a user meets, and the `wsseg models` commands."""
import json

import pytest

from wsseg.cli import main
from wsseg.incremental.registry import (
    ClassesDoNotExtendParent,
    EmptyRegistry,
    ModelRegistry,
    NoRollbackTarget,
    RegistryConflict,
    RegistryError,
    StalePromotion,
    UnknownVersion,
)
from wsseg.store import open_store

STEP0 = ["background", "aeroplane"]
STEP1 = [*STEP0, "bicycle"]


@pytest.fixture(params=["local", "s3"])
def registry_store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "registry")
    return open_store(request.getfixturevalue("s3_env")).child("registry")


@pytest.fixture
def registry(registry_store):
    return ModelRegistry(registry_store, "segmenter")


def register(registry, model, classes=STEP0, parent=None, **metrics):
    return registry.register(model, classes=classes, metrics=metrics, data="s3://data/step", config="preset: cpu",
                             parent=parent, source="test")


def test_versions_are_numbered_in_order_with_their_lineage(registry, fake_model):
    first = register(registry, fake_model(), all_miou=60.0)
    second = register(registry, fake_model(), classes=STEP1, parent=1, all_miou=58.0)
    assert [record["version"] for record in registry.versions()] == [1, 2]
    assert registry.version(2) == second
    assert second["parent"] == 1 and second["classes"] == STEP1 and second["metrics"] == {"all_miou": 58.0}
    assert first["files"] == ["checkpoint.pth", "mmseg_config.py", "metrics.json"]
    assert registry.store.exists("v0001/checkpoint.pth") and registry.store.exists("v0002/version.json")


def test_a_crashed_registration_is_invisible_and_only_its_rerun_finishes_it(registry, fake_model):
    register(registry, fake_model())
    crashed = fake_model(b"the whole checkpoint")
    # What a crash mid-copy leaves: the number's claim and part of the model files, no version.json.
    registry.store.put_bytes("v0002/claim.json", json.dumps({"copied_from": crashed.uri, "data": "s3://data/step",
                                                             "by": "a killed pod", "at": "earlier"}).encode())
    registry.store.put_bytes("v0002/checkpoint.pth", b"half a checkpoint")
    assert [record["version"] for record in registry.versions()] == [1]
    with pytest.raises(UnknownVersion):
        registry.version(2)
    # Another registration never enters a claimed folder: it takes the next number.
    assert register(registry, fake_model(b"another model"))["version"] == 3
    assert registry.store.get_bytes("v0002/checkpoint.pth") == b"half a checkpoint"
    # The rerun of the crashed registration (the same model and data) finishes it in its own folder.
    assert register(registry, crashed)["version"] == 2
    assert registry.store.get_bytes("v0002/checkpoint.pth") == b"the whole checkpoint"
    assert [record["version"] for record in registry.versions()] == [1, 2, 3]


def test_a_complete_version_is_never_overwritten(registry, fake_model):
    register(registry, fake_model(b"first"))
    register(registry, fake_model(b"second"))
    registry.store.delete("v0001/version.json")  # numbers follow the highest version, not the count
    assert register(registry, fake_model(b"third"))["version"] == 3
    assert registry.store.get_bytes("v0002/checkpoint.pth") == b"second"


def test_promote_and_rollback_move_the_pointer_and_keep_history(registry, fake_model):
    for _ in range(3):
        register(registry, fake_model())
    registry.promote(1, "first model", by="alice")
    registry.promote(3, "better on val", by="bob")
    registry.promote(2, "3 misbehaves in production", by="carol")
    assert registry.current()["version"] == 2
    assert registry.rollback("2 was worse", by="dave")["version"] == 3
    assert registry.rollback("back to the first", by="erin")["version"] == 1
    history = registry.history()
    assert [(change["action"], change["version"], change["previous"]) for change in history] == [
        ("promote", 1, None), ("promote", 3, 1), ("promote", 2, 3), ("rollback", 3, 2), ("rollback", 1, 3)]
    assert history[-1]["by"] == "erin" and history[-1]["reason"] == "back to the first" and history[-1]["at"]
    assert len({change["id"] for change in history}) == len(history)
    with pytest.raises(NoRollbackTarget, match="no earlier current version"):
        registry.rollback("once more")
    assert registry.current_number() == 1


def test_the_gates_promotion_is_refused_once_another_version_became_current(registry, fake_model):
    for _ in range(3):
        register(registry, fake_model())
    registry.promote(1, "first")
    registry.promote(2, "second", by="alice")
    # The gate judged version 3 against version 2; a person rolled back to 1 in the meantime.
    registry.rollback("2 misbehaves", by="bob")
    with pytest.raises(StalePromotion, match="against version 2, but version 1 is current now") as caught:
        registry.promote(3, "passed the gate", by="promotion gate", judged_against=2)
    assert isinstance(caught.value, RegistryConflict) and "rollback by bob" in str(caught.value)
    assert registry.current_number() == 1 and len(registry.history()) == 3
    assert registry.promote(3, "judged against 1 again", judged_against=1)["version"] == 3


def test_promoting_the_current_version_again_adds_no_history(registry, fake_model):
    register(registry, fake_model())
    registry.promote(1, "first")
    registry.promote(1, "retried step")
    assert len(registry.history()) == 1


def test_fetch_copies_the_model_files_a_step_loads(registry, fake_model, tmp_path):
    register(registry, fake_model(b"weights one"))
    register(registry, fake_model(b"weights two"))
    registry.promote(2, "newest")
    into = registry.fetch(None, open_store(tmp_path / "fetched"))
    assert into.get_bytes("checkpoint.pth") == b"weights two"
    assert sorted(into.list()) == ["checkpoint.pth", "metrics.json", "mmseg_config.py"]
    assert registry.fetch(1, open_store(tmp_path / "one")).get_bytes("checkpoint.pth") == b"weights one"


def test_classes_must_extend_the_parents(registry, fake_model):
    register(registry, fake_model())
    with pytest.raises(ClassesDoNotExtendParent, match="keep the parent's classes first") as caught:
        register(registry, fake_model(), classes=["background", "bicycle", "aeroplane"], parent=1)
    assert registry.uri in str(caught.value)
    assert [record["version"] for record in registry.versions()] == [1]


def test_errors_name_the_registry_and_the_fix(registry, fake_model, tmp_path):
    with pytest.raises(EmptyRegistry, match="no versions yet") as caught:
        registry.current()
    assert registry.uri in str(caught.value)
    register(registry, fake_model())
    with pytest.raises(EmptyRegistry, match="wsseg models promote"):
        registry.current()
    with pytest.raises(UnknownVersion, match=r"no version 7 \(versions: 1\)"):
        registry.promote(7, "typo")
    with pytest.raises(NoRollbackTarget):
        registry.rollback("nothing to undo")
    with pytest.raises(RegistryError, match="holds no checkpoint.pth, mmseg_config.py"):
        register(registry, open_store(tmp_path / "not-a-model"))


def test_names_are_separate_registries(registry_store, fake_model):
    register(ModelRegistry(registry_store, "segmenter"), fake_model())
    assert ModelRegistry(registry_store, "other").versions() == []


@pytest.fixture
def local_registry(tmp_path, fake_model):
    """A local registry of two versions: 1 (current) and 2, which adds a class and was kept by the gate."""
    registry = ModelRegistry(open_store(tmp_path / "registry"), "segmenter")
    # As step 0 is registered: the background alone is "old" to it, its foreground "new".
    register(registry, fake_model(), all_miou=61.25, old_miou=99.18, new_miou=23.32)
    registry.promote(1, "first")
    registry.register(fake_model(), classes=STEP1, parent=1, data="s3://data/step1", config="step 1",
                      source="nightly", metrics={"all_miou": 55.0, "old_miou": 50.5, "new_miou": 40.0},
                      decision={"promoted": False, "reasons": ["old_miou fell"], "figures": {}})
    return registry


def models(registry, *arguments) -> list[str]:
    return ["models", *arguments, "--registry", registry.uri.removesuffix("/segmenter"), "--name", "segmenter"]


def test_models_list_prints_a_row_per_version_and_marks_the_current_one(local_registry, capsys):
    assert main(models(local_registry, "list")) == 0
    header, first, second, _, note = capsys.readouterr().out.splitlines()
    assert header.split()[:7] == ["version", "parent", "classes", "all", "mIoU", "old", "mIoU"]
    # Step 0's classes are all old to the next step, and none is new to it: the forgetting curve's convention.
    assert first.split()[:7] == ["*", "1", "-", "2", "61.25", "61.25", "-"]
    assert note.startswith("Step 0 has no parent")
    assert second.split()[:7] == ["2", "1", "3", "55.00", "50.50", "40.00", "fail"]
    assert second.split()[-1] == "nightly"


def test_models_show_prints_version_json(local_registry, capsys):
    assert main(models(local_registry, "show", "2")) == 0
    assert json.loads(capsys.readouterr().out) == local_registry.version(2)
    assert main(models(local_registry, "show")) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1


def test_models_promote_and_rollback(local_registry, capsys):
    assert main(models(local_registry, "promote", "2", "--reason", "gate too strict")) == 0
    assert json.loads(capsys.readouterr().out)["current"] == 2
    assert local_registry.history()[-1]["reason"] == "gate too strict"
    assert main(models(local_registry, "rollback", "--reason", "users complain")) == 0
    assert local_registry.current_number() == 1


def test_models_errors_are_one_line_without_a_traceback(local_registry, capsys):
    assert main(models(local_registry, "show", "9")) == 2
    assert "no version 9" in capsys.readouterr().err
