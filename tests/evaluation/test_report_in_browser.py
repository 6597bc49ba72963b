"""Every pipeline's report.html opened in headless Chromium (Debian's `chromium`, which `make test` installs), from
small real runs on the tiny synthetic set: every image loads, the charts and heat maps are there, and the page logs
no error. Playwright drives the system browser; it downloads none.

The runs, through the steps' library functions rather than a slow kfp.local DAG: an ablation of two methods (CAM
and Grad-CAM, each classifier, CAMs, pseudo masks, segmenter, evaluation: the wsss report) and its fully supervised
upper bound (the supervised report), a ClassMix segmenter evaluated as the semi pipeline's branch, and an
incremental update's report of two registered versions.

With WSSEG_REPORT_SCREENSHOTS=<folder> the test also saves a full-page screenshot of each report there, as
docs/screenshots/ holds them; the runs are then larger (the demo's data and segmenter, some 20 minutes on two
cores), so that the screenshots show a segmenter that has learnt something.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.data import load_samples
from wsseg.steps.evaluate import evaluate
from wsseg.store import open_store
from wsseg.wsss.methods import method_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What chromium needs here: no sandbox as root, and no connection attempts to the outside, which this machine
# refuses (see the Makefile's `chromium` target).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
# The images each report must show, by a part of their alt text, and how many at least.
EXPECTED_IMAGES = {
    "wsss": {"per-class IoU chart": 1, "confusion matrix: CAMs": 1, "confusion matrix: Pseudo masks": 1,
             "confusion matrix: Segmenter": 1, ": image | CAM | pseudo mask | prediction | ground truth": 3},
    "supervised": {"per-class IoU chart": 1, "confusion matrix: Segmenter": 1,
                   ": image | prediction | ground truth": 3},
    "semi": {"per-class IoU chart": 1, "confusion matrix: Segmenter": 1, ": image | prediction | ground truth": 3},
    "ablation": {"chart of each method's mIoU": 1, "per-class IoU of each method's segmenter": 1,
                 "confusion matrix: cam": 1, "confusion matrix: gradcam": 1, "confusion matrix: upper-bound": 1,
                 ": image | CAM | pseudo mask | prediction | ground truth": 2},
    "incremental": {"per-class IoU chart": 1, "confusion matrix of the current (v1)": 1,
                    "confusion matrix of the candidate (v2)": 1, "forgetting curve": 1,
                    ": image | current (v1) | candidate (v2) | ground truth": 3},
}


def find_or_install_chromium() -> str | None:
    """Debian's chromium, installed with apt-get where it is missing and this process may (as `make chromium`)."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    return found


@pytest.fixture(scope="module")
def browser():
    chromium = find_or_install_chromium()
    if chromium is None:
        reason = "chromium is not installed and apt-get could not install it; `make chromium` installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI runs `make test`, which installs it: missing there is a broken setup
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def open_report(browser, path: Path, screenshot: Path | None = None) -> tuple[list[dict], list[str]]:
    """Each <img> of the page (its alt text and whether it decoded), and every error the page logged or raised."""
    page = browser.new_page(viewport=VIEWPORT)
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"{request.url[:80]}: {request.failure}"))
    page.goto(path.as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images, image => "
                           "({alt: image.alt, loaded: image.complete && image.naturalWidth > 0}))")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return images, problems


SCREENSHOTS = os.environ.get("WSSEG_REPORT_SCREENSHOTS")
METHODS = ("cam", "gradcam")


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory) -> tuple[Path, object, dict]:
    """The data, a segmenter trained on its ground truth (the upper bound) and the config of the runs: the tiny set
    and segmenter, or for screenshots the demo's synthetic set and the segmenter settings the demo trains with on
    the cpu preset."""
    if not SCREENSHOTS:
        config = default_config("cpu-tiny")
        config["segmenter"].update(iterations=4, validate=False)
        config["evaluate"].update(read_threads=0, overlays=3)
        return request.getfixturevalue("tiny_voc"), request.getfixturevalue("tiny_segmenter"), config
    from wsseg.data import make_synthetic_voc
    from wsseg.demo import DEMO_BUDGET
    from wsseg.steps.train_segmenter import train_segmenter

    root = tmp_path_factory.mktemp("screenshot-run")
    data = make_synthetic_voc(root / "data", train=150, val=50, seed=0, size=128)
    config = default_config("cpu")
    config["segmenter"].update(DEMO_BUDGET["cpu"]["segmenter"], validate=False)
    config["evaluate"].update(overlays=3, multi_scale=False, flip=False)
    segmenter = open_store(root / "upper-bound")
    train_segmenter(data, None, segmenter, config, ClassList())
    return data, segmenter, config


@pytest.fixture(scope="module")
def reports(trained, tmp_path_factory) -> dict[str, object]:
    """The store of each pipeline kind's report.html: an ablation of two methods (each a weakly supervised run,
    classifier to segmenter) and its upper bound, whose evaluations are the wsss and supervised reports; a semi
    branch; an incremental update."""
    from wsseg.steps.train_classifier import train_classifier
    from wsseg.wsss.ablation import UPPER_BOUND, write_ablation_table

    data, upper_bound, config = trained
    root = tmp_path_factory.mktemp("reports")
    run = open_store(root / "ablation")
    classifier = run.child("classifier")
    train_classifier(data, classifier, config, ClassList())
    for method in METHODS:
        weakly_supervised_run(data, classifier, run.child(method), method_config(config, method))
    evaluate(data, None, None, upper_bound, run.child(UPPER_BOUND).child("evaluate"), config, ClassList())
    write_ablation_table(run.uri, list(METHODS))
    semi = open_store(root / "semi")
    evaluate(data, None, None, classmix_segmenter(data, upper_bound, semi.child("train-segmenter"), config), semi,
             config, ClassList())
    return {"wsss": run.child("cam").child("evaluate"), "supervised": run.child(UPPER_BOUND).child("evaluate"),
            "semi": semi, "ablation": run.child("ablation"),
            "incremental": incremental_report(data, run.child("cam").child("train-segmenter"), upper_bound, root,
                                              config)}


def weakly_supervised_run(data: Path, classifier, run, config: dict) -> None:
    """The wsss pipeline's steps after the classifier, each into its prefix of the method's run."""
    from wsseg.steps.mine_cams import mine_cams
    from wsseg.steps.refine import refine_with_crf
    from wsseg.steps.train_segmenter import train_segmenter

    cams, pseudo_masks, segmenter = run.child("mine-cams"), run.child("refine"), run.child("train-segmenter")
    mine_cams(data, classifier, cams, config, ClassList())
    refine_with_crf(data, cams, pseudo_masks, config, ClassList())
    train_segmenter(data, pseudo_masks, segmenter, config, ClassList())
    evaluate(data, cams, pseudo_masks, segmenter, run.child("evaluate"), config, ClassList())


def classmix_segmenter(data: Path, start, out, config: dict):
    """A ClassMix segmenter on a third of the train masks, started from the segmenter `start`, as the semi
    pipeline's classmix branch starts from its baseline's."""
    from wsseg.steps.train_segmenter import train_segmenter

    settings = copy.deepcopy(config)
    settings["segmenter"].update(mode="classmix", iterations=200 if SCREENSHOTS else 2)
    settings["semi"]["labelled"] = "1/3"
    train_segmenter(data, None, out, settings, ClassList(), init_segmenter=start)
    return out


def incremental_report(data: Path, step_zero, candidate, root: Path, config: dict):
    """The update report of version 2 (all classes) grown from version 1 (all but the last): two segmenters of the
    run registered and scored on the held-out split as an incremental update registers and scores its versions."""
    from wsseg.evaluation.scoring import score_seen_classes
    from wsseg.incremental.forgetting_curve import forgetting_curve
    from wsseg.incremental.promotion import propose
    from wsseg.incremental.registry import ModelRegistry
    from wsseg.steps.incremental_update import held_out_overlays, outcome, write_reports

    classes = ClassList()
    held_out = load_samples(data, "val", classes)
    scores = {name: score_seen_classes(model, held_out, classes, len(classes) - 2, config["evaluate"])
              for name, model in (("current", step_zero), ("candidate", candidate))}
    registry = ModelRegistry(open_store(root / "registry"))
    registry.register(step_zero, classes=list(classes.names[:-1]), metrics=scores["current"], data="step 0",
                      config="-")
    registry.promote(1, reason="step 0")
    record, _ = propose(registry, candidate, scores=scores["candidate"], current_scores=scores["current"],
                        gate=config["registry"]["gate"], classes=list(classes.names), data="batch-1", config="-",
                        source="inbox batch batch-1")
    out = open_store(root / "incremental-update")
    overlays = held_out_overlays(data, registry, record, classes, config["evaluate"])
    write_reports(out, outcome(registry, "batch-1", record), forgetting_curve(registry, record["version"]), overlays)
    return out


def report_path(store) -> Path:
    return Path(store.uri.removeprefix("file://")) / "report.html"


@pytest.mark.parametrize("kind", list(EXPECTED_IMAGES))
def test_every_image_of_the_report_loads_and_the_page_logs_no_error(browser, reports, kind):
    screenshot = Path(SCREENSHOTS) / f"{kind}.png" if SCREENSHOTS else None
    images, problems = open_report(browser, report_path(reports[kind]), screenshot)
    assert problems == []
    assert images and [image["alt"] for image in images if not image["loaded"]] == []
    for alt, count in EXPECTED_IMAGES[kind].items():
        assert sum(alt in image["alt"] for image in images) >= count, alt


def test_a_broken_embedded_image_is_caught(browser, reports, tmp_path):
    page = report_path(reports["supervised"]).read_text()
    broken = tmp_path / "report.html"
    # The per-class chart's bytes replaced by others ("not a png"): the page still parses, the image cannot decode.
    broken.write_text(re.sub(r'(src="data:image/png;base64,)[^"]*(" alt="per-class)', r"\1bm90IGEgcG5n\2", page,
                             count=1))
    images, _ = open_report(browser, broken)
    assert [image["alt"] for image in images if not image["loaded"]] == ["per-class IoU chart"]
