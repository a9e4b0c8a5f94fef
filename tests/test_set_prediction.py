"""Hungarian set loss: hand-checkable costs, the obvious matching, no-object supervision."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rslab.losses.set_prediction import SetCriterion, SetCriterionWeights, bce_cost, dice_cost, point_sample


def _two_segments(h=16, w=16):
    a = torch.zeros(h, w)
    a[:, : w // 2] = 1  # left half
    return torch.stack([a, 1 - a])  # segment 0 = left, segment 1 = right


def test_dice_and_bce_costs_by_hand():
    logits = torch.tensor([[20.0, 20.0, -20.0, -20.0]])  # predicts the first two points
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    d = dice_cost(logits, targets)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6)  # perfect overlap
    assert d[0, 1] == pytest.approx(1 - 1 / 5, abs=1e-6)  # (2*0 + 1) / (2 + 2 + 1)
    b = bce_cost(logits, targets)
    assert b[0, 0] == pytest.approx(0.0, abs=1e-6) and b[0, 1] == pytest.approx(20.0, abs=1e-3)


def test_point_sample_reads_pixel_centres():
    m = torch.arange(4.0).view(1, 1, 2, 2)
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])  # (x, y)
    np.testing.assert_allclose(point_sample(m, coords)[0, 0].numpy(), [0, 1, 2, 3], atol=1e-6)


def test_hungarian_matching_picks_the_obvious_assignment():
    torch.manual_seed(0)
    seg = _two_segments()
    masks = torch.full((1, 3, 16, 16), -10.0)
    masks[0, 2] = seg[0] * 20 - 10  # query 2 draws the left half
    masks[0, 0] = seg[1] * 20 - 10  # query 0 draws the right half
    cls = torch.full((1, 3, 3), -5.0)
    cls[0, 2, 0] = 5.0  # query 2 says class 0
    cls[0, 0, 1] = 5.0  # query 0 says class 1
    cls[0, 1, 2] = 5.0  # query 1 says no-object
    targets = [{"labels": torch.tensor([0, 1]), "masks": seg}]
    rows, cols = SetCriterion(num_points=256).match(cls, masks, targets)[0]
    assert dict(zip(rows.tolist(), cols.tolist())) == {2: 0, 0: 1}


def test_perfect_prediction_has_low_loss_and_a_wrong_one_high():
    torch.manual_seed(0)
    seg = _two_segments()
    targets = [{"labels": torch.tensor([0, 1]), "masks": seg}]
    good_m = torch.stack([seg[0], seg[1], torch.zeros(16, 16)]) * 10 - 5
    good_c = torch.tensor([[9.0, -9, -9], [-9, 9, -9], [-9, -9, 9]])
    crit = SetCriterion(num_points=256)
    good, _ = crit(good_c[None], good_m[None], targets)
    bad, _ = crit(torch.zeros(1, 3, 3), torch.zeros(1, 3, 16, 16), targets)
    # point losses sample uncertain (boundary) points, where bilinear targets are soft, so even a
    # perfect mask keeps some BCE; the gap to an uninformed prediction is what must be large
    assert good.item() < bad.item() / 3
    _, logs = crit(good_c[None], good_m[None], targets)
    assert logs["loss_cls"] < 1e-3 and logs["loss_dice"] < 0.2


def test_no_object_only_when_there_is_no_segment():
    """With no ground truth every query learns "no object": loss = w_cls * mean CE(no-object)."""
    logits = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]]])
    crit = SetCriterion(SetCriterionWeights(cls=2.0), num_points=64)
    loss, logs = crit(logits, torch.zeros(1, 2, 8, 8),
                      [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8)}])
    expected = F.cross_entropy(logits[0], torch.tensor([2, 2]))
    assert logs["loss_cls"] == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(2.0 * expected.item(), rel=1e-5)
    assert logs["loss_mask"] == 0.0 and logs["loss_dice"] == 0.0


def test_no_object_weight_downweights_unmatched_queries():
    """One matched query (class 0) and one unmatched: weighted CE = (ce0 + w * ce1) / (1 + w)."""
    torch.manual_seed(0)
    seg = _two_segments()[:1]
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # K = 1 class + no-object
    masks = torch.stack([seg[0] * 20 - 10, torch.full((16, 16), -10.0)])[None]
    crit = SetCriterion(SetCriterionWeights(no_object=0.1), num_points=64)
    _, logs = crit(logits, masks, [{"labels": torch.tensor([0]), "masks": seg}])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = math.log(2)
    assert logs["loss_cls"] == pytest.approx((ce0 + 0.1 * ce1) / 1.1, rel=1e-5)


def test_bad_inputs_raise():
    crit = SetCriterion(num_points=16)
    with pytest.raises(ValueError, match="target labels"):
        crit(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4, 4),
             [{"labels": torch.tensor([2]), "masks": torch.ones(1, 4, 4)}])
    with pytest.raises(ValueError, match="same B, Q"):
        crit(torch.zeros(1, 2, 3), torch.zeros(1, 3, 4, 4),
             [{"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4)}])
    with pytest.raises(ValueError, match="targets for a batch"):
        crit(torch.zeros(2, 2, 3), torch.zeros(2, 2, 4, 4), [])
    with pytest.raises(ValueError, match="num_points"):
        SetCriterion(num_points=0)


def test_batched_matching_handles_images_with_different_segment_counts():
    torch.manual_seed(0)
    seg = _two_segments()
    masks = torch.full((3, 3, 16, 16), -10.0)
    masks[0, 2], masks[0, 0] = seg[0] * 20 - 10, seg[1] * 20 - 10  # image 0: two segments
    masks[2, 1] = seg[1] * 20 - 10  # image 2: one segment (the right half), drawn by query 1
    cls = torch.zeros(3, 3, 3)
    targets = [{"labels": torch.tensor([0, 1]), "masks": seg},
               {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16)},  # nothing
               {"labels": torch.tensor([1]), "masks": seg[1:]}]
    out = SetCriterion(num_points=256).match(cls, masks, targets)
    assert dict(zip(*[x.tolist() for x in out[0]])) == {2: 0, 0: 1}
    assert len(out[1][0]) == 0 and len(out[1][1]) == 0
    assert dict(zip(*[x.tolist() for x in out[2]])) == {1: 0}
    # the same image alone gets the same assignment as inside the batch
    alone = SetCriterion(num_points=256).match(cls[2:], masks[2:], targets[2:])[0]
    assert dict(zip(*[x.tolist() for x in alone])) == {1: 0}
