"""SAR and paired augmentations: speckle statistics, NaN handling, co-registration kept."""

from __future__ import annotations

import pytest
import torch

from rslab.data.augment import (
    SARViewAugment,
    jitter_db_offset,
    local_mean,
    paired_dihedral,
    paired_random_crop,
    resample_speckle,
)
from rslab.data.sar import db_to_linear


def test_resample_speckle_has_gamma_statistics_on_a_homogeneous_area():
    torch.manual_seed(0)
    sar = torch.full((2, 2, 128, 128), -10.0)  # constant 0.1 linear power
    for looks in (1.0, 4.0):
        power = db_to_linear(resample_speckle(sar, looks=looks, window=3))
        assert power.mean().item() == pytest.approx(0.1, rel=0.02)  # unit-mean speckle
        cv2 = (power.var() / power.mean() ** 2).item()
        assert cv2 == pytest.approx(1.0 / looks, rel=0.05)  # Gamma(L, 1/L): variance 1/L


def test_resample_speckle_keeps_nan_and_shape():
    torch.manual_seed(0)
    sar = torch.full((2, 16, 16), -15.0)
    sar[:, :4, :4] = float("nan")
    out = resample_speckle(sar, looks=(2.0, 6.0))
    assert out.shape == (2, 16, 16)
    assert torch.isnan(out[:, :4, :4]).all()
    assert torch.isfinite(out[:, 4:]).all() and torch.isfinite(out[:, :, 4:]).all()


def test_local_mean_ignores_invalid_pixels():
    x = torch.tensor([[[[1.0, 100.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]])
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[..., 0, 1] = False
    out = local_mean(x, 3, valid)
    torch.testing.assert_close(out, torch.ones_like(x))
    with pytest.raises(ValueError, match="odd"):
        local_mean(x, 2)


def test_jitter_db_offset_is_one_constant_per_image():
    torch.manual_seed(0)
    sar = torch.randn(8, 2, 8, 8)
    diff = jitter_db_offset(sar, 2.0) - sar
    per_image = diff.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert diff.abs().max() <= 2.0 and diff.abs().max() > 0
    diff_c = (jitter_db_offset(sar, 2.0, per_channel=True) - sar).flatten(2)
    torch.testing.assert_close(diff_c, diff_c[..., :1].expand_as(diff_c))


def test_paired_dihedral_applies_the_same_transform_everywhere():
    torch.manual_seed(0)
    optical = torch.randn(16, 4, 8, 8)
    sar = optical[:, :2] * 3.0 - 1.0  # a function of optical, pixel by pixel
    labels = (optical[:, 0] > 0).long()
    o, s, l = paired_dihedral(optical, sar, labels)
    torch.testing.assert_close(s, o[:, :2] * 3.0 - 1.0)
    assert torch.equal(l, (o[:, 0] > 0).long())
    # each output is one of the 8 dihedral images of its input, and not all are the identity
    changed = 0
    for i in range(16):
        cands = [torch.rot90(t, k, (-2, -1)) for t in (optical[i], optical[i].flip(-1)) for k in range(4)]
        assert any(torch.equal(o[i], c) for c in cands)
        changed += not torch.equal(o[i], optical[i])
    assert changed > 0


def test_paired_random_crop_shares_the_window():
    torch.manual_seed(0)
    optical = torch.randn(6, 4, 16, 16)
    sar = optical[:, 1:3] + 5.0
    o, s = paired_random_crop(optical, sar, size=8)
    assert o.shape == (6, 4, 8, 8) and s.shape == (6, 2, 8, 8)
    torch.testing.assert_close(s, o[:, 1:3] + 5.0)
    with pytest.raises(ValueError, match="crop size"):
        paired_random_crop(optical, size=32)


def test_paired_ops_reject_misregistered_inputs():
    with pytest.raises(ValueError, match="share"):
        paired_dihedral(torch.zeros(2, 4, 8, 8), torch.zeros(2, 2, 8, 6))
    with pytest.raises(ValueError, match="square"):
        paired_dihedral(torch.zeros(2, 4, 8, 6))
    with pytest.raises(ValueError, match="2 channels"):
        resample_speckle(torch.zeros(1, 3, 8, 8))


def test_sar_view_augment_view_a_stays_registered_with_optical():
    torch.manual_seed(0)
    optical = torch.rand(4, 4, 32, 32)
    sar = optical[:, :2] * 10 - 20
    aug = SARViewAugment(crop=16, looks=None, max_offset_db=0.0)
    o, a, b = aug(optical, sar)
    assert o.shape == (4, 4, 16, 16) and a.shape == b.shape == (4, 2, 16, 16)
    torch.testing.assert_close(a, o[:, :2] * 10 - 20)
    # with radiometric augmentation on, the two views differ
    o, a, b = SARViewAugment(crop=None)(optical, sar)
    assert a.shape == (4, 2, 32, 32) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="share"):
        aug(optical, sar[..., :16])
