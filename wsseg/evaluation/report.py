"""The evaluation report: overlays of the pipeline's stages and Markdown/HTML renderings of `metrics.json`.

`render_markdown` and `render_html` take the metrics dict that `wsseg.steps.evaluate` writes; figures are
percentages as `ConfusionMatrix.summary` gives them. `render_summary_table` is the one-line-per-run table
(CAM, pseudo mask, segmenter, fully supervised upper bound) that a demo can print across several runs.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wsseg.classes import voc_palette

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
    """A self-contained page: overlays are embedded as base64 data URIs so the file travels alone."""
    body = []
    for title, note, header, rows in _sections(metrics):
        body += [f"<h2>{html.escape(title)}</h2>"] + ([f"<p>{html.escape(note)}</p>"] if note else [])
        body.append(html_table(header, rows))
    if overlays:
        body.append("<h2>Overlays</h2>")
    for overlay in overlays:
        body.append(html_figure(overlay.png, overlay.image_id, f"{overlay.image_id}: {' | '.join(overlay.panels)}"))
    return html_page("wsseg evaluation", body)


def html_page(title: str, body: list[str]) -> str:
    """A page of `body`'s HTML fragments under the heading `title`."""
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}")
    title = html.escape(title)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body><h1>{title}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def html_figure(png: bytes, alt: str, caption: str) -> str:
    """A PNG embedded as a base64 data URI, so that the page travels alone (KFP's HTML viewer shows one file)."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _sections(metrics: dict) -> list[tuple[str, str, tuple[str, ...], list[list[str]]]]:
    """(title, note, header, rows) of each table, in report order."""
    sections = [("Headline", _headline_note(metrics), ("figure", "value"), _headline_rows(metrics))]
    cam = metrics.get("cam")
    if cam:
        sections.append(("CAM background threshold sweep (train)", "", ("threshold", "mIoU"),
                         [[figure_cell(row["threshold"]), figure_cell(row["miou"])] for row in cam["threshold_sweep"]]))
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
        sections.append((title, f"{note} {_test_time_views(segmenter)}", header, rows))
    return sections


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


def _thresholds_section(thresholds: dict, metrics: dict) -> tuple[str, str, tuple[str, ...], list[list[str]]]:
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
    return "Pseudo-mask thresholds (CRF passes)", note + ".", ("class", "foreground pass", "background pass"), rows


def _headline_note(metrics: dict) -> str:
    return ("Headline pseudo-mask figure: uncertain (255) pixels counted as background, so missed coverage "
            "costs as it does for the CAMs; the confident-only figure scores the labelled pixels alone. "
            f"Images: {', '.join(f'{k} {v}' for k, v in metrics.get('counts', {}).items())}.")


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
    upper = metrics.get("upper_bound_miou")
    if upper is not None:
        rows += [["fully supervised upper bound mIoU", figure_cell(upper)],
                 ["segmenter as % of upper bound", figure_cell(_ratio(head["segmenter_miou"], upper))]]
    return rows


def _per_class(title: str, summary: dict) -> tuple[str, str, tuple[str, ...], list[list[str]]]:
    rows = [[name, figure_cell(v["iou"]), figure_cell(v["precision"]), figure_cell(v["recall"])]
            for name, v in summary["per_class"].items()]
    rows.append(["mean", figure_cell(summary["miou"]), "", ""])
    note = f"mIoU {figure_cell(summary['miou'])}, pixel accuracy {figure_cell(summary['pixel_accuracy'])} (%)."
    return title, note, ("class", "IoU", "precision", "recall"), rows


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


def render_ablation_html(table: dict) -> str:
    seeds = (f"{html_table(SEED_COLUMNS, _seed_rows(table))}<p>{SEED_NOTE}</p>" if table.get("across_seeds")
             else "")
    return (f"<html><head><meta charset='utf-8'><title>wsseg ablation</title></head><body><h1>Ablation</h1>"
            f"{html_table(ABLATION_COLUMNS, _ablation_rows(table))}<p>{html.escape(_ablation_note(table))}</p>"
            f"{seeds}</body></html>")


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


def html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
