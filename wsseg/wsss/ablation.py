"""The ablation: the weakly supervised pipeline once per method over the same data, and one table of figures.

Each method runs in its own prefix of the run's store (`<run>/<method>/`, its config there), the fully
supervised upper bound once in `<run>/upper-bound/`; the table (`<run>/ablation/`) reads what their evaluate
steps stored and the time every step took (`wsseg.runtime.step_clock`: finished steps' and unfinished attempts'). A run
still going, or stopped, has a table too (`wsseg ablation-table`): its unfinished methods are rows without figures.
"""
from __future__ import annotations

import json

from wsseg.config import dump_config, load_config_text
from wsseg.evaluation.report import Overlay, render_ablation_html, render_ablation_table
from wsseg.runtime.run_config import RUN_CONFIG, keep_run_config
from wsseg.runtime.step_clock import ATTEMPT_RECORD, STEP_RECORD
from wsseg.store import ArtifactStore, open_store
from wsseg.wsss.methods import method_config, split_seed

UPPER_BOUND = "upper-bound"
TABLE = "ablation"
EVALUATION = "evaluate/metrics.json"
OVERLAY = "evaluate/overlays/{}.png"
# The figures a method's runs at several seeds are summarised by: mean, lowest and highest.
SEED_FIGURES = ("cam_miou", "pseudo_mask_miou", "relabelled_mask_miou", "segmenter_miou", "minutes")


def open_method_run(run_store_uri: str, method: str, config_yaml: str) -> tuple[str, str]:
    """The method's prefix of the run store and its config (the run's, with the method's settings), stored there."""
    config_text = dump_config(method_config(load_config_text(config_yaml), method))
    store = open_store(run_store_uri).child(method)
    keep_run_config(store, config_text)
    return store.uri, config_text


def started_methods(run_store_uri: str) -> list[str]:
    """The methods a run has begun, by the config each method's prefix stores first."""
    return sorted(key.split("/")[0] for key in open_store(run_store_uri).list()
                  if key.count("/") == 1 and key.endswith("/" + RUN_CONFIG) and not key.startswith(UPPER_BOUND + "/"))


def write_ablation_table(run_store_uri: str, methods: list[str]) -> dict:
    """`<run>/ablation/table.md`, `report.html` and `ablation.json`; returns the JSON's content. `unfinished`
    names the methods, and the upper bound, whose evaluation is not stored yet."""
    run = open_store(run_store_uri)
    evaluations = {method: evaluation for method in [*methods, UPPER_BOUND]
                   if (evaluation := _evaluation(run.child(method))) is not None}
    upper = _row(UPPER_BOUND, run.child(UPPER_BOUND), evaluations.get(UPPER_BOUND))
    rows = [_row(method, run.child(method), evaluations.get(method)) for method in methods]
    unfinished = [row["method"] for row in rows if not row["finished"]]
    table = {"methods": rows, "upper_bound_miou": upper.get("segmenter_miou"), "upper_bound_minutes": upper["minutes"],
             "unfinished": unfinished + ([] if upper["finished"] else ["the upper bound"]),
             "across_seeds": across_seeds(rows)}
    out = run.child(TABLE)
    out.put_bytes("ablation.json", json.dumps(table, indent=2).encode())
    out.put_bytes("table.md", render_ablation_table(table).encode())
    overlays = shared_overlays(run, {method: evaluations[method] for method in methods if method in evaluations})
    out.put_bytes("report.html", render_ablation_html(table, evaluations, overlays).encode())
    return table


def shared_overlays(run: ArtifactStore, evaluations: dict[str, dict]) -> dict[str, Overlay]:
    """One overlay strip per method (`evaluations`: each method's metrics.json), all of one image: the first that
    every method's evaluation shows, so that the methods are compared on the same pixels."""
    shown = {method: {overlay["image_id"]: overlay["panels"] for overlay in metrics.get("overlays", [])}
             for method, metrics in evaluations.items()}
    common = [image_id for image_id in next(iter(shown.values()), {})
              if all(image_id in images for images in shown.values())]
    if not common:
        return {}
    return {method: Overlay(common[0], tuple(images[common[0]]), run.child(method).get_bytes(OVERLAY.format(common[0])))
            for method, images in shown.items()}


def across_seeds(rows: list[dict]) -> list[dict]:
    """Per method with two or more finished runs (at different seeds, "cam@0", "cam@1"): each figure's mean,
    lowest and highest over them, so that a method is compared by more than one run's luck."""
    finished: dict[str, list[dict]] = {}
    for row in rows:
        if row["finished"]:
            finished.setdefault(split_seed(row["method"])[0], []).append(row)
    return [dict(method=method, runs=[row["method"] for row in runs],
                 **{figure: _spread([row.get(figure) for row in runs]) for figure in SEED_FIGURES})
            for method, runs in finished.items() if len(runs) > 1]


def _spread(values: list[float | None]) -> dict | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    return {"mean": round(sum(present) / len(present), 2), "min": min(present), "max": max(present)}


def _evaluation(method_run: ArtifactStore) -> dict | None:
    """The metrics.json of the method's evaluate step, None until it is stored."""
    return json.loads(method_run.get_bytes(EVALUATION)) if method_run.exists(EVALUATION) else None


def _row(method: str, method_run: ArtifactStore, evaluation: dict | None) -> dict:
    """The method's headline figures, none until its evaluation is stored, and its minutes so far."""
    headline = evaluation["headline"] if evaluation else {}
    return dict(method=method, **headline, minutes=round(_seconds(method_run) / 60, 1),
                finished=evaluation is not None)


def _seconds(method_run: ArtifactStore) -> float:
    """Every step's finished attempts and its unfinished ones (a step running now, or stopped mid-way)."""
    return sum(json.loads(method_run.get_bytes(key))["seconds"] for key in method_run.list()
               if key.count("/") == 1 and key.split("/")[1] in (STEP_RECORD, ATTEMPT_RECORD))
