"""The forgetting curve of a registry's lineage: the figures each version recorded, step by step, as a table and a
PNG plot marking the versions the gate refused; in the incremental-update report and from `wsseg models curve`."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from wsseg.cli import main
from wsseg.incremental.forgetting_curve import CURVE_PNG, REFUSED_COLOUR, forgetting_curve, plot_forgetting_curve
from wsseg.incremental.registry import EmptyRegistry, ModelRegistry
from wsseg.steps.incremental_update import REPORT, REPORT_HTML, outcome, write_reports
from wsseg.store import open_store

STEP0 = ["background", "aeroplane", "bicycle"]
STEP1 = [*STEP0, "bird"]
STEP2 = [*STEP1, "boat"]
# What each step scored its version with; step 0's old_miou is the background's alone (it has no old classes).
STEP0_SCORES = {"old_miou": 91.0, "new_miou": 70.5, "all_miou": 77.33}
STEP1_SCORES = {"old_miou": 74.0, "new_miou": 40.25, "all_miou": 65.56}
STEP2_SCORES = {"old_miou": 52.5, "new_miou": 35.0, "all_miou": 49.0}


def gate(promoted: bool, current: dict | None, candidate: dict) -> dict:
    return {"promoted": promoted, "reasons": ["old_miou fell 21.50 points"] if not promoted else ["within the gate"],
            "figures": {"current": current, "candidate": candidate, "gate": {}}}


@pytest.fixture
def three_steps(tmp_path, fake_model):
    """Version 1 (step 0), 2 grown from it and promoted, 3 grown from 2 and refused by the gate."""
    registry = ModelRegistry(open_store(tmp_path / "registry"), "segmenter")
    for classes, parent, scores, promoted in ((STEP0, None, STEP0_SCORES, True), (STEP1, 1, STEP1_SCORES, True),
                                              (STEP2, 2, STEP2_SCORES, False)):
        record = registry.register(fake_model(), classes=classes, metrics=scores, data=f"batch-{parent}",
                                   config="c", parent=parent, decision=gate(promoted, None, scores))
        if promoted:
            registry.promote(record["version"], reason="passed the gate")
    return registry


def table_rows(markdown: str) -> list[list[str]]:
    """The curve table's rows: those of a Markdown table that start with a step number."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| ")]
    return [row for row in rows if row[0].isdigit()]


def refused_band_pixels(png: bytes) -> int:
    band = tuple(int(REFUSED_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    return int((np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) == band).all(axis=-1).sum())


def test_the_table_has_a_row_per_step_with_the_figures_each_version_recorded(three_steps):
    from wsseg.incremental.forgetting_curve import render_curve_markdown

    assert table_rows(render_curve_markdown(forgetting_curve(three_steps))) == [
        ["0", "v1", "aeroplane, bicycle", "77.33", "-", "77.33", "passed"],
        ["1", "v2", "bird", "74.00", "40.25", "65.56", "passed"],
        ["2", "v3", "boat", "52.50", "35.00", "49.00", "refused"]]


def test_the_curve_follows_parent_links_up_to_the_version_asked_for(three_steps, fake_model):
    three_steps.register(fake_model(), classes=[*STEP1, "bottle"], metrics={"old_miou": 70.0}, data="again",
                         config="c", parent=2)
    assert [(step.step, step.version) for step in forgetting_curve(three_steps)] == [(0, 1), (1, 2), (2, 4)]
    assert [step.version for step in forgetting_curve(three_steps, 3)] == [1, 2, 3]
    assert [step.version for step in forgetting_curve(three_steps, 2)] == [1, 2]


def test_the_plot_is_a_png_with_a_band_only_where_the_gate_refused(three_steps):
    with_refusal = plot_forgetting_curve(forgetting_curve(three_steps, 3))
    without = plot_forgetting_curve(forgetting_curve(three_steps, 2))

    image = Image.open(io.BytesIO(with_refusal))
    assert image.format == "PNG" and image.width > 0 and image.height > 0
    assert refused_band_pixels(with_refusal) > 1000
    assert refused_band_pixels(without) == 0


def test_an_empty_registry_has_no_curve_and_says_how_to_start_one(tmp_path):
    with pytest.raises(EmptyRegistry, match="wsseg models register"):
        forgetting_curve(ModelRegistry(open_store(tmp_path / "registry")))


def test_the_update_report_holds_the_curve_of_the_candidates_lineage(three_steps, tmp_path):
    out = open_store(tmp_path / "update")
    result = outcome(three_steps, "batch-2", three_steps.version(3))
    write_reports(out, result, forgetting_curve(three_steps, 3), overlays=[])

    png = out.get_bytes(CURVE_PNG)
    assert Image.open(io.BytesIO(png)).format == "PNG" and refused_band_pixels(png) > 0
    report = out.get_bytes(REPORT).decode()
    assert "**Not promoted**: version 3 is registered, version 2 stays current." in report
    assert f"![forgetting curve]({CURVE_PNG})" in report
    assert [row[:2] for row in table_rows(report.split("## Forgetting curve")[1])] == [["0", "v1"], ["1", "v2"],
                                                                                       ["2", "v3"]]
    page = out.get_bytes(REPORT_HTML).decode()
    assert base64.b64encode(png).decode() in page and "<td>refused</td>" in page


def test_models_curve_writes_the_png_and_prints_the_table(three_steps, tmp_path, capsys):
    target = tmp_path / "plots" / "curve.png"
    assert main(["models", "curve", "--registry", str(tmp_path / "registry"), "--name", "segmenter",
                 "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert [row[1] for row in table_rows(printed)] == ["v1", "v2", "v3"]
    assert Image.open(target).format == "PNG"

    assert main(["models", "curve", "--registry", str(tmp_path / "registry"), "--version", "2",
                 "--out", str(target)]) == 0
    assert [row[1] for row in table_rows(capsys.readouterr().out)] == ["v1", "v2"]
    assert refused_band_pixels(target.read_bytes()) == 0
