"""Tests for rslab.models.coninfer (ConInfer joint estimation, tiling, bad inputs)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rslab.models.coninfer import (
    MODES,
    ConInferConfig,
    coninfer,
    consensus,
    gaussian_loglik,
    init_means,
    m_step,
    objective,
    prior_from_logits,
    refine_maps,
    refine_scene,
    stitch_tiles,
    straightforward_reference,
    tile_scene,
)


def clusters(n=2000, d=512, k=5, noise=3.0, prior_boost=1.0, seed=0):
    """Unit-norm Gaussian clusters and a noisy prior (correct class boosted by prior_boost)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    x = F.normalize(centers[y] + noise * torch.randn(n, d, generator=g), dim=1)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), y] += prior_boost
    return torch.softmax(2.0 * logits, dim=1), x, y


def accuracy(probs, y):
    return float((probs.argmax(1) == y).float().mean())


# ---------------------------------------------------------------- building blocks, by hand
def test_loglik_matches_hand_computation():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    mu = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    var = torch.tensor([0.5, 2.0])
    # l_ik = -1/2 sum_d (x-mu)^2/var
    expected = torch.tensor([[-0.5 * (0 / 0.5 + 1 / 2.0), -0.5 * (1 / 0.5 + 0)],
                             [-0.5 * (1 / 0.5 + 1 / 2.0), -0.5 * (0 + 4 / 2.0)]])
    assert torch.allclose(gaussian_loglik(x, mu, var, chunk_size=1), expected, atol=1e-6)
    per_comp = torch.stack([var, 2 * var])
    got = gaussian_loglik(x, mu, per_comp, include_logdet=True)
    exp2 = -0.5 * (((x[:, None] - mu[None]) ** 2) / per_comp[None]).sum(-1) \
        - 0.5 * per_comp.log().sum(-1)[None]
    assert torch.allclose(got, exp2, atol=1e-6)


def test_consensus_geometric_is_the_minimiser_of_eq7():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.tensor([[0.1, 0.3, 0.6]])
    z = consensus(p.log(), q.log(), "geometric")
    best = objective(z, p.log(), q.log())
    g = torch.Generator().manual_seed(1)
    for _ in range(200):  # no random point on the simplex does better
        r = torch.softmax(3 * torch.randn(1, 3, generator=g), 1)
        assert objective(r, p.log(), q.log()) >= best - 1e-6
    # and the product rule is p*q normalised
    zp = consensus(p.log(), q.log(), "product")
    assert torch.allclose(zp, (p * q) / (p * q).sum(), atol=1e-6)


def test_m_step_shared_and_per_component_variances():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    r = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mu, var = m_step(x, r, shared_variance=False, normalize_means=False, var_floor=1e-9)
    assert torch.allclose(mu, torch.tensor([[1.0, 0.0], [0.0, 5.0]]))
    assert torch.allclose(var, torch.tensor([[1.0, 1e-9], [1e-9, 1.0]]))
    _, shared = m_step(x, r, shared_variance=True, normalize_means=False, var_floor=1e-9)
    assert torch.allclose(shared, torch.tensor([0.5, 0.5]))


def test_init_means_uses_top_k_weighted_by_prior():
    x = torch.eye(4)
    prior = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    mu = init_means(x, prior, top_k=2, normalize=False)
    assert torch.allclose(mu[0], torch.tensor([0.9, 0.6, 0, 0]) / 1.5)
    assert torch.allclose(mu[1], torch.tensor([0, 0, 0.8, 0.7]) / 1.5)


# ---------------------------------------------------------------- equivalence with the oracle
@pytest.mark.parametrize("n_iter", [0, 3, 10])
def test_fast_matches_straightforward_reference(n_iter):
    prior, x, _ = clusters(n=1000, d=256, k=6, seed=n_iter)
    fast = coninfer(prior, x, ConInferConfig(mode="reference", n_iter=n_iter, chunk_size=333)).z
    slow = straightforward_reference(prior, x, n_iter=n_iter, chunk_size=250)
    assert fast.shape == (1000, 6)
    assert float((fast - slow).abs().max()) < 1e-4
    assert torch.allclose(fast.sum(1), torch.ones(1000), atol=1e-5)


def test_numpy_inputs_and_unnormalised_rows_accepted():
    prior, x, _ = clusters(n=400, d=64, k=3)
    a = coninfer(prior.numpy() * 7.0, x.numpy(), ConInferConfig(n_iter=2)).z
    b = coninfer(prior, x, ConInferConfig(n_iter=2)).z
    assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- the method works
def test_joint_mode_corrects_a_noisy_prior():
    prior, x, y = clusters(n=2000, d=512, k=5, noise=3.0, seed=0)
    acc_prior = accuracy(prior, y)
    res = coninfer(prior, x, ConInferConfig(mode="reference"))
    acc_joint = accuracy(res.z, y)
    assert 0.4 < acc_prior < 0.6
    assert acc_joint > acc_prior + 0.15, (acc_prior, acc_joint)
    assert len(res.objective) == 11 and len(res.labels_history) == 11
    assert all(math.isfinite(v) for v in res.objective)
    # the last iterations have converged: nothing changes any more
    assert res.changed[-1] < 0.01


def test_paper_mode_corrects_a_noisy_prior_and_shapes():
    prior, x, y = clusters(n=2000, d=512, k=5, noise=6.0, seed=1)
    res = coninfer(prior, x, ConInferConfig(mode="paper"))
    assert res.variances.shape == (5, 512) and res.means.shape == (5, 512)
    assert accuracy(res.z, y) > accuracy(prior, y) + 0.3
    # tempering the paper posterior with the public code's T=50 leaves the prior in charge
    weak = coninfer(prior, x, ConInferConfig(mode="paper", temperature=50.0))
    assert accuracy(weak.z, y) < accuracy(res.z, y)


def test_modes_differ_and_context_only_returns_posterior():
    prior, x, _ = clusters(n=800, d=128, k=4)
    outs = {m: coninfer(prior, x, ConInferConfig(mode=m, n_iter=4)) for m in MODES}
    assert torch.equal(outs["context_only"].z, outs["context_only"].posterior)
    assert not torch.allclose(outs["reference"].z, outs["decoupled"].z)
    # decoupled and context-only fit the same mixture (plain EM); they differ only in the output
    assert torch.allclose(outs["decoupled"].posterior, outs["context_only"].posterior)
    zc = consensus(prior.clamp_min(1e-12).log(), outs["decoupled"].posterior.log(), "product")
    assert torch.allclose(outs["decoupled"].z, zc, atol=1e-5)


def test_a_confident_prior_is_kept_where_context_agrees():
    prior, x, y = clusters(n=600, d=128, k=3, noise=1.0, prior_boost=4.0)
    res = coninfer(prior, x, ConInferConfig())
    assert accuracy(prior, y) > 0.95 and accuracy(res.z, y) >= accuracy(prior, y) - 0.01


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    prior, x, _ = clusters(n=50, d=16, k=3)
    with pytest.raises(ValueError, match="K >= 2"):
        coninfer(torch.ones(50, 1), x)
    bad = prior.clone()
    bad[3] = 0
    with pytest.raises(ValueError, match="all-zero rows"):
        coninfer(bad, x)
    bad = prior.clone()
    bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        coninfer(bad, x)
    with pytest.raises(ValueError, match="N=50 patches but features have N=49"):
        coninfer(prior, x[:49])
    with pytest.raises(ValueError, match="top_k_init"):
        coninfer(prior[:5], x[:5], ConInferConfig(top_k_init=8))
    with pytest.raises(ValueError, match="negative"):
        coninfer(prior - 0.5, x)
    with pytest.raises(ValueError, match="features have 1 rows with NaN"):
        xb = x.clone()
        xb[0, 0] = float("inf")
        coninfer(prior, xb)
    with pytest.raises(ValueError, match="mode must be one of"):
        ConInferConfig(mode="fast")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        coninfer(prior, x[None])


def test_prior_zero_entries_are_allowed_and_stay_zero_in_reference_mode():
    prior, x, _ = clusters(n=300, d=32, k=3)
    prior = prior.clone()
    prior[:10, 2] = 0.0
    z = coninfer(prior, x, ConInferConfig(n_iter=3)).z
    assert torch.isfinite(z).all() and float(z[:10, 2].max()) < 1e-9


def test_prior_from_logits_is_scaled_softmax():
    logits = torch.tensor([[0.30, 0.28]])
    assert torch.allclose(prior_from_logits(logits), torch.softmax(torch.tensor([[30.0, 28.0]]), 1))


# ---------------------------------------------------------------- pools, tiles, scenes
def test_tile_and_stitch_round_trip():
    img = torch.arange(3 * 50 * 70, dtype=torch.float32).reshape(3, 50, 70)
    tiles, pos = tile_scene(img, tile=32, stride=24)
    assert tiles.shape[1:] == (3, 32, 32)
    for t, (yy, xx) in zip(tiles, pos):
        assert torch.equal(t, img[:, yy:yy + 32, xx:xx + 32])
    # constant per-tile maps: stitched value is the mean over covering tiles
    maps = torch.ones(len(pos), 2, 4, 4)
    out = stitch_tiles(maps, pos, (50, 70), tile=32)
    assert out.shape == (2, 50, 70) and torch.allclose(out, torch.ones_like(out))
    small, pos_small = tile_scene(torch.ones(3, 10, 12), tile=16)
    assert small.shape == (1, 3, 16, 16) and pos_small == [(0, 0)]
    assert float(small[0, :, 10:].abs().sum()) == 0.0  # zero padded
    with pytest.raises(ValueError, match="stride"):
        tile_scene(img, tile=16, stride=32)


def _toy_scene(size=96, seed=0):
    """Left half class 0, right half class 1; features say so cleanly, the prior is noisy."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(size, size, dtype=torch.long)
    lab[:, size // 2:] = 1
    img = torch.stack([lab.float(), 1 - lab.float(), torch.rand(size, size, generator=g)])
    return img, lab


def test_refine_scene_improves_a_noisy_prior_on_a_tiled_scene():
    img, lab = _toy_scene()
    d, g = 64, torch.Generator().manual_seed(3)
    dirs = F.normalize(torch.randn(2, d, generator=g), dim=1)

    def feature_fn(tiles):  # (B, 3, 32, 32) -> (B, D, 8, 8): class direction + noise
        cls = F.avg_pool2d(tiles[:, :1], 4)                      # fraction of class 0
        f = cls * dirs[0][None, :, None, None] + (1 - cls) * dirs[1][None, :, None, None]
        return F.normalize(f + 0.02 * torch.randn(f.shape, generator=g), dim=1)

    def prior_fn(tiles):  # noisy logits around the true class, per patch
        cls = (F.avg_pool2d(tiles[:, :1], 4) > 0.5).long()[:, 0]
        logits = F.one_hot(cls, 2).permute(0, 3, 1, 2).float()
        return torch.softmax(logits + 1.5 * torch.randn(logits.shape, generator=g), dim=1)

    out = refine_scene(prior_fn, feature_fn, img, tile=32, config=ConInferConfig(n_iter=5,
                       top_k_init=4, temperature=0.05), batch_tiles=3)
    assert out.probs.shape == (2, 96, 96) and len(out.positions) == 9
    acc_prior = float((out.prior_labels == lab).float().mean())
    acc = float((out.labels == lab).float().mean())
    assert acc_prior < 0.75 and acc > 0.95, (acc_prior, acc)


def test_refine_maps_pools_images():
    prior, x, y = clusters(n=6 * 64, d=128, k=3, noise=2.0)
    pm = prior.reshape(6, 8, 8, 3).permute(0, 3, 1, 2)
    fm = x.reshape(6, 8, 8, 128).permute(0, 3, 1, 2)
    out, results = refine_maps(pm, fm, ConInferConfig(n_iter=2), pool_images=4)
    assert out.shape == (6, 3, 8, 8) and len(results) == 2
    flat = out.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.allclose(flat[:256], results[0].z, atol=1e-6)
    with pytest.raises(ValueError, match="share batch and patch grid"):
        refine_maps(pm, fm[:, :, :4], ConInferConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_matches_cpu():
    prior, x, _ = clusters(n=1000, d=256, k=4)
    cpu = coninfer(prior, x, ConInferConfig(n_iter=5)).z
    gpu = coninfer(prior.cuda(), x.cuda(), ConInferConfig(n_iter=5)).z.cpu()
    assert float((cpu - gpu).abs().max()) < 1e-4


# ---------------------------------------------------------------- default-profile helpers
def test_patch_statistics_and_labels_by_hand():
    from rslab.models.coninfer import patch_labels, patch_statistics

    img = torch.zeros(1, 4, 4)
    img[0, :2, :2] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    st = patch_statistics(img, patch=2, scales=(1, 3))
    assert st.shape == (4, 2, 2)
    assert float(st[0, 0, 0]) == pytest.approx(1.0) and float(st[1, 0, 0]) == pytest.approx(1.0)
    assert float(st[0, 1, 1]) == 0.0
    # 3x3 neighbourhood mean of patch means at (0,0): mean of the 4 existing patches = 0.25
    assert float(st[2, 0, 0]) == pytest.approx(0.25)
    lab = torch.tensor([[0, 1, 2, 2], [1, 1, 2, 255], [255, 255, 0, 0], [255, 255, 0, 3]])
    assert patch_labels(lab, 2, 4).tolist() == [[1, 2], [255, 0]]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        patch_labels(lab, 2, 3)


# ---------------------------------------------------------------- options: Eq. 5 weights, Eq. 9 over all patches
def imbalanced(n=3000, d=64, noise=2.0, seed=0):
    """Clusters with class shares 70 / 10 / 10 / 10 % and a noisy prior."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, d, generator=g)
    y = torch.multinomial(torch.tensor([0.7, 0.1, 0.1, 0.1]), n, replacement=True, generator=g)
    x = F.normalize(centers[y] + noise * torch.randn(n, d, generator=g), dim=1)
    logits = torch.randn(n, 4, generator=g)
    logits[torch.arange(n), y] += 1.0
    return torch.softmax(2.0 * logits, dim=1), x, y


def test_mixture_log_weights_by_hand_and_uniform_default_unchanged():
    from rslab.models.coninfer import mixture_log_weights, tempered_log_posterior

    r = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    pi = mixture_log_weights(r, floor=1e-2).exp()
    expect = torch.tensor([0.625, 0.375, 0.01]) / 1.01
    assert torch.allclose(pi, expect, atol=1e-6)
    ll = torch.randn(4, 3)
    assert torch.allclose(tempered_log_posterior(ll, 2.0), torch.log_softmax(ll / 2.0, 1))
    assert torch.allclose(tempered_log_posterior(ll, 2.0, pi.log()), torch.log_softmax(ll / 2.0 + pi.log(), 1))
    prior, x, _ = imbalanced(n=600)
    a = coninfer(prior, x, ConInferConfig())
    b = coninfer(prior, x, ConInferConfig(mixture_weights="uniform", init="top_k"))
    assert torch.equal(a.z, b.z)


def test_estimated_weights_follow_an_imbalanced_pool():
    prior, x, y = imbalanced(seed=1)
    uni = coninfer(prior, x, ConInferConfig(temperature=5.0, standardize=True))
    est = coninfer(prior, x, ConInferConfig(temperature=5.0, standardize=True, mixture_weights="estimated"))
    share = lambda z: float((z.argmax(1) == 0).float().mean())
    truth = float((y == 0).float().mean())
    # uniform weights pull the dominant class's share down; estimated ones keep it closer to the truth
    assert abs(share(est.z) - truth) < abs(share(uni.z) - truth)
    assert accuracy(est.z, y) > accuracy(uni.z, y)


def test_init_from_all_patches_is_the_prior_weighted_mean():
    prior, x, _ = imbalanced(n=400)
    res = coninfer(prior, x, ConInferConfig(mode="paper", n_iter=0, init="prior"))
    expect = (prior.T @ x) / prior.sum(0)[:, None]
    assert torch.allclose(res.means, expect, atol=1e-5)
    ref = coninfer(prior, x, ConInferConfig(n_iter=0, init="prior"))
    assert torch.allclose(ref.means, F.normalize(expect, dim=1), atol=1e-5)
    with pytest.raises(ValueError, match="mixture_weights"):
        ConInferConfig(mixture_weights="learned")
    with pytest.raises(ValueError, match="init"):
        ConInferConfig(init="kmeans")


def test_e_step_is_eq11_and_checks_shapes():
    """Eq. 11 by hand: log q = log softmax(l / T + log pi), l_ik = -1/2 sum_d (x - mu)^2 / var (- 1/2 log det)."""
    from rslab.models.coninfer import e_step

    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(7, 3, generator=g), torch.randn(2, 3, generator=g)
    var = torch.rand(2, 3, generator=g) + 0.5
    log_w = torch.tensor([0.3, 0.7]).log()
    ll = -0.5 * ((x[:, None] - mu[None]) ** 2 / var[None]).sum(-1) - 0.5 * var.log().sum(-1)[None]
    expect = torch.log_softmax(ll / 4.0 + log_w[None], dim=1)
    got = e_step(x, mu, var, 4.0, log_w, include_logdet=True, chunk_size=3)
    assert torch.allclose(got, expect, atol=1e-5)
    shared = e_step(x, mu, var[0], 1.0)
    assert torch.allclose(shared.exp().sum(1), torch.ones(7), atol=1e-6)
    with pytest.raises(ValueError, match="variances"):
        e_step(x, mu, torch.ones(4), 1.0)
    with pytest.raises(ValueError, match="same D"):
        e_step(x, mu[:, :2], var[:, :2], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        e_step(x, mu, var, 0.0)
