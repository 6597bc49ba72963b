"""The reports' charts, drawn with matplotlib into PNG bytes: per-class IoU bars, heat maps (a confusion matrix
normalised per ground-truth row, or methods' per-class IoU side by side) and the ablation's mIoU per method.

Each chart is a `Figure` on the Agg canvas, not pyplot: no display is needed and no global state is shared between
threads (a step's writer threads, tests run side by side). Figures are percentages, as `ConfusionMatrix.summary`
gives them; a missing one (None) is left out of a bar chart and shown grey in a heat map.
"""
from __future__ import annotations

import io

import numpy as np

# Colour-blind-safe and in the order reports list stages: CAM, pseudo mask, relabelled mask, segmenter (Okabe-Ito).
SERIES_COLOURS = ("#56b4e9", "#e69f00", "#cc79a7", "#009e73", "#0072b2", "#d55e00")
MISSING_COLOUR = "#dddddd"
DPI = 100
# Up to this many classes a heat map prints each cell's percentage; beyond it the digits would not fit.
ANNOTATED_CLASSES = 25


def per_class_iou_chart(series: dict[str, dict[str, float | None]], title: str,
                        precision_recall: dict[str, dict] | None = None) -> bytes:
    """One group of bars per class, one bar per series (a stage, a model), IoU in percent. `precision_recall`, a
    `ConfusionMatrix.summary`'s `per_class`, adds the last series' precision and recall as markers on its bar: a
    low IoU with a high recall over-segments, with a high precision under-segments."""
    figure, axes = _figure(max(7.0, 0.5 * len(next(iter(series.values()))) * (1 + 0.35 * len(series))), 3.8)
    class_names = list(next(iter(series.values())))
    positions = np.arange(len(class_names))
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series.items()):
        offsets = positions + (index - (len(series) - 1) / 2) * width
        axes.bar(offsets, _values(values, class_names), width, label=label,
                 color=SERIES_COLOURS[index % len(SERIES_COLOURS)])
    if precision_recall:
        last = positions + (len(series) - 1) / 2 * width
        for figure_name, marker, colour in (("precision", "v", "#222222"), ("recall", "^", "#d55e00")):
            values = [precision_recall[name][figure_name] for name in class_names]
            axes.scatter(last, _values(dict(zip(class_names, values, strict=True)), class_names), marker=marker,
                         color=colour, s=22, zorder=3, label=f"{figure_name} ({list(series)[-1]})")
    axes.set_xticks(positions, class_names, rotation=40, ha="right")
    _percent_axis(axes, "IoU (%)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return _png(figure)


def confusion_heatmap(counts: list[list[int]], class_names: list[str], title: str) -> bytes:
    """The confusion matrix (rows ground truth, columns prediction) as the share of each ground-truth class's pixels
    given to each predicted class: the diagonal is the recall, a bright cell off it a confusion. A class absent from
    the ground truth is a grey row."""
    matrix = np.asarray(counts, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(totals > 0, 100 * matrix / np.maximum(totals, 1), np.nan)
    size = max(4.5, 0.22 * len(class_names) + 2.4)
    figure, axes = _figure(size + 0.9, size)
    _heatmap(figure, axes, shares, class_names, class_names, "% of the ground-truth class's pixels")
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title(title)
    return _png(figure)


def per_class_heatmap(rows: dict[str, dict[str, float | None]], title: str) -> bytes:
    """Several runs' per-class IoU (one row per run, one column per class), each cell its IoU in percent."""
    class_names = list(next(iter(rows.values())))
    values = np.array([_values(per_class, class_names) for per_class in rows.values()], dtype=np.float64)
    figure, axes = _figure(max(7.0, 0.42 * len(class_names) + 3.5), max(2.4, 0.42 * len(rows) + 1.8))
    _heatmap(figure, axes, values, list(rows), class_names, "IoU (%)")
    axes.set_title(title)
    return _png(figure)


def ablation_chart(methods: list[dict], upper_bound: float | None, figures: dict[str, str]) -> bytes:
    """mIoU per method: one bar per figure (`figures`: a row's key -> its label, in the order of the pipeline's
    stages), a method without a figure (not finished) without its bar, and the fully supervised upper bound as a
    dashed line across."""
    names = [row["method"] for row in methods]
    figure, axes = _figure(max(7.0, 0.55 * len(names) * (1 + 0.3 * len(figures)) + 3.0), 4.0)
    positions = np.arange(len(names))
    width = 0.8 / len(figures)
    for index, (key, label) in enumerate(figures.items()):
        offsets = positions + (index - (len(figures) - 1) / 2) * width
        heights = [_or_nan(row.get(key)) for row in methods]
        bars = axes.bar(offsets, heights, width, label=label, color=SERIES_COLOURS[index % len(SERIES_COLOURS)])
        axes.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=1)
    if upper_bound is not None:
        axes.axhline(upper_bound, color="#333333", linestyle="--", linewidth=1.2,
                     label=f"fully supervised upper bound ({upper_bound:.2f})")
    axes.set_xticks(positions, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    _percent_axis(axes, "mIoU (%)")
    axes.set_title("mIoU of each stage, per method")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return _png(figure)


def _heatmap(figure, axes, values: np.ndarray, row_labels: list[str], column_labels: list[str], legend: str) -> None:
    from matplotlib import colormaps

    colours = colormaps["Blues"].with_extremes(bad=MISSING_COLOUR)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=0, vmax=100, aspect="auto")
    axes.set_xticks(np.arange(len(column_labels)), column_labels, rotation=50, ha="right", fontsize="small")
    axes.set_yticks(np.arange(len(row_labels)), row_labels, fontsize="small")
    axes.tick_params(length=0)
    if max(values.shape) <= ANNOTATED_CLASSES:
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value) and value >= 0.5:
                axes.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=6.5,
                          color="white" if value > 60 else "#222222")
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02, label=legend)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(min(width, 14.0), height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _percent_axis(axes, label: str) -> None:
    axes.set_ylim(0, 105)
    axes.set_ylabel(label)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)


def _values(values: dict[str, float | None], names: list[str]) -> list[float]:
    return [_or_nan(values.get(name)) for name in names]


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
