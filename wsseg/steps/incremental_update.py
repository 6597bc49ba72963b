"""incremental-update: the next model of the registry from one inbox batch, the WILSON way (docs/METHODS.md §2).

For the batch (`wsseg.incremental.inbox`): fetch the registry's current version; train the candidate with
`segmenter.mode: wilson` on the batch's images and image-level labels (with those of the refused batches whose
classes it builds on: `carried_batches`), the current version as its old model and the classes the
batch labels beyond the current ones as its new classes; score candidate and current on the same held-out split
(`data`'s val, classes not seen yet as background: `wsseg.evaluation.scoring.score_seen_classes`); `propose` the
candidate, which the gate (`registry.gate`) promotes or not; mark the batch processed. The decision lands in the
batch's marker, in `report.md` and `report.html` and in the step's summary, with the forgetting curve of the
candidate's lineage (`wsseg.incremental.forgetting_curve`: old/new/all mIoU per step, `forgetting_curve.png`).

Nothing is lost to a crash, and nothing is done twice. The update first claims the batch (`Inbox.claim`): a batch
another run holds is refused (`BatchTaken`); its lease is renewed while the update runs, and checked right before
the version is registered and the batch is marked. Training resumes from its store (train-segmenter's
`last.pth`, under `<out>/from-v<parent>/`, so that a batch retried after the current version changed trains from
the new one). A registration that crashed before its version.json is invisible and its rerun finishes it in its
folder; once a version from this batch exists, a rerun does not train or register again but finishes the promotion
the gate decided and marks the batch. A promotion the gate decided against a version that another writer has
replaced as current meanwhile is refused (`StalePromotion`): the batch is marked, its version not promoted, and
the report says why.

`register_step_zero` makes a registry's first version: a fully supervised segmenter of the old classes (a task's
step 0, trained by train-segmenter on those classes' masks).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsseg.classes import ClassList
from wsseg.config import dump_config
from wsseg.data import load_samples
from wsseg.data.locations import read_location
from wsseg.data.manifest import manifest_labels, write_manifest
from wsseg.errors import ConfigError, DataError
from wsseg.evaluation import charts
from wsseg.evaluation.overlays import segmenter_overlays, store_overlays
from wsseg.evaluation.pages import Chart, render_page
from wsseg.evaluation.report import Overlay, Section, figure_cell, markdown_table
from wsseg.incremental.forgetting_curve import (
    CURVE_PNG,
    CurveStep,
    curve_caption,
    curve_section,
    forgetting_curve,
    plot_forgetting_curve,
    render_curve_markdown,
)
from wsseg.incremental.inbox import BatchTaken, HeldLease, Inbox, default_holder
from wsseg.incremental.promotion import propose
from wsseg.incremental.registry import EmptyRegistry, ModelRegistry, StalePromotion
from wsseg.store import ArtifactStore

if TYPE_CHECKING:
    from wsseg.data.samples import Sample
    from wsseg.incremental.promotion import PromotionDecision

log = logging.getLogger(__name__)

REPORT = "report.md"
REPORT_HTML = "report.html"
MODEL_COLUMNS = ("model", "old mIoU", "new mIoU", "all mIoU")
OUTCOME = "outcome.json"
FIGURES = ("old_miou", "new_miou", "all_miou")


@dataclass(frozen=True)
class StepClasses:
    """The classes of an incremental step: `seen` (background, old, new) of which the first `num_old` foreground
    ones are old."""

    seen: ClassList
    num_old: int

    @property
    def num_new(self) -> int:
        return len(self.seen) - 1 - self.num_old

    @property
    def added(self) -> list[str]:
        return list(self.seen.names[1 + self.num_old:])


def incremental_update(data_root, registry: ModelRegistry, inbox: Inbox, batch: str, out: ArtifactStore,
                       config: dict, classes: ClassList, strict: bool = False, holder: str | None = None) -> dict:
    """Claim `batch` for `holder` (by default this process), train, score and propose its model, mark the batch
    processed; returns the outcome (`outcome`). `BatchTaken` if another holder's lease on the batch is live."""
    lease = inbox.claim(batch, holder or default_holder())
    if lease is None:
        raise BatchTaken(inbox.taken_message(batch))
    with HeldLease(inbox, lease) as held:
        record = _version_of_batch(registry, inbox.batch_uri(batch))
        if record is None:
            record, refusal = _train_and_propose(data_root, registry, inbox, batch, out, config, classes, strict, held)
        else:
            log.info("incremental-update: %s is version %d already; finishing its promotion", batch,
                     record["version"])
            held.check()
            refusal = _finish_promotion(registry, record)
        result = outcome(registry, batch, record, refusal)
        out.put_bytes(OUTCOME, json.dumps(result, indent=2).encode())
        overlays = held_out_overlays(data_root, registry, record, classes, config["evaluate"])
        store_overlays(out, overlays)
        write_reports(out, result, forgetting_curve(registry, record["version"]), overlays)
        held.check()
        inbox.mark_processed(batch, {key: result[key] for key in ("version", "parent", "promoted", "reasons")})
    return result


def _train_and_propose(data_root, registry: ModelRegistry, inbox: Inbox, batch: str, out: ArtifactStore,
                       config: dict, classes: ClassList, strict: bool, held: HeldLease) -> tuple[dict, str | None]:
    """The batch's version, registered and proposed, and why its promotion was refused despite the gate, if it
    was (`StalePromotion`)."""
    from wsseg.evaluation.scoring import score_seen_classes
    from wsseg.steps.train_segmenter import train_segmenter

    current = _current_version(registry)
    work = out.child(f"from-v{current['version']:04d}")
    parent_model = registry.fetch(current["version"], work.child("parent"))
    with tempfile.TemporaryDirectory(prefix="wsseg-batch-") as folder:
        manifest, carried = _fetch_step_images(registry, inbox, batch, current, classes, Path(folder))
        samples = load_samples(manifest, "train", classes)
        step = step_classes(current["classes"], [sample.labels for sample in samples], classes, manifest,
                            refused_versions(registry, current))
        step_config = wilson_config(config, parent_model.uri, step)
        work.put_bytes("config.yaml", dump_config(step_config).encode())
        candidate = work.child("train-segmenter")
        train_segmenter(manifest, None, candidate, step_config, step.seen, strict=strict)
    held_out = load_samples(data_root, "val", classes)
    scores = {name: score_seen_classes(model, held_out, step.seen, step.num_old, config["evaluate"], strict)
              for name, model in (("candidate", candidate), ("current", parent_model))}
    held.check()
    try:
        record, decision = propose(registry, candidate, scores=scores["candidate"],
                                   current_scores=scores["current"], gate=config["registry"]["gate"],
                                   classes=list(step.seen.names), data=inbox.batch_uri(batch),
                                   config=f"{work.uri}/config.yaml", source=_source(batch, carried, step))
    except StalePromotion as stale:
        log.warning("incremental-update: %s", stale)
        return _version_of_batch(registry, inbox.batch_uri(batch)), str(stale)
    log.info("incremental-update: %s is version %d, %s", batch, record["version"],
             "promoted" if decision.promoted else "not promoted: " + "; ".join(decision.reasons))
    return record, None


def _fetch_step_images(registry: ModelRegistry, inbox: Inbox, batch: str, current: dict, classes: ClassList,
                       folder: Path) -> tuple[Path, list[str]]:
    """Fetch the batch, and the batches it carries (`carried_batches`), into `folder`; returns the manifest of
    their images (one manifest of all, `merged_samples`, where batches were carried) and the carried batches."""
    manifest = inbox.fetch(batch, folder / batch)
    carried = carried_batches(registry, inbox, current, manifest_labels(manifest, "train", classes), classes)
    if not carried:
        return manifest, []
    manifests = [inbox.fetch(name, folder / name) for name in carried] + [manifest]
    batches = [load_samples(path, "train", classes) for path in manifests]
    return write_manifest(merged_samples(batches, [*carried, batch]), classes, folder / "step.csv"), carried


def carried_batches(registry: ModelRegistry, inbox: Inbox, current: dict, labels: list[tuple[int, ...]],
                    classes: ClassList) -> list[str]:
    """The inbox batches that the batch whose images have `labels` takes in: those of the versions grown from
    `current` that the gate refused and that add a class the batch builds on without showing it. A refused batch's
    labels are not lost: its classes come back with the next batch, whose images are its negatives. A lone new
    class (15-1) has none in its own batch, since every image there shows it, so L_CLS cannot tell it from the
    background that all those images share; with the next class's batch beside it, each class's images are the
    other's negatives. Still no old data: the current version segments none of these classes."""
    known = len(current["classes"])
    labelled = {label for image_labels in labels for label in image_labels}
    skipped = {classes.names[index] for index in range(known, max(labelled, default=0)) if index not in labelled}
    batches = {inbox.batch_uri(name): name for name in inbox.batches()}
    return sorted({batches[record["data"]] for record in _refused_records(registry, current)
                   if skipped & set(record["classes"][known:]) and record["data"] in batches})


def merged_samples(batches: list[list[Sample]], names: list[str]) -> list[Sample]:
    """The samples of several batches (named `names`) as one list: an image that two batches hold (the same id
    and the same bytes) once, with both batches' labels; two different images under one id both, the later one's
    id prefixed with its batch's name."""
    merged: dict[str, Sample] = {}
    for name, samples in zip(names, batches, strict=True):
        for sample in samples:
            known = merged.get(sample.image_id)
            if known is None:
                merged[sample.image_id] = sample
            elif read_location(known.image_path) == read_location(sample.image_path):
                labels = tuple(sorted({*known.labels, *sample.labels}))
                merged[sample.image_id] = dataclasses.replace(known, labels=labels)
            else:
                image_id = f"{name}-{sample.image_id}"
                merged[image_id] = dataclasses.replace(sample, image_id=image_id)
    return list(merged.values())


def _source(batch: str, carried: list[str], step: StepClasses) -> str:
    batches = f"inbox batch {batch}" + (f" and the batches the gate refused before ({', '.join(carried)})"
                                        if carried else "")
    return f"incremental-update of {batches}: adds {', '.join(step.added)}"


def _current_version(registry: ModelRegistry) -> dict:
    try:
        return registry.current()
    except EmptyRegistry as error:
        raise EmptyRegistry(f"{error}. An incremental update grows the current version; register the step-0 "
                            "segmenter first: wsseg models register --registry ... --segmenter STORE --classes N"
                            ) from None


def check_batch(registry: ModelRegistry, inbox: Inbox, batch: str, classes: ClassList) -> None:
    """Refuse `batch` if its classes cannot grow the registry's current version (`step_classes`), reading its manifest
    alone: check-inbox runs this before any GPU step starts, since a refused batch stays refused however often the
    update is retried. A batch that has a version already is an interrupted update's, which the update finishes."""
    if _version_of_batch(registry, inbox.batch_uri(batch)) is not None:
        return
    current = _current_version(registry)
    with tempfile.TemporaryDirectory(prefix="wsseg-manifest-") as folder:
        manifest = inbox.fetch_manifest(batch, Path(folder))
        where = f"{inbox.batch_uri(batch)}/{manifest.name}"
        labels = manifest_labels(manifest, "train", classes)
        for name in carried_batches(registry, inbox, current, labels, classes):
            labels += manifest_labels(inbox.fetch_manifest(name, Path(folder) / name), "train", classes)
    step_classes(current["classes"], labels, classes, where, refused_versions(registry, current))


def step_classes(parent_classes: list[str], labels: list[tuple[int, ...]], classes: ClassList, manifest: Path | str,
                 refused: dict[str, int] | None = None) -> StepClasses:
    """The step's classes: the parent's, then those the batch's images (their `labels`) label after them, which
    must come next in `classes` (WILSON grows the decode head by the next output channels) and each show in some
    image (L_CLS learns a class from the images labelled with it). `refused`: classes that a version the gate
    refused adds, and that version."""
    if list(classes.names[:len(parent_classes)]) != list(parent_classes):
        raise ConfigError(f"the current version segments {parent_classes}, which are not the first classes of the "
                          f"config's `classes` {list(classes.names)}; list its classes first, in its order")
    num_old = len(parent_classes) - 1
    labelled = {label for image_labels in labels for label in image_labels}
    new = sorted(label for label in labelled if label > num_old)
    if not new:
        raise DataError(manifest, f"no train image is labelled with a class the current version does not segment "
                                  f"yet (it knows {', '.join(parent_classes[1:])}); an incremental step learns new "
                                  "classes: label the batch's images with them, or remove the batch")
    unshown = [classes.names[index] for index in range(num_old + 1, new[-1]) if index not in labelled]
    if unshown:
        raise DataError(manifest, f"the batch labels {classes.names[new[-1]]} but no image shows "
                                  f"{', '.join(unshown)}, which come before it in `classes`; add images of them to "
                                  "the batch, or reorder `classes` so that the batch's classes come next"
                                  + _refused_hint(unshown, refused or {}))
    return StepClasses(ClassList(classes.names[:new[-1] + 1]), num_old)


def refused_versions(registry: ModelRegistry, current: dict) -> dict[str, int]:
    """The classes that versions grown from `current` and refused by the gate add, each with the newest such version:
    what a batch that builds on them lacks when their batches have left the inbox (`carried_batches`)."""
    known = len(current["classes"])
    return {name: record["version"] for record in _refused_records(registry, current)
            for name in record["classes"][known:]}


def _refused_records(registry: ModelRegistry, current: dict) -> list[dict]:
    return [record for record in registry.versions()
            if record["parent"] == current["version"] and not (record["promotion"] or {}).get("promoted")]


def _refused_hint(unshown: list[str], refused: dict[str, int]) -> str:
    versions = sorted({refused[name] for name in unshown if name in refused})
    if not versions:
        return ""
    return (f". The promotion gate refused version {', '.join(map(str, versions))}, which adds "
            f"{', '.join(name for name in unshown if name in refused)}: the current version does not segment them "
            "yet, so later classes cannot follow. Promote it by hand if it is good enough (wsseg models promote "
            f"{versions[-1]} --registry ... --reason ...), or send a new batch of those classes first")


def wilson_config(config: dict, parent_uri: str, step: StepClasses) -> dict:
    """The run's config with train-segmenter in WILSON's mode, growing the parent by the step's classes."""
    step_config = copy.deepcopy(config)
    segmenter = step_config["segmenter"]
    segmenter["mode"] = "wilson"
    # The batch has image labels alone: there is nothing to validate on (the held-out scores are this step's).
    segmenter["validate"] = False
    segmenter["wilson"].update(old_checkpoint=parent_uri, old_classes=step.num_old, new_classes=step.num_new)
    return step_config


def _version_of_batch(registry: ModelRegistry, batch_uri: str) -> dict | None:
    """The version an earlier attempt registered from this batch, if any."""
    return next((record for record in registry.versions() if record["data"] == batch_uri), None)


def _finish_promotion(registry: ModelRegistry, record: dict) -> str | None:
    """Promote a version the gate passed, unless it was promoted already (a rollback since is a person's choice);
    returns why the promotion was refused, if the version the gate judged it against is no longer current."""
    decision = record["promotion"] or {}
    promoted_before = any(change["action"] == "promote" and change["version"] == record["version"]
                          for change in registry.history())
    if not decision.get("promoted") or promoted_before:
        return None
    try:
        registry.promote(record["version"], by="promotion gate", judged_against=record["parent"],
                         reason="passed the promotion gate: " + "; ".join(decision["reasons"]))
    except StalePromotion as stale:
        return str(stale)
    return None


def outcome(registry: ModelRegistry, batch: str, record: dict, refusal: str | None = None) -> dict:
    """What became of the batch, from its version's record: the scores and the gate's decision, which `refusal`
    overrides where the registry refused the promotion the gate decided (`StalePromotion`)."""
    decision = record["promotion"]
    parent_classes = registry.version(record["parent"])["classes"] if record["parent"] is not None else []
    return {"batch": batch, "version": record["version"], "parent": record["parent"],
            "classes_added": record["classes"][len(parent_classes):],
            "promoted": decision["promoted"] and refusal is None,
            "reasons": [*decision["reasons"], *([refusal] if refusal else [])],
            "candidate": decision["figures"]["candidate"], "current": decision["figures"]["current"],
            "current_version": registry.current_number(), "source": record["source"]}


def headline(result: dict) -> dict:
    """The outcome's figures as flat numbers (KFP metrics): promoted 1/0, then each model's mIoUs."""
    figures = {"promoted": int(result["promoted"]), "version": result["version"]}
    for model in ("candidate", "current"):
        for name in FIGURES:
            value = (result[model] or {}).get(name)
            if value is not None:
                figures[f"{model}_{name}"] = value
    return figures


def held_out_overlays(data_root, registry: ModelRegistry, record: dict, classes: ClassList,
                      settings: dict) -> list[Overlay]:
    """image | the parent version's prediction | the candidate's | ground truth, of the first held-out images with
    masks (the `evaluate` section's `overlays` of them), classes not seen yet as background as in the scores."""
    from wsseg.evaluation.metrics import unseen_as_background
    from wsseg.segmenter.inference import load_segmenter

    versions = [(role, number) for role, number in (("current", record["parent"]), ("candidate", record["version"]))
                if number is not None]
    models = [(f"{role} (v{number})", load_segmenter(registry.model_store(number))) for role, number in versions]
    seen = len(record["classes"])
    return segmenter_overlays(load_samples(data_root, "val", classes), models, settings, settings["overlays"],
                              lambda ground_truth: unseen_as_background(ground_truth, seen))


def write_reports(out: ArtifactStore, result: dict, curve: list[CurveStep], overlays: list[Overlay]) -> None:
    """report.md, with the forgetting curve's PNG beside it, and report.html, which embeds the PNG, charts of the
    held-out scores and the `overlays` (KFP's HTML output)."""
    png = plot_forgetting_curve(curve)
    out.put_bytes(CURVE_PNG, png)
    out.put_bytes(REPORT, render_report(result, curve).encode())
    out.put_bytes(REPORT_HTML, render_report_html(result, curve, png, overlays).encode())


def render_report(result: dict, curve: list[CurveStep]) -> str:
    verdict, explanation = _verdict(result)
    return "\n".join([
        f"# {_title(result)}", "", _grown_from(result), "", markdown_table(MODEL_COLUMNS, _model_rows(result)), "",
        "## Promotion gate", "", f"**{verdict}**: {explanation}", "", *(f"- {reason}" for reason in result["reasons"]),
        "", "## Forgetting curve", "", f"![forgetting curve]({CURVE_PNG})", "", render_curve_markdown(curve), ""])


def render_report_html(result: dict, curve: list[CurveStep], curve_png: bytes, overlays: list[Overlay]) -> str:
    """The page of `templates/incremental_update.html.j2`."""
    verdict, explanation = _verdict(result)
    return render_page(
        "incremental_update.html.j2", title=_title(result), subtitle=_grown_from(result), cards=_cards(result),
        scores=Section("Held-out scores", SCORES_NOTE, MODEL_COLUMNS, _model_rows(result)), verdict=verdict,
        explanation=explanation, reasons=result["reasons"], per_class_chart=_per_class_chart(result),
        confusion_charts=_confusion_charts(result), overlays=overlays,
        curve=Chart(curve_png, "forgetting curve", curve_caption(curve)), curve_table=curve_section(curve))


SCORES_NOTE = ("Both models scored on the same held-out images and classes, those not seen yet as background "
               "(MiB's protocol); old mIoU includes the background.")


def _cards(result: dict) -> list[tuple[str, str]]:
    candidate, current = result["candidate"] or {}, result["current"] or {}
    cards = [("candidate mIoU, all classes", figure_cell(candidate.get("all_miou"))),
             ("candidate mIoU, new classes", figure_cell(candidate.get("new_miou")))]
    if candidate.get("old_miou") is not None and current.get("old_miou") is not None:
        cards.append(("old classes' change (points)", f"{candidate['old_miou'] - current['old_miou']:+.2f}"))
    return cards


def _per_class_chart(result: dict) -> Chart | None:
    """The models' per-class IoU side by side, the step's new classes marked."""
    added = set(result["classes_added"])
    series = {name: {(f"{label} (new)" if label in added else label): iou
                     for label, iou in scores["per_class_iou"].items()}
              for name, scores in _models(result) if scores.get("per_class_iou")}
    if not series:
        return None
    return Chart(charts.per_class_iou_chart(series, "Per-class IoU on the held-out set"), "per-class IoU chart",
                 "IoU per class of each model; classes marked (new) are the ones this step adds.")


def _confusion_charts(result: dict) -> list[Chart]:
    return [Chart(charts.confusion_heatmap(matrix["counts"], matrix["classes"], f"{name}, held-out set"),
                  f"confusion matrix of the {name}")
            for name, scores in _models(result) if (matrix := scores.get("confusion_matrix"))]


def _title(result: dict) -> str:
    return f"Incremental update: inbox batch {result['batch']}"


def _grown_from(result: dict) -> str:
    added = ", ".join(result["classes_added"]) or "no class"
    # The source names the batches the version learned from, the refused ones it carried included.
    return f"Version {result['version']}, grown from version {result['parent']}, adds {added} ({result['source']})."


def _verdict(result: dict) -> tuple[str, str]:
    if result["promoted"]:
        return "Promoted", f"version {result['version']} is current."
    return "Not promoted", (f"version {result['version']} is registered, version {result['current_version']} "
                            "stays current.")


def _models(result: dict) -> list[tuple[str, dict]]:
    """The scored models, each under the name the report gives it, with its held-out scores ({} without)."""
    models = [(f"current (v{result['parent']})", result["current"])] if result["parent"] is not None else []
    models.append((f"candidate (v{result['version']})", result["candidate"]))
    return [(name, scores or {}) for name, scores in models]


def _model_rows(result: dict) -> list[list[str]]:
    return [[name, *(figure_cell(scores.get(figure)) for figure in FIGURES)] for name, scores in _models(result)]


def register_step_zero(registry: ModelRegistry, segmenter: ArtifactStore, seen: ClassList, config: dict,
                       held_out=None, trained_on: str = "", strict: bool = False) -> tuple[dict, PromotionDecision]:
    """Register the supervised segmenter in `segmenter` (a train-segmenter output, trained on `trained_on`) as the
    registry's first version, segmenting `seen`; scored on `held_out`'s val split where given (its classes as
    `new_miou`: a first version has nothing to forget), and made current if the gate passes."""
    if registry.versions():
        raise ConfigError(f"{registry.uri} holds versions already; step 0 is the first one. Later steps come from "
                          "the incremental pipeline (or register into another registry or --name)")
    scores = {}
    if held_out is not None:
        from wsseg.evaluation.scoring import score_seen_classes

        scores = score_seen_classes(segmenter, load_samples(held_out, "val", ClassList(config["classes"])), seen,
                                    0, config["evaluate"], strict)
    return propose(registry, segmenter, scores=scores, current_scores=None, gate=config["registry"]["gate"],
                   classes=list(seen.names), data=trained_on, config=f"{segmenter.uri}/mmseg_config.py",
                   source=f"step 0: supervised segmenter of {', '.join(seen.foreground)}, from {segmenter.uri}")
