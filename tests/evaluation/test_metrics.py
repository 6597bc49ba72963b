"""ConfusionMatrix on cases small enough to work out by hand (the working is in the comments)."""
import math

import numpy as np
import pytest

from wsseg.evaluation.metrics import ConfusionMatrix

# 3 classes (bg, 1, 2); a 2x4 image.
GROUND_TRUTH = np.array([[0, 0, 1, 1],
                         [0, 2, 2, 255]], dtype=np.uint8)
PREDICTION = np.array([[0, 1, 1, 1],
                       [0, 2, 0, 1]], dtype=np.uint8)
# The 255 pixel is skipped whatever is predicted there. Remaining (gt, pred) pairs:
# (0,0) (0,1) (1,1) (1,1) (0,0) (2,2) (2,0)
# counts: row gt 0 -> [2, 1, 0]; row gt 1 -> [0, 2, 0]; row gt 2 -> [1, 0, 1]
EXPECTED_COUNTS = [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
# IoU = TP / (gt + pred - TP):
#   bg: 2 / (3 + 3 - 2) = 1/2;  1: 2 / (2 + 3 - 2) = 2/3;  2: 1 / (2 + 1 - 1) = 1/2
# precision = TP / predicted: bg 2/3, 1: 2/3, 2: 1/1.  recall = TP / gt: bg 2/3, 1: 2/2, 2: 1/2
# pixel accuracy = (2 + 2 + 1) / 7 = 5/7;  mIoU = (1/2 + 2/3 + 1/2) / 3 = 5/9


def hand_case() -> ConfusionMatrix:
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTION, GROUND_TRUTH)
    return matrix


def test_counts_skip_ignored_ground_truth():
    assert hand_case().counts.tolist() == EXPECTED_COUNTS


def test_per_class_iou_precision_recall():
    matrix = hand_case()
    np.testing.assert_allclose(matrix.iou(), [1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(matrix.precision(), [2 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(matrix.recall(), [2 / 3, 1.0, 1 / 2])


def test_pixel_accuracy_and_miou():
    matrix = hand_case()
    assert matrix.pixel_accuracy() == pytest.approx(5 / 7)
    assert matrix.miou() == pytest.approx(5 / 9)


def test_summary_in_rounded_percent():
    summary = hand_case().summary(["background", "cat", "dog"])
    assert summary["miou"] == 55.56  # 5/9
    assert summary["pixel_accuracy"] == 71.43  # 5/7
    assert summary["per_class"]["cat"] == {"iou": 66.67, "precision": 66.67, "recall": 100.0}


def test_accumulating_images_equals_one_big_image():
    # Split the hand case into its two rows: two "images" must give the counts of the whole.
    matrix = ConfusionMatrix(3)
    for row in range(2):
        matrix.update(PREDICTION[row:row + 1], GROUND_TRUTH[row:row + 1])
    assert matrix.counts.tolist() == EXPECTED_COUNTS


def test_absent_class_is_left_out_of_the_mean():
    # 4 classes; class 3 is neither in ground truth nor predicted -> IoU NaN, mean over 3 classes stays 5/9.
    matrix = ConfusionMatrix(4)
    matrix.update(PREDICTION, GROUND_TRUTH)
    assert math.isnan(matrix.iou()[3])
    assert matrix.miou() == pytest.approx(5 / 9)
    assert matrix.summary(["background", "cat", "dog", "cow"])["per_class"]["cow"]["iou"] is None


def test_class_only_predicted_counts_with_zero_iou():
    # gt all bg, prediction says class 1 on one of two pixels: bg IoU 1/2, class 1 IoU 0/1 = 0 -> mIoU 1/4.
    matrix = ConfusionMatrix(2)
    matrix.update(np.array([[0, 1]]), np.array([[0, 0]]))
    np.testing.assert_allclose(matrix.iou(), [0.5, 0.0])
    assert matrix.miou() == pytest.approx(0.25)


def test_empty_matrix_gives_nan():
    matrix = ConfusionMatrix(3)
    assert math.isnan(matrix.miou())
    assert math.isnan(matrix.pixel_accuracy())


@pytest.mark.parametrize("stray", [3, 255])
def test_stray_prediction_value_raises(stray):
    prediction = PREDICTION.copy()
    prediction[0, 0] = stray
    with pytest.raises(ValueError, match="prediction holds values outside"):
        ConfusionMatrix(3).update(prediction, GROUND_TRUTH)


def test_prediction_under_ignored_ground_truth_is_not_checked():
    prediction = PREDICTION.copy()
    prediction[1, 3] = 255  # out of range for 3 classes, but gt is 255 here, so the pixel never reaches the count
    matrix = ConfusionMatrix(3)
    matrix.update(prediction, GROUND_TRUTH)
    assert matrix.counts.tolist() == EXPECTED_COUNTS


def test_stray_ground_truth_value_raises():
    with pytest.raises(ValueError, match="ground truth holds values outside"):
        ConfusionMatrix(3).update(PREDICTION, np.full_like(GROUND_TRUTH, 7))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(PREDICTION[:, :3], GROUND_TRUTH)
