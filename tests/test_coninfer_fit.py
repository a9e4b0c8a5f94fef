"""Tests for rslab.recipes.coninfer_fit (stand-in classifiers, prior calibration, the validation
grid search) and rslab.metrics.pixel_miou."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rslab.metrics import pixel_miou
from rslab.models.coninfer import standardize_features
from rslab.recipes.coninfer_fit import best_by_mode, fit_patch_classifier, fit_temperature, grid_search


def test_fit_patch_classifier_learns_and_pixel_miou():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    x = F.one_hot(y, 3).float() * 3 + torch.randn(600, 3, generator=g)
    model = fit_patch_classifier(x, y, 3, hidden=8, steps=150)
    assert float((model(x).argmax(1) == y).float().mean()) > 0.9
    assert model.features(x).shape == (600, 8)
    f = standardize_features(x * 10 + 5)
    assert torch.allclose(f.norm(dim=1), torch.ones(600), atol=1e-5)
    probs = torch.zeros(1, 2, 2, 2)
    probs[0, 0, :, 0] = 1
    probs[0, 1, :, 1] = 1
    lab = np.zeros((4, 4), dtype=np.int64)
    lab[:, 2:] = 1
    lab[0, 0] = 1
    miou, ious = pixel_miou(probs, lab, 2)
    assert ious.tolist() == pytest.approx([7 / 8, 8 / 9]) and miou == pytest.approx((7 / 8 + 8 / 9) / 2)



def test_fit_patch_classifier_keeps_global_rng_and_handles_one_patch():
    """Seeding the classifier's init must not reset the caller's RNG stream, and a single
    labelled patch (std undefined in the unbiased form) must give finite outputs."""
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_patch_classifier(x, torch.arange(20) % 2, 2, steps=2)
    assert torch.equal(torch.rand(3), expected)
    one = fit_patch_classifier(torch.ones(1, 4), torch.zeros(1, dtype=torch.long), 2, steps=5)
    assert torch.isfinite(one(torch.ones(2, 4))).all()


# ------------------------------------------------------------------ validation-time choices


def test_fit_temperature_recovers_the_generating_temperature():
    """Labels drawn from softmax(s / 0.1) are best explained by T = 0.1, not by an over-confident 0.01."""
    g = torch.Generator().manual_seed(0)
    s = torch.rand(20000, 6, generator=g)                      # cosine-like scores in [0, 1]
    y = torch.multinomial(torch.softmax(s / 0.1, 1), 1, generator=g).squeeze(1)
    t, nll = fit_temperature(s, y, grid=(0.01, 0.03, 0.1, 0.3, 1.0))
    assert t == 0.1
    assert nll[0.01] > nll[0.1] and nll[1.0] > nll[0.1]
    # (B, K, h, w) maps with (B, h, w) labels, ignore_index skipped
    maps = s[:64].reshape(4, 4, 4, 6).permute(0, 3, 1, 2)
    lab = y[:64].reshape(4, 4, 4).clone()
    lab[0] = 255
    t2, _ = fit_temperature(maps, lab, grid=(0.1, 1.0))
    assert t2 in (0.1, 1.0)


def test_fit_temperature_rejects_bad_inputs():
    s = torch.rand(10, 3)
    with pytest.raises(ValueError, match="scores"):
        fit_temperature(s, torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="grid"):
        fit_temperature(s, torch.zeros(10, dtype=torch.long), grid=(0.1, -1.0))
    with pytest.raises(ValueError, match="no labelled patch"):
        fit_temperature(s, torch.full((10,), 255))
    with pytest.raises(ValueError, match="labels must be in"):
        fit_temperature(s, torch.full((10,), 3))


def test_grid_search_scores_every_setting_and_picks_the_best_per_mode():
    k, h = 3, 8
    g = torch.Generator().manual_seed(0)
    lab_patch = torch.randint(0, k, (4, h, h), generator=g)
    labels = lab_patch.repeat_interleave(4, 1).repeat_interleave(4, 2).numpy()      # (4, 32, 32) pixels
    centers = torch.randn(k, 16, generator=g) * 3
    good = centers[lab_patch].permute(0, 3, 1, 2) + 0.3 * torch.randn(4, 16, h, h, generator=g)
    noise = torch.randn(4, 16, h, h, generator=g)
    logits = torch.randn(4, k, h, h, generator=g)
    logits += 1.5 * F.one_hot(lab_patch, k).permute(0, 3, 1, 2)
    prior = torch.softmax(logits, 1)
    rows = grid_search(prior, {"good": good, "noise": noise}, labels, k, temperatures=(1.0, 10.0),
                       n_iter=3, pool_images=4, top_k_init=2)
    assert len(rows) == 2 * 2 * 2
    assert all(abs(r["gain"] - (r["miou"] - r["prior_miou"])) < 1e-12 for r in rows)
    best = best_by_mode(rows)
    assert set(best) == {"reference", "paper"}
    assert all(best[m]["miou"] == max(r["miou"] for r in rows if r["mode"] == m) for m in best)
    # clustered features help more than noise (what the validation selection relies on)
    assert (max(r["miou"] for r in rows if r["features"] == "good")
            > max(r["miou"] for r in rows if r["features"] == "noise"))
    with pytest.raises(ValueError, match="share batch and grid"):
        grid_search(prior, {"bad": good[:2]}, labels, k)
    with pytest.raises(ValueError, match="unknown mode"):
        grid_search(prior, {"good": good}, labels, k, modes=("nope",))
    with pytest.raises(ValueError, match="empty"):
        grid_search(prior, {}, labels, k)
    with pytest.raises(ValueError, match="no rows"):
        best_by_mode([])
