"""The promotion gate: which figure decides, what the decision record says, and that a failed gate leaves the
registry's current version where it was."""
import pytest

from wsseg.incremental.promotion import decide, propose
from wsseg.incremental.registry import GATE_DEFAULTS, ModelRegistry
from wsseg.store import open_store

OLD = ["background", "aeroplane"]
OLD_AND_NEW = [*OLD, "bicycle"]
GATE = {"max_old_drop": 5.0, "min_new_miou": 30.0}


def scores(old=None, new=None, all_=None) -> dict:
    return {"old_miou": old, "new_miou": new, "all_miou": all_}


def test_candidate_within_the_old_drop_and_above_the_floor_is_promoted():
    decision = decide(scores(old=70.0), scores(old=66.0, new=40.0, all_=60.0), GATE)
    assert decision.promoted
    assert any("old_miou fell 4.00 points" in reason for reason in decision.reasons)


def test_a_candidate_that_gains_on_the_old_classes_is_said_to_rise_not_to_fall_by_a_negative_amount():
    decision = decide(scores(old=86.22), scores(old=88.28, new=44.68), GATE)
    assert decision.promoted
    assert decision.reasons[0] == "old_miou rose 2.06 points (86.22 -> 88.28), within registry.gate.max_old_drop 5"


def test_forgetting_more_than_max_old_drop_fails_naming_old_miou():
    decision = decide(scores(old=70.0), scores(old=60.0, new=45.0), GATE)
    assert not decision.promoted
    assert decision.reasons == ["old_miou fell 10.00 points (70.00 -> 60.00), more than registry.gate.max_old_drop 5"]


def test_new_classes_below_the_floor_fail_naming_new_miou():
    decision = decide(scores(old=70.0), scores(old=69.0, new=12.5), GATE)
    assert not decision.promoted
    assert decision.reasons == ["new_miou 12.50 is below registry.gate.min_new_miou 30"]


def test_a_figure_the_gate_needs_but_lacks_fails_the_gate():
    decision = decide({}, scores(old=69.0, new=50.0), GATE)
    assert not decision.promoted
    assert "the current has no old_miou" in decision.reasons[0]


def test_null_settings_skip_their_checks():
    decision = decide(scores(old=70.0), scores(old=10.0, new=1.0), {"max_old_drop": None, "min_new_miou": None})
    assert decision.promoted


def test_first_version_is_judged_by_the_new_class_floor_only():
    assert decide(None, scores(new=35.0), GATE).promoted
    assert not decide(None, scores(new=25.0), GATE).promoted
    assert decide(None, scores(all_=5.0), GATE_DEFAULTS).promoted


def test_decision_record_holds_both_models_figures_and_the_gate():
    record = decide(scores(old=70.0), scores(old=68.0, new=40.0), GATE).as_record()
    assert record["promoted"] is True
    assert record["figures"]["current"]["old_miou"] == 70.0
    assert record["figures"]["candidate"]["new_miou"] == 40.0
    assert record["figures"]["gate"] == GATE


@pytest.fixture
def registry(tmp_path, fake_model):
    registry = ModelRegistry(open_store(tmp_path / "registry"))
    first, _ = propose(registry, fake_model(), scores=scores(new=50.0, all_=50.0), current_scores=None, gate=GATE,
                       classes=OLD, data="s3://data/step0", config="step 0")
    assert registry.current_number() == first["version"] == 1
    return registry


def propose_step_one(registry, model, candidate: dict):
    """A candidate adding one class, judged against a current model that scores 70 on the old classes."""
    return propose(registry, model, scores=candidate, current_scores=scores(old=70.0), gate=GATE,
                   classes=OLD_AND_NEW, data="s3://data/step1", config="step 1")


def test_failed_gate_registers_the_candidate_but_keeps_current(registry, fake_model):
    record, decision = propose_step_one(registry, fake_model(), scores(old=50.0, new=45.0))
    assert not decision.promoted
    assert registry.current_number() == 1
    stored = registry.version(record["version"])
    assert stored["parent"] == 1
    assert stored["promotion"]["promoted"] is False
    assert "old_miou" in stored["promotion"]["reasons"][0]


def test_passed_gate_makes_the_candidate_current(registry, fake_model):
    record, _ = propose_step_one(registry, fake_model(), scores(old=68.0, new=45.0))
    assert registry.current_number() == record["version"] == 2
    assert registry.history()[-1]["by"] == "promotion gate"
