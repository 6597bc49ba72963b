"""The registry under concurrent writers, each a separate process, on a local directory and on a real S3 server
(moto): no version shared or lost, and every promotion or rollback applied once or refused with a conflict error,
none lost and none applied on a pointer it was not decided on."""
from collections import Counter

import pytest

from tests.incremental.concurrent_writers import (
    Racers,
    Raised,
    promote_as_the_gate,
    register,
    register_and_promote,
    register_together,
    rollback_with_the_cli,
    together,
)
from wsseg.incremental.registry import ModelRegistry
from wsseg.store import open_store

WRITERS = 16
RACES = 50


@pytest.fixture(params=["local", "s3"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_atomic_env") + "/registry"


def assert_pointer_agrees_with_history(registry: ModelRegistry) -> list[dict]:
    """The pointer is the last change's version, and each change starts where the one before it ended."""
    pointer = registry._pointer()
    history = pointer["history"]
    assert pointer["version"] == history[-1]["version"]
    assert [change["previous"] for change in history] == [None, *(change["version"] for change in history[:-1])]
    return history


def test_sixteen_writers_registering_and_promoting_at_once_lose_nothing(registry_uri, fake_model):
    models = [fake_model() for _ in range(WRITERS)]
    outcomes = together(register_and_promote, [(registry_uri, model.uri, writer)
                                               for writer, model in enumerate(models)])
    assert not [outcome for outcome in outcomes if isinstance(outcome, Raised)], outcomes

    registry = ModelRegistry(open_store(registry_uri))
    assert sorted(outcome["version"] for outcome in outcomes) == list(range(1, WRITERS + 1))
    assert [record["version"] for record in registry.versions()] == list(range(1, WRITERS + 1))
    for writer, outcome in enumerate(outcomes):  # each version holds the model its writer registered
        folder = registry.store.child(f"v{outcome['version']:04d}")
        assert folder.get_bytes("checkpoint.pth") == models[writer].get_bytes("checkpoint.pth")
    applied = [outcome["change"] for outcome in outcomes if outcome["promotion"] == "applied"]
    refused = [outcome for outcome in outcomes if outcome["promotion"] == "refused"]
    history = assert_pointer_agrees_with_history(registry)
    print(f"\n{registry_uri}: {len(registry.versions())} versions, {len(history)} history entries, "
          f"{len(applied)} promotions applied, {len(refused)} refused with a conflict")
    assert sorted(change["id"] for change in history) == sorted(applied)
    assert len(history) == WRITERS and not refused


def test_a_rollback_racing_the_gates_promotion_loses_no_change(registry_uri, fake_model):
    registry = ModelRegistry(open_store(registry_uri))
    for _ in range(3):
        register(registry_uri, fake_model().uri, "s3://data/step")
    registry.promote(1, "first")
    registry.promote(2, "second")
    before = registry.store.get_bytes("current.json")
    endings = Counter()
    # A person rolls back version 2 while the gate promotes version 3, which it judged against version 2.
    racers = [(rollback_with_the_cli, (registry_uri,)), (promote_as_the_gate, (registry_uri, 3, 2))]
    with Racers(racers, RACES) as race:
        for _ in range(RACES):
            registry.store.put_bytes("current.json", before)
            rollback, promotion = race.race()
            assert rollback["action"] == "applied", rollback
            history = assert_pointer_agrees_with_history(registry)
            if promotion["action"] == "applied":  # the gate first: the rollback undid its promotion
                assert history[2:] == [promotion["change"], rollback["change"]]
                assert rollback["change"]["version"] == 2
            else:  # the rollback first: the gate's judgement no longer held
                assert history[2:] == [rollback["change"]] and rollback["change"]["version"] == 1
                assert "against version 2, but version 1 is current now" in promotion["conflict"]
            endings[promotion["action"], registry.current_number()] += 1
    print(f"\n{registry_uri}: {RACES} races of a rollback and the gate's promotion, by (gate, final version): "
          f"{dict(endings)}")
    assert sum(endings.values()) == RACES and set(endings) <= {("applied", 2), ("refused", 1)}


def test_two_reruns_of_one_crashed_registration_finish_it_once(registry_uri, fake_model):
    registry = ModelRegistry(open_store(registry_uri))
    model = fake_model()
    register(registry_uri, model.uri, "s3://data/step")
    registry.store.child("v0001").delete("version.json")  # as a registration killed before its version.json
    assert together(register_together, [(registry_uri, model.uri, "s3://data/step")] * 2) == [1, 1]
    assert [record["version"] for record in registry.versions()] == [1]
