"""Report rendering: the cross-run summary table, colours and overlay strips."""
import io

import numpy as np
from PIL import Image

from wsseg.evaluation.report import (
    Overlay,
    cam_heatmap,
    colorize,
    overlay_strip,
    render_html,
    render_markdown,
    render_summary_table,
)


def test_summary_table_shows_the_segmenter_as_a_percentage_of_the_upper_bound():
    wsss = {"cam_miou": 48.0, "pseudo_mask_miou": 66.5, "segmenter_miou": 63.5}
    table = render_summary_table([("wsss", wsss), ("no segmenter", {"cam_miou": 40.0})],
                                 upper_bound={"segmenter_miou": 78.0})
    lines = table.splitlines()
    assert lines[0] == ("| run | CAM mIoU | pseudo-mask mIoU | segmentation mIoU | upper bound mIoU | "
                        "% of upper bound |")
    # 63.5 / 78.0 = 81.41 %
    assert lines[2] == "| wsss | 48.00 | 66.50 | 63.50 | 78.00 | 81.41 |"
    assert lines[3] == "| no segmenter | 40.00 | - | - | 78.00 | - |"


def test_summary_table_without_upper_bound_leaves_the_ratio_out():
    line = render_summary_table([("wsss", {"segmenter_miou": 60.0})]).splitlines()[2]
    assert line == "| wsss | - | - | 60.00 | - | - |"


def test_colorize_uses_the_voc_palette():
    colours = colorize(np.array([[0, 1, 15, 255]], np.uint8))
    assert colours.tolist() == [[[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]]


def test_heatmap_runs_from_blue_to_red():
    image = np.zeros((1, 2, 3), np.uint8)
    heat = cam_heatmap(image, np.array([[0.0, 1.0]]))
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[0, 1, 0] > heat[0, 1, 2]


def test_overlay_strip_puts_panels_side_by_side():
    panels = [np.zeros((3, 5, 3), np.uint8), np.full((3, 5, 3), 9, np.uint8)]
    with Image.open(io.BytesIO(overlay_strip(panels))) as strip:
        assert strip.size == (5 + 4 + 5, 3)
        assert np.array(strip)[0, 6].tolist() == [255, 255, 255]


def test_html_escapes_names_and_embeds_overlays():
    metrics = {"headline": dict.fromkeys(("cam_miou", "cam_best_threshold", "pseudo_mask_miou",
                                          "pseudo_mask_confident_miou", "uncertain_fraction", "segmenter_miou")),
               "counts": {}, "upper_bound_miou": 80.0}
    overlay = Overlay("<id>", ("image", "CAM"), b"\x89PNG")
    page = render_html(metrics, [overlay])
    assert "&lt;id&gt;" in page and "<id>" not in page
    assert "data:image/png;base64,iVBORw==" in page
    assert "fully supervised upper bound mIoU</td><td>80.00" in page


def test_the_segmenter_section_says_it_was_predicted_from_the_image_alone_when_it_was():
    headline = dict.fromkeys(("cam_miou", "cam_best_threshold", "pseudo_mask_miou", "pseudo_mask_confident_miou",
                              "uncertain_fraction", "segmenter_miou"))
    segmenter = {"multi_scale": False, "flip": False, "scales": [1.0], "miou": 50.0, "pixel_accuracy": 90.0,
                 "per_class": {"background": {"iou": 80.0, "precision": 90.0, "recall": 88.0}}}
    report = render_markdown({"headline": headline, "counts": {}, "segmenter": segmenter}, [])
    assert "Predicted at ×1 of the model's input scale." in report


def test_the_page_draws_the_per_class_chart_and_a_heat_map_of_the_stored_counts_and_older_metrics_still_render():
    headline = dict.fromkeys(("cam_miou", "cam_best_threshold", "pseudo_mask_miou", "pseudo_mask_confident_miou",
                              "uncertain_fraction", "segmenter_miou"))
    segmenter = {"multi_scale": False, "flip": False, "scales": [1.0], "miou": 50.0, "pixel_accuracy": 90.0,
                 "per_class": {"background": {"iou": 80.0, "precision": 90.0, "recall": 88.0},
                               "cat": {"iou": 20.0, "precision": 30.0, "recall": None}}}
    metrics = {"headline": {**headline, "segmenter_miou": 50.0}, "counts": {}, "segmenter": segmenter}
    confusion = {"segmenter": {"classes": ["background", "cat"], "counts": [[9, 1], [0, 0]]}}
    page = render_html({**metrics, "confusion_matrices": confusion}, [])
    assert 'alt="per-class IoU chart"' in page and 'alt="confusion matrix: Segmenter (val)"' in page
    # A metrics.json from before evaluate kept its counts: the chart, no heat map.
    older = render_html(metrics, [])
    assert 'alt="per-class IoU chart"' in older and "confusion matrix" not in older
