"""VOC's instance protocol: AP per class over predictions ranked by score, a prediction a true positive when its best
instance reaches the IoU threshold and is not taken yet; mAP over the classes with instances."""
import numpy as np
import pytest

from wsseg.classes import IGNORE_INDEX
from wsseg.evaluation.instance_metrics import (
    InstanceAveragePrecision,
    average_precision,
    greedy_matches,
    ground_truth_instances,
)

NAMES = ["background", "cat", "dog"]


def box(top: int, left: int, height: int, width: int, shape=(20, 30)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + height, left:left + width] = True
    return mask


def test_a_ranking_scores_the_area_under_its_precision_envelope():
    # hit, miss, hit of two instances: precision 1 to recall 0.5, then 2/3 to recall 1
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(np.array([False, True]), 1) == pytest.approx(0.5)
    assert average_precision(np.array([], bool), 3) == 0.0


def test_a_second_detection_of_one_object_is_a_false_positive():
    ious = np.array([[0.9, 0.0], [0.8, 0.1], [0.2, 0.6]])
    assert greedy_matches(ious, 0.5) == [True, False, True]
    assert greedy_matches(ious, 0.7) == [True, False, False]


def test_thresholds_05_and_07_and_the_mean_over_classes_with_instances():
    first, second, dog = box(2, 2, 6, 6), box(2, 15, 6, 6), box(12, 2, 6, 10)
    partly_second = box(2, 15, 6, 4) | box(9, 15, 1, 2)  # IoU 24 / 38 = 0.63 with `second`
    scores = InstanceAveragePrecision(len(NAMES))
    scores.add([(1, 0.9, first), (1, 0.8, box(12, 20, 3, 3)), (1, 0.7, partly_second), (2, 0.6, dog)],
               [(1, first), (1, second), (2, dog)], np.zeros(first.shape, bool))
    summary = scores.summary(NAMES)
    assert summary["per_class"]["cat"]["ap50"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3), abs=0.01)
    assert summary["per_class"]["cat"]["ap70"] == pytest.approx(50.0)
    assert summary["per_class"]["dog"]["ap50"] == summary["per_class"]["dog"]["ap70"] == 100.0
    assert summary["map50"] == pytest.approx((83.33 + 100) / 2, abs=0.01)
    assert summary["instances"] == 3 and summary["predictions"] == 4


def test_a_class_predicted_but_never_present_is_left_out_of_the_mean():
    scores = InstanceAveragePrecision(len(NAMES))
    scores.add([(1, 0.9, box(2, 2, 6, 6)), (2, 0.5, box(12, 2, 4, 4))], [(1, box(2, 2, 6, 6))],
               np.zeros((20, 30), bool))
    summary = scores.summary(NAMES)
    assert summary["per_class"]["dog"]["ap50"] is None and summary["map50"] == 100.0


def test_predictions_rank_across_images_by_score():
    scores = InstanceAveragePrecision(len(NAMES))
    void = np.zeros((20, 30), bool)
    scores.add([(1, 0.2, box(2, 2, 6, 6))], [(1, box(2, 2, 6, 6))], void)
    scores.add([(1, 0.9, box(10, 10, 3, 3))], [(1, box(2, 2, 6, 6))], void)
    # miss (0.9) before hit (0.2): precision 1/2 at recall 1/2
    assert scores.summary(NAMES)["map50"] == pytest.approx(25.0)


def test_void_pixels_count_in_no_iou():
    objects = np.zeros((20, 30), np.uint8)
    objects[4:10, 4:10] = 1
    objects[3, 3:11] = IGNORE_INDEX  # VOC's border band
    classes = np.where(objects == 1, 2, objects).astype(np.uint8)
    truth, void = ground_truth_instances(objects, classes)
    assert [class_index for class_index, _ in truth] == [2]
    scores = InstanceAveragePrecision(len(NAMES))
    scores.add([(2, 1.0, box(3, 4, 7, 6))], truth, void)  # the object and its border row
    assert scores.summary(NAMES)["per_class"]["dog"]["ap70"] == 100.0
