"""A run's config, kept in its store prefix: a run resumes only under the settings it started with.

Steps resume from what an earlier attempt stored (checkpoints, per-image maps and masks) without knowing the
settings that made it. A run restarted under other settings would keep those outputs and report them as the new
settings' figures, so a run whose prefix holds another config is refused, naming the settings that differ.
"""
from __future__ import annotations

from wsseg.config import parse_mapping
from wsseg.errors import ConfigError
from wsseg.store import ArtifactStore

RUN_CONFIG = "config.yaml"
# Settings that change how a step runs, not what it makes; evaluation is redone on every run, `strict` only
# decides whether bad input fails the step or is skipped and counted, and any number of shards makes the same
# outputs. A run may resume under other values of these.
RESUMES_UNDER_ANY = {"strict", "evaluate", "shards"}
RESUMES_UNDER_ANY_LEAF = {"device", "num_workers", "decode_workers", "writer_threads", "read_threads",
                          "log_interval", "checkpoint_interval"}
ABSENT = "(absent)"
SHOWN_CHANGES = 5


def keep_run_config(run: ArtifactStore, config_text: str) -> None:
    """Store `config_text` as the config of the run in `run`, unless that run was started under other settings."""
    refuse_other_settings(run, config_text)
    run.put_bytes(RUN_CONFIG, config_text.encode())


def refuse_other_settings(run: ArtifactStore, config_text: str) -> None:
    """A ConfigError naming the differing settings when the run in `run` was started under others."""
    if not run.exists(RUN_CONFIG):
        return
    stored = f"{run.uri}/{RUN_CONFIG}"
    changes = changed_settings(parse_mapping(run.get_bytes(RUN_CONFIG).decode(errors="replace"), stored),
                               parse_mapping(config_text, "the new config"))
    if changes:
        more = f", and {len(changes) - SHOWN_CHANGES} more" if len(changes) > SHOWN_CHANGES else ""
        raise ConfigError(
            f"{stored}: this run was started under other settings "
            f"({'; '.join(changes[:SHOWN_CHANGES])}{more}); resuming would keep what its steps made under the old "
            f"ones. Give this run another --out (or --run-name), or delete {run.uri} to start it over")


def changed_settings(started: dict, now: dict, trail: str = "") -> list[str]:
    """`key: started → now` for every setting, by its dotted name, whose value differs and decides outputs."""
    changes = []
    # Plain settings before sections, so that a changed preset is named first rather than its consequences.
    for key in sorted(set(started) | set(now), key=lambda key: (isinstance(now.get(key), dict), str(key))):
        name = f"{trail}{key}"
        if name in RESUMES_UNDER_ANY or key in RESUMES_UNDER_ANY_LEAF:
            continue
        before, after = started.get(key, ABSENT), now.get(key, ABSENT)
        if isinstance(before, dict) and isinstance(after, dict):
            changes += changed_settings(before, after, f"{name}.")
        elif before != after:
            changes.append(f"{name}: {before} → {after}")
    return changes
