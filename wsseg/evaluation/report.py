"""The evaluation report: overlays of the pipeline's stages and Markdown/HTML renderings of `metrics.json`.

`render_markdown` and `render_html` take the metrics dict that `wsseg.steps.evaluate` writes; figures are
percentages as `ConfusionMatrix.summary` gives them. `render_summary_table` is the one-line-per-run table
(CAM, pseudo mask, segmenter, fully supervised upper bound) that a demo can print across several runs. The HTML
pages (evaluation, ablation) come from the templates of `wsseg.evaluation.pages`, with the charts of
`wsseg.evaluation.charts` drawn from the figures and confusion counts.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from wsseg.classes import voc_palette
from wsseg.evaluation import charts
from wsseg.evaluation.pages import Chart, render_page

OVERLAY_GAP_PX = 4
HEATMAP_OPACITY = 0.5
SUMMARY_COLUMNS = ("run", "CAM mIoU", "pseudo-mask mIoU", "segmentation mIoU", "upper bound mIoU",
                   "% of upper bound")


@dataclass(frozen=True)
class Overlay:
    image_id: str
    panels: tuple[str, ...]  # titles, left to right
    png: bytes


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) VOC colours (255, "uncertain", is VOC's cream border colour)."""
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)[mask]


def cam_heatmap(image: np.ndarray, activation: np.ndarray) -> np.ndarray:
    """A jet-coloured activation in 0..1, blended over the image."""
    value = np.clip(activation, 0.0, 1.0)[..., None]
    # Piecewise-linear jet: blue -> cyan -> yellow -> red as the activation rises.
    jet = np.clip(np.concatenate([1.5 - np.abs(4 * value - 3), 1.5 - np.abs(4 * value - 2),
                                  1.5 - np.abs(4 * value - 1)], axis=-1), 0.0, 1.0) * 255
    return (HEATMAP_OPACITY * jet + (1 - HEATMAP_OPACITY) * image).astype(np.uint8)


def overlay_strip(panels: list[np.ndarray]) -> bytes:
    """Same-sized RGB panels side by side with white gaps, as PNG bytes."""
    height = panels[0].shape[0]
    gap = np.full((height, OVERLAY_GAP_PX, 3), 255, dtype=np.uint8)
    pieces = [piece for panel in panels for piece in (gap, panel)][1:]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(pieces, axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()


def render_summary_table(rows: list[tuple[str, dict]], upper_bound: dict | None = None) -> str:
    """Markdown table, one row per run: (name, the run's headline dict from evaluate's metrics.json).

    `upper_bound` is the fully supervised run's headline; its segmenter mIoU is the upper bound, and the ratio
    segmenter / upper bound is the figure WSSS papers quote (the best reach about 85-90 % of it on VOC).
    """
    upper = upper_bound.get("segmenter_miou") if upper_bound else None
    return markdown_table(SUMMARY_COLUMNS, [_summary_cells(name, headline, upper) for name, headline in rows])


def render_markdown(metrics: dict, overlays: list[Overlay]) -> str:
    lines = ["# wsseg evaluation", ""]
    for title, note, header, rows in _sections(metrics):
        lines += [f"## {title}", ""] + ([note, ""] if note else []) + [markdown_table(header, rows), ""]
    if overlays:
        lines += ["## Overlays", ""]
        for overlay in overlays:
            lines += [f"![{overlay.image_id}](overlays/{overlay.image_id}.png)", "",
                      f"{overlay.image_id}: {' | '.join(overlay.panels)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_html(metrics: dict, overlays: list[Overlay]) -> str:
    """A self-contained page (`templates/evaluation.html.j2`): the headline, per-class IoU of every stage scored,
    the stored confusion matrices as heat maps, the overlays and the per-class tables."""
    headline, *sections = _sections(metrics)
    # The page shows the figures the run has; the Markdown keeps every row, "-" where there is none.
    headline = headline._replace(rows=[row for row in headline.rows if row[1] != "-"])
    return render_page("evaluation.html.j2", title=f"wsseg evaluation: {_run_kind(metrics)}",
                       subtitle=_scored_line(metrics), cards=_cards(metrics), headline=headline, sections=sections,
                       per_class_chart=_per_class_chart(metrics), confusion_charts=_confusion_charts(metrics),
                       overlays=overlays)


def _run_kind(metrics: dict) -> str:
    if metrics.get("cam"):
        return "image labels to pseudo masks to a segmenter"
    return "segmenter" if metrics.get("segmenter") else "nothing scored"


def _scored_line(metrics: dict) -> str:
    stages = list(_stage_summaries(metrics))
    return f"Scored: {', '.join(stages)}." if stages else "Nothing was scored."


def _cards(metrics: dict) -> list[tuple[str, str]]:
    """The headline's figures a reader looks for first, those the run has."""
    head = metrics["headline"]
    upper = metrics.get("upper_bound_miou")
    cards = [("CAM mIoU (train)", head["cam_miou"]), ("pseudo-mask mIoU (train)", head["pseudo_mask_miou"]),
             ("segmenter mIoU (val)", head["segmenter_miou"]),
             ("segmenter as % of the upper bound", _ratio(head["segmenter_miou"], upper)),
             ("instance mAP@0.5 (val)", head.get("instance_map50"))]
    return [(label, figure_cell(value)) for label, value in cards if value is not None]


def _stage_summaries(metrics: dict) -> dict[str, dict]:
    """Each stage scored (its label -> its `ConfusionMatrix.summary`), in the pipeline's order."""
    masks = metrics.get("pseudo_masks") or {}
    stages = {"CAM (train)": (metrics.get("cam") or {}).get("at_best_threshold"),
              "pseudo mask (train)": masks.get("uncertain_as_background"),
              "relabelled mask (train)": masks.get("relabelled"),
              "segmenter (val)": metrics.get("segmenter")}
    return {label: summary for label, summary in stages.items() if summary}


def _per_class_chart(metrics: dict) -> Chart | None:
    stages = _stage_summaries(metrics)
    if not stages:
        return None
    last = list(stages)[-1]
    png = charts.per_class_iou_chart(
        {label: {name: figures["iou"] for name, figures in summary["per_class"].items()}
         for label, summary in stages.items()}, "Per-class IoU of each stage", stages[last]["per_class"])
    return Chart(png, "per-class IoU chart", f"Bars: IoU per class and stage; markers: the {last}'s precision and "
                                             "recall. Uncertain pseudo-mask pixels count as background.")


CONFUSION_TITLES = {"cam": "CAMs at the best threshold (train)",
                    "pseudo_masks": "Pseudo masks, uncertain as background (train)",
                    "segmenter": "Segmenter (val)"}


def _confusion_charts(metrics: dict) -> list[Chart]:
    """A heat map of each confusion matrix evaluate stored (a run from before it stored them has none)."""
    stored = metrics.get("confusion_matrices") or {}
    return [Chart(charts.confusion_heatmap(matrix["counts"], matrix["classes"], title), f"confusion matrix: {title}")
            for key, title in CONFUSION_TITLES.items() if (matrix := stored.get(key))]


class Section(NamedTuple):
    """One table of a report: its title, a note under it, the header and the rows of cells."""

    title: str
    note: str
    header: tuple[str, ...]
    rows: list[list[str]]


def _sections(metrics: dict) -> list[Section]:
    """(title, note, header, rows) of each table, in report order."""
    sections = [Section("Headline", _headline_note(metrics), ("figure", "value"), _headline_rows(metrics))]
    cam = metrics.get("cam")
    if cam:
        sweep = [[figure_cell(row["threshold"]), figure_cell(row["miou"])] for row in cam["threshold_sweep"]]
        sections.append(Section("CAM background threshold sweep (train)", "", ("threshold", "mIoU"), sweep))
        sections.append(_per_class(f"CAMs at threshold {figure_cell(cam['best_threshold'])}, per class (train)",
                                   cam["at_best_threshold"]))
    masks = metrics.get("pseudo_masks")
    if masks:
        sections.append(_per_class("Pseudo masks, uncertain pixels as background, per class (train)",
                                   masks["uncertain_as_background"]))
        sections.append(_per_class("Pseudo masks, confident pixels only, per class (train)",
                                   masks["confident_only"]))
        if masks.get("thresholds"):
            sections.append(_thresholds_section(masks["thresholds"], metrics))
    segmenter = metrics.get("segmenter")
    if segmenter:
        title, note, header, rows = _per_class("Segmenter, per class (val)", segmenter)
        sections.append(Section(title, f"{note} {_test_time_views(segmenter)}", header, rows))
    instances = metrics.get("instances") or {}
    if instances.get("train") or instances.get("val"):
        sections.append(_instance_section(instances))
    return sections


# Rows of the instance table: (split, section of its figures, what the row is).
INSTANCE_ROWS = (("train", "pseudo_mask_components", "connected components of the pseudo masks"),
                 ("train", "instance_labels", "IRN instance pseudo labels"),
                 ("val", "connected_components", "connected components of the segmenter's masks"),
                 ("val", "instance_model", "instance model (IRN's heads on the segmenter)"))
INSTANCE_NOTE = ("VOC's instance protocol: AP per class over the instances ranked by score, a prediction a true "
                 "positive when its mask IoU with an unmatched instance of its class reaches the threshold (void "
                 "pixels left out), mean over the classes with an instance (%). Connected components are the "
                 "baseline on the same masks, each region one instance.")


def _instance_section(instances: dict) -> Section:
    rows = []
    for split, section, name in INSTANCE_ROWS:
        figures = (instances.get(split) or {}).get(section)
        if figures:
            rows.append([name, split, figure_cell(figures["map50"]), figure_cell(figures["map70"]),
                         str(figures["instances"]), str(figures["predictions"])])
    return Section("Instances (VOC mAP)", INSTANCE_NOTE,
                   ("instances from", "split", "mAP@0.5", "mAP@0.7", "ground-truth instances", "predicted"), rows)


def _test_time_views(summary: dict) -> str:
    """How the figures were predicted: a mIoU over several views is not one over the image alone."""
    scales = ", ".join(f"×{scale:g}" for scale in summary["scales"])
    mirrored = ", each also mirrored" if summary["flip"] else ""
    summed = "; the views' class probabilities summed" if len(summary["scales"]) > 1 or summary["flip"] else ""
    return f"Predicted at {scales} of the model's input scale{mirrored}{summed}."


THRESHOLD_SOURCES = {
    "cams": "chosen from this run's CAMs alone",
    "calibration": "from the CAMs, scaled to fit the named calibration images",
    "config": "the config's constants",
}


def _thresholds_section(thresholds: dict, metrics: dict) -> Section:
    """The refine step's per-class pass thresholds and where they came from."""
    names = list(metrics["pseudo_masks"]["uncertain_as_background"]["per_class"])
    details = thresholds.get("details", {})
    note = f"Thresholds {THRESHOLD_SOURCES.get(thresholds['source'], thresholds['source'])}"
    if thresholds["source"] == "calibration":
        note += f" ({len(details['images'])} images, scale {figure_cell(details['scale'])})"
    elif details.get("method"):
        note += f" ({details['method']})"
    rows = [[names[int(label)] if int(label) < len(names) else label, figure_cell(level),
             figure_cell(thresholds["background"][label])] for label, level in thresholds["foreground"].items()]
    return Section("Pseudo-mask thresholds (CRF passes)", note + ".", ("class", "foreground pass", "background pass"),
                   rows)


def _headline_note(metrics: dict) -> str:
    images = f"Images: {', '.join(f'{k} {v}' for k, v in metrics.get('counts', {}).items())}."
    if not metrics.get("pseudo_masks"):
        return images
    return ("Headline pseudo-mask figure: uncertain (255) pixels counted as background, so missed coverage "
            "costs as it does for the CAMs; the confident-only figure scores the labelled pixels alone. " + images)


def _headline_rows(metrics: dict) -> list[list[str]]:
    head = metrics["headline"]
    rows = [["CAM mIoU (train)", figure_cell(head["cam_miou"])],
            ["CAM best background threshold", figure_cell(head["cam_best_threshold"])],
            ["pseudo-mask mIoU (train, headline)", figure_cell(head["pseudo_mask_miou"])],
            ["pseudo-mask mIoU on confident pixels", figure_cell(head["pseudo_mask_confident_miou"])],
            ["uncertain pixels (%)", figure_cell(None if head["uncertain_fraction"] is None
                                             else 100 * head["uncertain_fraction"])],
            ["pseudo-mask mIoU, band relabelled by self-training", figure_cell(head.get("relabelled_mask_miou"))],
            ["segmenter mIoU (val)", figure_cell(head["segmenter_miou"])]]
    if head.get("instance_map50") is not None:
        rows += [["instance mAP@0.5 (val)", figure_cell(head["instance_map50"])],
                 ["instance mAP@0.7 (val)", figure_cell(head["instance_map70"])],
                 ["connected-components mAP@0.5 (val)", figure_cell(head["connected_components_map50"])]]
    upper = metrics.get("upper_bound_miou")
    if upper is not None:
        rows += [["fully supervised upper bound mIoU", figure_cell(upper)],
                 ["segmenter as % of upper bound", figure_cell(_ratio(head["segmenter_miou"], upper))]]
    return rows


def _per_class(title: str, summary: dict) -> Section:
    rows = [[name, figure_cell(v["iou"]), figure_cell(v["precision"]), figure_cell(v["recall"])]
            for name, v in summary["per_class"].items()]
    rows.append(["mean", figure_cell(summary["miou"]), "", ""])
    note = f"mIoU {figure_cell(summary['miou'])}, pixel accuracy {figure_cell(summary['pixel_accuracy'])} (%)."
    return Section(title, note, ("class", "IoU", "precision", "recall"), rows)


def _summary_cells(name: str, headline: dict, upper: float | None) -> list[str]:
    segmenter = headline.get("segmenter_miou")
    return [name, figure_cell(headline.get("cam_miou")), figure_cell(headline.get("pseudo_mask_miou")),
            figure_cell(segmenter), figure_cell(upper), figure_cell(_ratio(segmenter, upper))]


ABLATION_COLUMNS = ("method", "CAM mIoU", "pseudo-mask mIoU", "relabelled-mask mIoU", "segmenter mIoU",
                    "upper bound mIoU", "% of upper bound", "minutes")


SEED_COLUMNS = ("method", "runs", "CAM mIoU", "pseudo-mask mIoU", "relabelled-mask mIoU", "segmenter mIoU",
                "% of upper bound", "minutes")
SEED_NOTE = "Each method over its runs at different seeds: mean (lowest-highest)."


def render_ablation_table(table: dict) -> str:
    """Markdown: one row per method of an ablation (`wsseg.wsss.ablation.write_ablation_table`'s dict), then, where a
    method ran at several seeds, its mean and range over them."""
    text = markdown_table(ABLATION_COLUMNS, _ablation_rows(table)) + "\n\n" + _ablation_note(table)
    if table.get("across_seeds"):
        text += "\n\n" + markdown_table(SEED_COLUMNS, _seed_rows(table)) + "\n\n" + SEED_NOTE
    return text


def render_ablation_html(table: dict, evaluations: dict[str, dict], overlays: dict[str, Overlay]) -> str:
    """The ablation's page (`templates/ablation.html.j2`): the table and its chart, then what each finished method's
    evaluation (`evaluations`, its metrics.json by method, the upper bound's under its name too) holds side by side:
    per-class IoU, confusion matrices, and `overlays`, one strip per method of the same image."""
    seeds = Section("Across seeds", SEED_NOTE, SEED_COLUMNS, _seed_rows(table)) if table.get("across_seeds") else None
    return render_page(
        "ablation.html.j2", title="wsseg ablation", subtitle=_ablation_subtitle(table), cards=_ablation_cards(table),
        chart=Chart(charts.ablation_chart(table["methods"], table["upper_bound_miou"], _ablation_figures(table)),
                    "chart of each method's mIoU", "Bars: each stage's mIoU per method; dashed line: the fully "
                                                   "supervised upper bound."),
        table=Section("Table", _ablation_note(table), ABLATION_COLUMNS, _ablation_rows(table)),
        seeds=seeds,
        per_class_chart=_methods_per_class_chart(evaluations),
        confusion_charts=[chart for method, metrics in evaluations.items()
                          for chart in _segmenter_confusion(method, metrics)],
        overlays=[(row["method"], overlays[row["method"]]) for row in table["methods"] if row["method"] in overlays])


ABLATION_FIGURES = {"cam_miou": "CAM (train)", "pseudo_mask_miou": "pseudo mask (train)",
                    "relabelled_mask_miou": "relabelled mask (train)", "segmenter_miou": "segmenter (val)"}


def _ablation_figures(table: dict) -> dict[str, str]:
    """The figures the chart draws: the relabelled masks only where some method self-trained."""
    return {key: label for key, label in ABLATION_FIGURES.items()
            if key != "relabelled_mask_miou" or any(row.get(key) is not None for row in table["methods"])}


def _ablation_subtitle(table: dict) -> str:
    finished = sum(row["finished"] for row in table["methods"])
    unfinished = f"; not finished yet: {', '.join(table['unfinished'])}" if table["unfinished"] else ""
    return f"{finished} of {len(table['methods'])} method runs evaluated{unfinished}."


def _ablation_cards(table: dict) -> list[tuple[str, str]]:
    scored = [row for row in table["methods"] if row.get("segmenter_miou") is not None]
    cards = [("fully supervised upper bound mIoU", figure_cell(table["upper_bound_miou"]))]
    if scored:
        best = max(scored, key=lambda row: row["segmenter_miou"])
        cards.insert(0, (f"best segmenter mIoU: {best['method']}", figure_cell(best["segmenter_miou"])))
    return cards


def _methods_per_class_chart(evaluations: dict[str, dict]) -> Chart | None:
    segmenters = {method: metrics["segmenter"]["per_class"] for method, metrics in evaluations.items()
                  if metrics.get("segmenter")}
    if not segmenters:
        return None
    rows = {method: {name: figures["iou"] for name, figures in per_class.items()}
            for method, per_class in segmenters.items()}
    return Chart(charts.per_class_heatmap(rows, "Segmenter IoU per class (val), per method"),
                 "per-class IoU of each method's segmenter", "Each row a method's segmenter, each cell a class's IoU.")


def _segmenter_confusion(name: str, metrics: dict) -> list[Chart]:
    matrix = (metrics.get("confusion_matrices") or {}).get("segmenter")
    if matrix is None:
        return []
    title = f"{name}: segmenter (val)"
    return [Chart(charts.confusion_heatmap(matrix["counts"], matrix["classes"], title), f"confusion matrix: {title}")]


def _seed_rows(table: dict) -> list[list[str]]:
    upper = table["upper_bound_miou"]
    rows = []
    for summary in table["across_seeds"]:
        segmenter = summary["segmenter_miou"]
        of_upper = None if segmenter is None or not upper else {key: _ratio(value, upper)
                                                                for key, value in segmenter.items()}
        rows.append([summary["method"], str(len(summary["runs"]))] +
                    [_spread_cell(summary[figure]) for figure in ("cam_miou", "pseudo_mask_miou",
                                                                  "relabelled_mask_miou", "segmenter_miou")] +
                    [_spread_cell(of_upper), _spread_cell(summary["minutes"])])
    return rows


def _spread_cell(spread: dict | None) -> str:
    """"mean (lowest-highest)" of a figure over several runs, "-" where there is none."""
    if spread is None:
        return "-"
    return f"{spread['mean']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def _ablation_rows(table: dict) -> list[list[str]]:
    upper = table["upper_bound_miou"]
    rows = []
    for row in table["methods"]:
        cells = _summary_cells(row["method"], row, upper)
        rows.append(cells[:3] + [figure_cell(row.get("relabelled_mask_miou"))] + cells[3:] +
                    [figure_cell(row["minutes"])])
    return rows


def _ablation_note(table: dict) -> str:
    unfinished = table["unfinished"]
    return ("CAM mIoU on train at the best background threshold; pseudo masks on train (uncertain pixels counted "
            "as background); relabelled masks: the pseudo masks with their band labelled by a first segmenter, "
            "which the segmenter trained on (segmenter.self_training; - without it); segmenter and upper bound "
            f"(the same segmenter on ground truth, {figure_cell(table['upper_bound_minutes'])} minutes) on val; "
            "minutes: the method's steps, end to end."
            + (f" Not finished yet: {', '.join(unfinished)} (minutes so far)." if unfinished else ""))


def _ratio(value: float | None, upper: float | None) -> float | None:
    return None if value is None or not upper else 100 * value / upper


def figure_cell(value: float | None) -> str:
    """A figure as reports print it: two decimals, "-" where there is none."""
    return "-" if value is None else f"{value:.2f}"


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
