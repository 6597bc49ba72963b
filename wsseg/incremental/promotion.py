"""The promotion gate: whether a candidate model replaces the registry's current one (`registry.gate`).

Both models are scored on the same held-out set, in mIoU percent: `old_miou` over the classes the current model
already knew, `new_miou` over the classes the candidate adds, `all_miou` over both. An incremental step
(docs/METHODS.md §2.7) must learn the new classes without forgetting the old ones, so the gate checks one figure each:
- `max_old_drop`: the candidate's old-class mIoU may fall at most this many points below the current model's;
- `min_new_miou`: the candidate's new-class mIoU must reach this floor (null: no floor).
Their defaults are the `registry` section's (`wsseg.incremental.registry.GATE_DEFAULTS`). A setting of null skips
its check. A figure a check needs but the scores lack fails that check: a gate that cannot see a figure does not
vouch for it.

The first version, with no current model, has nothing to forget: only the new-class floor applies to it (a
step-0 model should report its classes as `new_miou`). The decision record (`decide(...).as_record()`) is kept
in the candidate's version.json, so a report can say why a model was or was not promoted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsseg.incremental.registry import ModelRegistry
    from wsseg.store import ArtifactStore

@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reasons: list[str]
    figures: dict

    def as_record(self) -> dict:
        return asdict(self)


def decide(current: dict | None, candidate: dict, gate: dict) -> PromotionDecision:
    """Promote `candidate` over `current` (None when the registry has no current version), given their scores
    on the same held-out set and the `registry.gate` settings."""
    checks = [_new_class_floor(candidate, gate["min_new_miou"])]
    if current is not None:
        checks.insert(0, _old_class_drop(current, candidate, gate["max_old_drop"]))
    checks = [check for check in checks if check is not None]
    failures = [reason for passed, reason in checks if not passed]
    reasons = failures or [reason for _, reason in checks] or ["no current version and no gate check applies"]
    figures = {"current": current, "candidate": candidate, "gate": dict(gate)}
    return PromotionDecision(promoted=not failures, reasons=reasons, figures=figures)


def propose(registry: ModelRegistry, model: ArtifactStore, *, scores: dict, current_scores: dict | None,
            gate: dict, classes: list[str], data: str, config: str, source: str = "") -> tuple[dict, PromotionDecision]:
    """Register the segmenter in `model` as a candidate trained from the current version, and make it current
    if the gate passes; otherwise the current version stays. Returns the candidate's record and the decision.

    `scores` and `current_scores` are the candidate's and the current version's figures on the same held-out
    set; the current version's own version.json scored it on an earlier step's classes, so it cannot stand in.
    A crash between registering and promoting leaves the candidate registered with its decision but not
    current; `wsseg models promote` finishes the job. The promotion holds only while the version it was judged
    against is current: if another writer moved the pointer meanwhile, `StalePromotion` is raised and the candidate
    stays registered, not current.
    """
    parent = registry.current_number()
    current = None if parent is None else (current_scores or {})
    decision = decide(current, scores, gate)
    record = registry.register(model, classes=classes, metrics=scores, data=data, config=config, parent=parent,
                               source=source, decision=decision.as_record())
    if decision.promoted:
        registry.promote(record["version"], reason="passed the promotion gate: " + "; ".join(decision.reasons),
                         by="promotion gate", judged_against=parent)
    return record, decision


def _old_class_drop(current: dict, candidate: dict, max_drop: float | None) -> tuple[bool, str] | None:
    if max_drop is None:
        return None
    missing = _missing("old_miou", current=current, candidate=candidate)
    if missing:
        return False, f"{missing}, so registry.gate.max_old_drop ({max_drop:g}) cannot be checked"
    before, after = current["old_miou"], candidate["old_miou"]
    drop = before - after
    verdict = "more than" if drop > max_drop else "within"
    change = f"fell {drop:.2f}" if drop >= 0 else f"rose {-drop:.2f}"
    return drop <= max_drop, (f"old_miou {change} points ({before:.2f} -> {after:.2f}), "
                              f"{verdict} registry.gate.max_old_drop {max_drop:g}")


def _new_class_floor(candidate: dict, floor: float | None) -> tuple[bool, str] | None:
    if floor is None:
        return None
    missing = _missing("new_miou", candidate=candidate)
    if missing:
        return False, f"{missing}, so registry.gate.min_new_miou ({floor:g}) cannot be checked"
    value = candidate["new_miou"]
    verdict = "below" if value < floor else "at or above"
    return value >= floor, f"new_miou {value:.2f} is {verdict} registry.gate.min_new_miou {floor:g}"


def _missing(figure: str, **scores: dict) -> str:
    """'the candidate has no old_miou' where a model's scores lack the figure (or hold null), else ''."""
    lacking = [model for model, figures in scores.items() if figures.get(figure) is None]
    return f"the {' and the '.join(lacking)} {'have' if len(lacking) > 1 else 'has'} no {figure}" if lacking else ""
