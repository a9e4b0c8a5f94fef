"""rslab.metrics against small cases whose expected numbers are worked out by hand."""

import numpy as np
import pytest
import torch

from rslab.metrics import (
    ReferringMeter,
    SegmentationMeter,
    binary_iou,
    confusion_matrix,
    intersection_union,
    iou_from_confusion,
    iou_per_class,
    mean_iou,
    oiou,
    precision_at,
    recall_at_k,
)

# 2x3 case, 3 classes, one ignored pixel (255).
TARGET = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])
# Valid pixels (true -> pred): 0->0, 0->1, 1->1, 1->1, 2->2.
CM = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]])
# IoU_0 = TP 1 / (TP 1 + FP 0 + FN 1) = 1/2; IoU_1 = 2 / (2 + 1 + 0) = 2/3; IoU_2 = 1/1.
IOU = np.array([0.5, 2 / 3, 1.0])
MIOU = (0.5 + 2 / 3 + 1.0) / 3  # 0.7222...


def test_confusion_matrix_hand_case():
    np.testing.assert_array_equal(confusion_matrix(PRED, TARGET, 3), CM)


def test_bool_masks_are_classes_0_and_1():
    t = np.array([True, True, False, False])
    p = np.array([True, False, False, True])
    np.testing.assert_array_equal(confusion_matrix(p, t, 2), [[1, 1], [1, 1]])


def test_confusion_matrix_ignore_none_counts_everything():
    t = np.array([0, 1, 1])
    p = np.array([1, 1, 0])
    np.testing.assert_array_equal(confusion_matrix(p, t, 2, ignore_index=None), [[0, 1], [1, 1]])


def test_iou_and_miou_hand_case():
    np.testing.assert_allclose(iou_per_class(PRED, TARGET, 3), IOU)
    assert mean_iou(PRED, TARGET, 3) == pytest.approx(0.7222222, abs=1e-6)
    assert mean_iou(PRED, TARGET, 3) == pytest.approx(MIOU)


def test_absent_class_is_nan_and_excluded_from_mean():
    ious = iou_per_class(PRED, TARGET, 4)  # class 3 appears nowhere
    assert np.isnan(ious[3])
    np.testing.assert_allclose(ious[:3], IOU)
    assert mean_iou(PRED, TARGET, 4) == pytest.approx(MIOU)


def test_class_predicted_but_absent_from_truth_scores_zero():
    pred = PRED.copy()
    pred[0, 0] = 3  # a true-0 pixel predicted as 3
    ious = iou_per_class(pred, TARGET, 4)
    # class 3: TP 0, FP 1 -> 0. class 0 now: TP 0, FN 2 -> 0.
    assert ious[3] == 0.0
    assert ious[0] == 0.0
    assert mean_iou(pred, TARGET, 4) == pytest.approx((0 + 2 / 3 + 1 + 0) / 4)


def test_torch_inputs_match_numpy():
    assert mean_iou(torch.from_numpy(PRED), torch.from_numpy(TARGET), 3) == pytest.approx(MIOU)


def test_out_of_range_pred_under_ignored_pixel_is_fine():
    pred = PRED.copy()
    pred[1, 2] = 99  # at the ignored position
    np.testing.assert_array_equal(confusion_matrix(pred, TARGET, 3), CM)


def test_segmentation_meter_streams_to_same_result():
    meter = SegmentationMeter(3, class_names=("a", "b", "c"))
    meter.update(PRED[:1], TARGET[:1])
    meter.update(torch.from_numpy(PRED[1:]), torch.from_numpy(TARGET[1:]))
    out = meter.compute()
    np.testing.assert_array_equal(meter.cm, CM)
    assert out["miou"] == pytest.approx(MIOU)
    assert out["pixel_acc"] == pytest.approx(4 / 5)
    assert out["mean_acc"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert out["n_pixels"] == 5
    assert out["iou_per_class"]["b"] == pytest.approx(2 / 3)
    meter.reset()
    assert meter.cm.sum() == 0


def test_iou_from_confusion_requires_square():
    with pytest.raises(ValueError, match="square"):
        iou_from_confusion(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "pred, target, num_classes, match",
    [
        (np.zeros((2, 2), int), np.zeros((2, 3), int), 2, "shape"),
        (np.zeros((2, 2), int), np.array([[0, 5], [1, 0]]), 3, r"target has class ids \[5\]"),
        (np.array([[0, -1], [1, 0]]), np.zeros((2, 2), int), 3, r"pred has class ids \[-1\]"),
        (np.zeros((2, 2), int), np.zeros((2, 2), int), -1, "positive integer"),
        (np.zeros((2, 2), int), np.zeros((2, 2), int), 0, "positive integer"),
        (np.full((2, 2), 0.3), np.zeros((2, 2), int), 2, "non-integer"),
    ],
)
def test_confusion_matrix_validation(pred, target, num_classes, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, target, num_classes)


# Referring: three expressions, masks as 1x6 strips.
GT = np.array([[[1, 1, 1, 1, 0, 0]], [[1, 1, 0, 0, 0, 0]], [[1, 1, 1, 1, 1, 0]]], dtype=bool)
PR = np.array([[[1, 1, 0, 0, 0, 0]], [[0, 1, 1, 0, 0, 0]], [[1, 1, 1, 1, 1, 1]]], dtype=bool)
# I = (2, 1, 5), U = (4, 3, 6), IoU = (1/2, 1/3, 5/6).


def test_binary_iou_and_intersection_union():
    inter, union = intersection_union(PR, GT)
    np.testing.assert_array_equal(inter, [2, 1, 5])
    np.testing.assert_array_equal(union, [4, 3, 6])
    np.testing.assert_allclose(binary_iou(PR, GT), [1 / 2, 1 / 3, 5 / 6])
    assert binary_iou(PR[0], GT[0]) == pytest.approx(0.5)
    assert binary_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # nothing to find, nothing found


def test_oiou_and_precision_at():
    assert oiou([2, 1, 5], [4, 3, 6]) == pytest.approx(8 / 13)
    pr = precision_at([1 / 2, 1 / 3, 5 / 6])
    assert pr == pytest.approx({0.5: 2 / 3, 0.6: 1 / 3, 0.7: 1 / 3, 0.8: 1 / 3, 0.9: 0.0})


def test_referring_meter_hand_case():
    meter = ReferringMeter()
    meter.update(PR[0], GT[0])  # single (H, W) mask
    meter.update(torch.from_numpy(PR[1:]), torch.from_numpy(GT[1:]))  # a batch
    out = meter.compute()
    assert out["miou"] == pytest.approx((1 / 2 + 1 / 3 + 5 / 6) / 3)  # 0.5556
    assert out["oiou"] == pytest.approx(8 / 13)  # 0.6154: oIoU favours the big object
    assert out["pr50"] == pytest.approx(2 / 3)
    assert out["pr70"] == pytest.approx(1 / 3)
    assert out["pr90"] == 0.0
    assert out["n"] == 3


def test_referring_validation():
    with pytest.raises(ValueError, match="binary"):
        binary_iou(np.full((2, 2), 0.7), np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        binary_iou(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="before any update"):
        ReferringMeter().compute()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        precision_at([0.5, 1.5])
    with pytest.raises(ValueError, match="intersection"):
        oiou([3], [2])


def test_recall_at_k_hand_case():
    sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.5, 0.6], [0.4, 0.4, 0.1]])
    gt = np.array([0, 1, 0])
    # ranks: q0 -> 0; q1 -> 1 (0.6 beats 0.5); q2 -> 1 (tie with item 1 counts against it)
    assert recall_at_k(sim, gt, k=(1, 2)) == pytest.approx({1: 1 / 3, 2: 1.0})
    assert recall_at_k(torch.from_numpy(sim), torch.from_numpy(gt), k=1) == pytest.approx({1: 1 / 3})


def test_recall_collapsed_scores_get_no_credit():
    sim = np.ones((4, 4))
    assert recall_at_k(sim, np.arange(4), k=(1, 3, 4)) == {1: 0.0, 3: 0.0, 4: 1.0}


def test_recall_validation():
    with pytest.raises(ValueError, match="one per query"):
        recall_at_k(np.eye(3), np.arange(2))
    with pytest.raises(ValueError, match="lie in"):
        recall_at_k(np.eye(3), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(np.eye(3), np.arange(3), k=(0,))
