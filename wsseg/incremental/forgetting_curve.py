"""The forgetting curve of an incremental task: old-, new- and all-class mIoU at each step of a version's lineage.

Each version's version.json keeps the figures its step scored it with on the held-out set (`promotion.propose`,
`wsseg.evaluation.scoring.score_seen_classes`, MiB's protocol): `old_miou` over the classes seen before the step
(background included), `new_miou` over the classes it adds, `all_miou` over both. Read along the lineage (version 1,
its child, ... the version asked for), a falling old-class figure is forgetting, and the new-class figure is what each
step learnt. The curve uses these recorded figures only; a figure a version lacks stays a gap.

Step 0, the lineage's first version, has no parent, so no class is old or new to it: its recorded `old_miou` is
the background's alone and its `new_miou` its foreground's. The curve takes its all-class mIoU, over the very
classes step 1 calls old, as its old-class figure, and gives it no new-class figure.

A version the promotion gate refused is marked: in the table's gate column and as a shaded band on the plot.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import pairwise

from wsseg.evaluation.report import Section, figure_cell, markdown_table
from wsseg.incremental.registry import EmptyRegistry, ModelRegistry

CURVE_PNG = "forgetting_curve.png"
TABLE_COLUMNS = ("step", "version", "adds", "old mIoU", "new mIoU", "all mIoU", "gate")
STEP_ZERO_NOTE = ("Step 0 has no parent, so no class is old or new to it: its old-class figure is its all-class "
                  "mIoU, over the classes the next step calls old.")
REFUSED_COLOUR = "#f4c7c3"
LINES = (("old_miou", "old classes (step 0: all its classes)", "#1f77b4", "o"),
         ("new_miou", "new classes of the step", "#ff7f0e", "s"),
         ("all_miou", "all classes seen", "#2ca02c", "^"))
NAMES_SHOWN = 3  # a step adding more classes (step 0's 15) is labelled by their count


@dataclass(frozen=True)
class CurveStep:
    step: int
    version: int
    added: list[str]
    old_miou: float | None
    new_miou: float | None
    all_miou: float | None
    gate: str  # "passed", "refused", or "-" where no gate ran (a version registered by hand)

    @property
    def refused(self) -> bool:
        return self.gate == "refused"


def forgetting_curve(registry: ModelRegistry, version: int | None = None) -> list[CurveStep]:
    """The steps from the lineage's first version to `version` (the newest when None, promoted or not), along
    parent links."""
    records = lineage(registry, _newest(registry) if version is None else version)
    steps = [CurveStep(0, records[0]["version"], records[0]["classes"][1:], *step_figures(records[0]),
                       _gate(records[0]))]
    for number, (parent, record) in enumerate(pairwise(records), start=1):
        steps.append(CurveStep(number, record["version"], record["classes"][len(parent["classes"]):],
                               *step_figures(record), _gate(record)))
    return steps


def step_figures(record: dict) -> tuple[float | None, float | None, float | None]:
    """A version's old-, new- and all-class mIoU as a step of its lineage; step 0's old-class figure is its all-class
    mIoU, and it has no new-class figure (see the module's docstring)."""
    metrics = record["metrics"]
    if record["parent"] is None:
        return metrics.get("all_miou"), None, metrics.get("all_miou")
    return metrics.get("old_miou"), metrics.get("new_miou"), metrics.get("all_miou")


def lineage(registry: ModelRegistry, version: int) -> list[dict]:
    """The version.json records from the lineage's first version to `version`, oldest first."""
    records = [registry.version(version)]
    while records[-1]["parent"] is not None:
        records.append(registry.version(records[-1]["parent"]))
    return records[::-1]


def render_curve_markdown(steps: list[CurveStep]) -> str:
    return markdown_table(TABLE_COLUMNS, _rows(steps)) + "\n\n" + STEP_ZERO_NOTE


def curve_section(steps: list[CurveStep]) -> Section:
    """The curve's table, as an HTML report shows it."""
    return Section("Forgetting curve, step by step", STEP_ZERO_NOTE, TABLE_COLUMNS, _rows(steps))


def plot_forgetting_curve(steps: list[CurveStep]) -> bytes:
    """The curve as PNG bytes: one line per figure across the steps, refused versions on a shaded band."""
    # A Figure on the Agg canvas, not pyplot: no display needed and no global state shared between threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6.0, 1.4 * len(steps)), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = [step.step for step in steps]
    for index, step in enumerate(step for step in steps if step.refused):
        axes.axvspan(step.step - 0.4, step.step + 0.4, color=REFUSED_COLOUR, zorder=0,
                     label="refused by the promotion gate" if index == 0 else None)
    for figure_name, label, colour, marker in LINES:
        values = [_or_nan(getattr(step, figure_name)) for step in steps]
        axes.plot(positions, values, label=label, color=colour, marker=marker)
    axes.set_xticks(positions, [_tick_label(step) for step in steps])
    axes.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)
    axes.set_ylim(0, 100)
    axes.set_ylabel("mIoU (%), held-out set")
    axes.set_title(curve_caption(steps))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _newest(registry: ModelRegistry) -> int:
    versions = registry.versions()
    if not versions:
        raise EmptyRegistry(f"{registry.uri} holds no versions yet, so it has no forgetting curve; a pipeline's "
                            "register step or `wsseg models register` adds the first one")
    return versions[-1]["version"]


def _gate(record: dict) -> str:
    decision = record.get("promotion")
    if decision is None:
        return "-"
    return "passed" if decision["promoted"] else "refused"


def _rows(steps: list[CurveStep]) -> list[list[str]]:
    return [[str(step.step), f"v{step.version}", _added(step.added), figure_cell(step.old_miou),
             figure_cell(step.new_miou), figure_cell(step.all_miou), step.gate] for step in steps]


def curve_caption(steps: list[CurveStep]) -> str:
    return f"Forgetting curve, v{steps[0].version} to v{steps[-1].version}"


def _tick_label(step: CurveStep) -> str:
    added = _added(step.added) if step.step == 0 else "+" + _added(step.added)
    return f"step {step.step}\nv{step.version}\n{added}" + ("\nrefused" if step.refused else "")


def _added(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= NAMES_SHOWN else f"{len(names)} classes"


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value
