"""Contrastive losses: hand-computed InfoNCE values and the L_img combination."""

from __future__ import annotations

import math

import pytest
import torch

from rslab.losses.contrastive import (
    ImageAlignmentLoss,
    cross_modal_alignment_loss,
    info_nce,
    intra_sar_contrastive_loss,
    locked_text_loss,
)


def test_info_nce_hand_computed():
    # two orthogonal unit pairs, temperature 1: logits [[1, 0], [0, 1]]
    a = torch.eye(2)
    expected = math.log(1 + math.exp(-1))  # -log(e / (e + 1))
    assert info_nce(a, a, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)
    # temperature 0.5 doubles the logits
    assert info_nce(a, a, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    # inputs are normalised inside: scaling a row changes nothing
    assert info_nce(3 * a, a, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)


def test_info_nce_asymmetric_case_hand_computed():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # a->b: row 0 logits [1, 0] target 0; row 1 logits [1, 0] target 1
    ab = 0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1)))
    # b->a: logits.T rows [1, 1] (target 0) and [0, 0] (target 1): log 2 each
    ba = math.log(2)
    assert info_nce(a, b, 1.0, symmetric=False).item() == pytest.approx(ab, abs=1e-6)
    assert info_nce(a, b, 1.0).item() == pytest.approx(0.5 * (ab + ba), abs=1e-6)


def test_info_nce_limits():
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    assert info_nce(x, x, temperature=0.01).item() < 1e-3  # perfect pairs, sharp temperature
    y = torch.randn(16, 32)
    assert abs(info_nce(x, y, temperature=10.0).item() - math.log(16)) < 0.05  # uninformative


def test_duplicate_texts_count_as_positives():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    plain = locked_text_loss(img, txt, 0.05)
    aware = locked_text_loss(img, txt, 0.05, texts=["water", "water", "forest"])
    assert aware.item() < 1e-3 < plain.item()  # plain punishes the identical twin caption (~log 2)
    # plain: rows/columns 0 and 1 each lose log 2 to their twin, row/column 2 is perfect
    assert plain.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-3)


def test_cma_does_not_move_the_optical_side():
    f_sar = torch.randn(8, 16, requires_grad=True)
    f_opt = torch.randn(8, 16, requires_grad=True)
    cross_modal_alignment_loss(f_sar, f_opt).backward()
    assert f_sar.grad is not None and f_sar.grad.abs().sum() > 0
    assert f_opt.grad is None


def test_image_alignment_loss_is_the_weighted_sum():
    torch.manual_seed(0)
    a, b, o = torch.randn(3, 8, 16).unbind(0)
    loss = ImageAlignmentLoss(lambda_cl=0.3, lambda_cma=2.0, temperature=0.2)
    total = loss(a, b, o)
    expected = 0.3 * intra_sar_contrastive_loss(a, b, 0.2) + 2.0 * cross_modal_alignment_loss(a, o, 0.2)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(loss.last) == {"loss", "loss_cl", "loss_cma"}
    # ablations need only the inputs they use
    assert ImageAlignmentLoss(lambda_cl=0.0)(a, None, o).item() == pytest.approx(
        cross_modal_alignment_loss(a, o, 0.1).item(), rel=1e-6)
    assert ImageAlignmentLoss(lambda_cma=0.0)(a, b, None).item() == pytest.approx(
        intra_sar_contrastive_loss(a, b, 0.1).item(), rel=1e-6)


def test_loss_input_validation():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="must match"):
        info_nce(x, torch.randn(4, 9))
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(x[:1], x[:1])
    with pytest.raises(ValueError, match="NaN"):
        info_nce(x, torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="not both 0"):
        ImageAlignmentLoss(0.0, 0.0)
    with pytest.raises(ValueError, match="second SAR view"):
        ImageAlignmentLoss()(x, None, x)
    with pytest.raises(ValueError, match="optical feature"):
        ImageAlignmentLoss()(x, x, None)
    with pytest.raises(ValueError, match="3 texts"):
        locked_text_loss(x, x, 0.1, texts=["a", "b", "c"])


def test_info_nce_with_bank_hand_computed():
    # 3 orthogonal bank keys, temperature 1; query 0 equals key 0: logits (1, 0, 0) over the bank
    bank = torch.eye(3)
    q = bank[[0]].clone()
    one_way = math.log(1 + 2 * math.exp(-1))  # -log(e / (e + 2))
    assert info_nce(q, bank, 1.0, symmetric=False, index=torch.tensor([0])).item() == pytest.approx(one_way, abs=1e-6)
    # symmetric: key->query over a batch of one is always right (loss 0), so the mean halves
    assert info_nce(q, bank, 1.0, index=torch.tensor([0])).item() == pytest.approx(0.5 * one_way, abs=1e-6)
    # with the bank equal to the batch it is exactly the in-batch InfoNCE
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    assert info_nce(a, b, 0.3, index=torch.arange(5)).item() == pytest.approx(info_nce(a, b, 0.3).item(), abs=1e-5)
    # more negatives can only raise the one-way loss of the same positive
    big = torch.cat([b, torch.randn(20, 8)])
    assert (info_nce(a, big, 0.3, symmetric=False, index=torch.arange(5))
            > info_nce(a, b, 0.3, symmetric=False, index=torch.arange(5)))


def test_bank_loss_moves_only_the_sar_side_and_validates():
    f_sar = torch.randn(4, 8, requires_grad=True)
    bank = torch.randn(10, 8, requires_grad=True)
    cross_modal_alignment_loss(f_sar, bank, index=torch.tensor([1, 3, 5, 7])).backward()
    assert f_sar.grad is not None and bank.grad is None
    with pytest.raises(ValueError, match="distinct"):
        info_nce(f_sar, bank, index=torch.tensor([1, 1, 5, 7]))
    with pytest.raises(ValueError, match="lie in"):
        info_nce(f_sar, bank, index=torch.tensor([1, 2, 5, 10]))
    with pytest.raises(ValueError, match="one bank row per query"):
        info_nce(f_sar, bank, index=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="same D"):
        info_nce(f_sar, torch.randn(10, 6), index=torch.tensor([1, 2, 3, 4]))
    loss = ImageAlignmentLoss(0.0, 1.0, temperature=0.5)
    total = loss(f_sar, None, None, optical_bank=bank, index=torch.tensor([1, 3, 5, 7]))
    assert total.item() == pytest.approx(
        cross_modal_alignment_loss(f_sar, bank, 0.5, index=torch.tensor([1, 3, 5, 7])).item())
    with pytest.raises(ValueError, match="together"):
        loss(f_sar, None, None, optical_bank=bank)
