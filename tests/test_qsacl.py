"""Tests for QSACL: the loss (hand-computed), query aggregation, views, EMA pre-training, probe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rslab.losses.contrastive import info_nce
from rslab.losses.qsacl import per_query_info_nce, qsacl_loss
from rslab.models.backbone import BackboneConfig, UnifiedBackbone
from rslab.models.qsacl import (
    CompetitiveQueryAggregator,
    ContrastiveSSL,
    MeanAggregator,
    QSACLConfig,
    QueryAggregator,
    multi_crop,
    pretraining_loss,
    query_attention_maps,
)
from rslab.recipes.qsacl import fit_linear_probe
from rslab.train.ema import EMA


def test_per_query_info_nce_hand_computed():
    # B = 2, m = 1, 2-D unit vectors: student s0 = (1, 0), s1 = (0, 1); teacher t0 = (1, 0), t1 = (0.6, 0.8)
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]])
    tau = 0.5
    # row 0: logits (1, 0.6)/tau, positive col 0; row 1: logits (0, 0.8)/tau, positive col 1
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
    row1 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))
    loss = per_query_info_nce(s, t, temperature=tau)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # scale invariance (embeddings are L2-normalised inside)
    assert per_query_info_nce(3 * s, 0.5 * t, tau).item() == pytest.approx(loss.item(), rel=1e-6)


def test_single_query_matches_plain_info_nce():
    torch.manual_seed(0)
    s, t = torch.randn(6, 1, 8), torch.randn(6, 1, 8)
    ours = per_query_info_nce(s, t, temperature=0.2)[0]
    theirs = info_nce(s[:, 0], t[:, 0], temperature=0.2, symmetric=False)
    torch.testing.assert_close(ours, theirs)


def test_queries_are_contrasted_only_with_the_same_query():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    per_q = per_query_info_nce(s, t, 0.1)
    for i in range(3):
        torch.testing.assert_close(per_q[i], per_query_info_nce(s[:, i : i + 1], t[:, i : i + 1], 0.1)[0])
    # shuffling the *other* queries' samples does not change query 0's loss
    t2 = t.clone()
    t2[:, 1:] = t2[torch.randperm(5), 1:]
    torch.testing.assert_close(per_query_info_nce(s, t2, 0.1)[0], per_q[0])


def test_qsacl_loss_is_eq3():
    torch.manual_seed(0)
    zg, zl, zg_t, zl_t = (torch.randn(4, 3, 8) for _ in range(4))
    expected = (per_query_info_nce(zg, zl_t, 0.2).sum() + per_query_info_nce(zl, zg_t, 0.2).sum()) / (2 * 3)
    torch.testing.assert_close(qsacl_loss([zg], [zl], [zg_t], [zl_t], 0.2), expected)
    # two local views: the mean over (global, local) pairs
    zl2, zl2_t = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    pair2 = qsacl_loss([zg], [zl2], [zg_t], [zl2_t], 0.2)
    torch.testing.assert_close(qsacl_loss([zg], [zl, zl2], [zg_t], [zl_t, zl2_t], 0.2), (expected + pair2) / 2)
    # perfect, well-separated matches give a loss near 0
    eye = torch.eye(4).unsqueeze(1).repeat(1, 3, 1)
    assert qsacl_loss([eye], [eye], [eye], [eye], 0.05).item() < 1e-6


def test_loss_input_checks():
    with pytest.raises(ValueError, match=r"\(B, m, D\)"):
        per_query_info_nce(torch.randn(4, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match=">= 2 samples"):
        per_query_info_nce(torch.randn(1, 2, 8), torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="at least one global"):
        qsacl_loss([], [], [], [])


def _aggregate_checked(agg):
    """Run a 3-query aggregator on random (2, 8, 4, 5) features; check the shapes and that each
    query's weights sum to 1 over the map. Returns (feats, z, weights)."""
    feats = torch.randn(2, 8, 4, 5)
    z, w = agg(feats)
    assert z.shape == (2, 3, 8) and w.shape == (2, 3, 4, 5)
    torch.testing.assert_close(w.sum(dim=(-2, -1)), torch.ones(2, 3))
    return feats, z, w


def test_query_aggregator_is_attention_weighted_mean():
    torch.manual_seed(0)
    agg = QueryAggregator(dim=8, num_queries=3, num_heads=1)
    feats, z, attn = _aggregate_checked(agg)
    # by hand: softmax(q Wq (k Wk)^T / sqrt(d)) (v Wv) Wo
    Wq, Wk, Wv = agg.attn.in_proj_weight.chunk(3)
    bq, bk, bv = agg.attn.in_proj_bias.chunk(3)
    kv = feats.flatten(2).transpose(1, 2)
    q = agg.queries @ Wq.T + bq
    k, v = kv @ Wk.T + bk, kv @ Wv.T + bv
    a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1)
    expected = (a @ v) @ agg.attn.out_proj.weight.T + agg.attn.out_proj.bias
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.flatten(2), a, atol=1e-6, rtol=1e-5)


def test_competitive_aggregator_by_hand():
    torch.manual_seed(0)
    agg = CompetitiveQueryAggregator(dim=8, num_queries=3, init_std=1.0)
    feats, z, w = _aggregate_checked(agg)
    x = agg.norm(feats.flatten(2).transpose(1, 2))
    logits = (agg.to_q(agg.queries) @ agg.to_k(x).transpose(1, 2)) / math.sqrt(8)  # (B, m, N)
    a = logits.softmax(dim=1) + agg.eps  # softmax over the queries, not the tokens
    expected_w = a / a.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(w.flatten(2), expected_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z, expected_w @ agg.to_v(x), atol=1e-5, rtol=1e-5)
    # identical queries split every token evenly, so each takes the plain mean of the values
    with torch.no_grad():
        agg.queries.copy_(agg.queries[:1].expand(3, -1))
    z, w = agg(feats)
    torch.testing.assert_close(w.flatten(2), torch.full((2, 3, 20), 1 / 20), atol=1e-6, rtol=0)
    torch.testing.assert_close(z, agg.to_v(x).mean(dim=1, keepdim=True).expand(-1, 3, -1), atol=1e-5, rtol=1e-5)


def test_competitive_aggregator_instance_keys_ignore_a_common_vector():
    # with instance-normalised keys, adding the same vector to every token of a view changes
    # the values but not where the queries look
    torch.manual_seed(0)
    agg = CompetitiveQueryAggregator(dim=8, num_queries=4, init_std=1.0, key_norm="instance")
    agg.norm = torch.nn.Identity()  # isolate the key normalisation
    feats = torch.randn(2, 8, 4, 4)
    _, w1 = agg(feats)
    _, w2 = agg(feats + 5 * torch.randn(1, 8, 1, 1))
    torch.testing.assert_close(w1, w2, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="key_norm"):
        CompetitiveQueryAggregator(dim=8, num_queries=2, key_norm="batch")
    with pytest.raises(ValueError, match="attention"):
        QSACLConfig(attention="sparse")
    model = ContrastiveSSL(UnifiedBackbone(BackboneConfig.tiny()), QSACLConfig(attention="compete", num_queries=3))
    assert isinstance(model.aggregator, CompetitiveQueryAggregator)


def test_view_overlap():
    from rslab.models.qsacl import view_overlap

    full = view_overlap(QSACLConfig(global_scale=(1.0, 1.0), local_scale=(0.05, 0.1)), 128, n=500)
    assert full["mean"] > 0.95 and full["disjoint"] == 0  # global ~ the whole scene (aspect jitter aside)
    small = view_overlap(QSACLConfig(global_scale=(0.05, 0.1), local_scale=(0.05, 0.1)), 128, n=2000)
    assert small["mean"] < 0.5 and small["disjoint"] > 0.3
    with pytest.raises(ValueError, match="QSACLConfig"):
        view_overlap({"global_scale": (0.4, 1.0)}, 128)  # type: ignore[arg-type]


def test_mean_aggregator_is_global_average_pool():
    feats = torch.randn(2, 8, 4, 4)
    z, attn = MeanAggregator()(feats)
    torch.testing.assert_close(z[:, 0], feats.mean(dim=(2, 3)))
    assert attn.shape == (2, 1, 4, 4)


def test_multi_crop_views():
    cfg = QSACLConfig(global_size=32, local_size=16, num_global=2, num_local=3, intensity_jitter=0.0)
    images = torch.rand(4, 4, 64, 64)
    g1, l1 = multi_crop(images, cfg, torch.Generator().manual_seed(1))
    g2, l2 = multi_crop(images, cfg, torch.Generator().manual_seed(1))
    assert len(g1) == 2 and len(l1) == 3
    assert g1[0].shape == (4, 4, 32, 32) and l1[0].shape == (4, 4, 16, 16)
    for a, b in zip(g1 + l1, g2 + l2):
        torch.testing.assert_close(a, b)  # deterministic by generator
    # a constant image stays the same constant (crop + resize + flip preserve it without jitter)
    const = torch.full((2, 2, 64, 64), 0.3)
    g, l = multi_crop(const, cfg, torch.Generator().manual_seed(0), modality="sar")
    torch.testing.assert_close(l[0], torch.full_like(l[0], 0.3))
    # a left-right ramp stays a ramp: every row of a view is the same monotone profile
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).repeat(2, 4, 1, 1)
    for view in multi_crop(ramp, cfg, torch.Generator().manual_seed(0))[1]:
        rows = view[:, 0]  # (B, L, L)
        torch.testing.assert_close(rows, rows[:, :1].expand_as(rows), atol=1e-5, rtol=0)
        steps = rows[:, 0].diff(dim=-1)
        assert all((s >= -1e-6).all() or (s <= 1e-6).all() for s in steps)
        assert (view >= 0).all() and (view <= 1).all()


@pytest.fixture(scope="module")
def tiny_backbone_cfg() -> BackboneConfig:
    return BackboneConfig.tiny(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))


def test_pretraining_step_trains_student_not_teacher(tiny_backbone_cfg):
    torch.manual_seed(0)
    student = ContrastiveSSL(UnifiedBackbone(tiny_backbone_cfg), QSACLConfig(num_queries=4, hidden_dim=32, proj_dim=16))
    ema = EMA(student, momentum=(0.9, 1.0), total_steps=5)
    out = pretraining_loss(student, ema.model, torch.rand(4, 4, 64, 64), "optical", gsd=1.0)
    assert set(out) == {"loss", "contrastive", "moe_aux"}
    out["loss"].backward()
    for name in ("backbone.tokenizers.optical.proj.weight", "aggregator.queries", "projector.fc1.weight",
                 "predictor.fc2.weight", "backbone.prompts.3.prompts.optical"):
        assert dict(student.named_parameters())[name].grad.abs().sum() > 0, name
    assert all(p.grad is None for p in ema.model.parameters())
    assert dict(student.named_parameters())["backbone.tokenizers.sar.proj.weight"].grad is None


@pytest.mark.slow
def test_qsacl_loss_decreases_on_a_fixed_batch(tiny_backbone_cfg):
    torch.manual_seed(0)
    cfg = QSACLConfig(num_queries=2, hidden_dim=32, proj_dim=16, num_local=1, global_size=64, local_size=32,
                      global_scale=(0.6, 1.0), local_scale=(0.3, 0.5))
    student = ContrastiveSSL(UnifiedBackbone(tiny_backbone_cfg), cfg)
    ema = EMA(student, momentum=(0.5, 0.9), total_steps=8)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    # 8 scenes with distinct structure: smooth random blobs
    scenes = F.interpolate(torch.rand(8, 4, 4, 4, generator=torch.Generator().manual_seed(3)), size=(64, 64),
                           mode="bilinear")
    losses = []
    for step in range(8):
        out = pretraining_loss(student, ema.model, scenes, "optical", 1.0, torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        ema.update(student, step)
        losses.append(out["contrastive"].item())
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses


def test_query_attention_maps_shape_and_mass(tiny_backbone_cfg):
    torch.manual_seed(0)
    student = ContrastiveSSL(UnifiedBackbone(tiny_backbone_cfg), QSACLConfig(num_queries=5, hidden_dim=32, proj_dim=16))
    maps = query_attention_maps(student, torch.rand(2, 4, 64, 64), "optical", gsd=1.0)
    assert maps.shape == (2, 5, 64, 64)
    # each query's weights sum to 1 over the 8 x 8 feature grid, so the upsampled mean is 1/64
    torch.testing.assert_close(maps.mean(dim=(-2, -1)), torch.full((2, 5), 1 / 64), atol=1e-4, rtol=1e-3)
    assert student.training  # restored


def test_linear_probe_recovers_linearly_separable_labels():
    # features = one-hot of the label at 1/4 resolution: a perfect 1x1 probe exists
    torch.manual_seed(0)
    coarse = torch.randint(0, 3, (6, 8, 8))
    labels = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    feats = F.one_hot(coarse, 3).permute(0, 3, 1, 2).float() + 0.05 * torch.randn(6, 3, 8, 8)
    probe = fit_linear_probe(feats, labels, num_classes=3, steps=150, lr=0.1)
    pred = probe(feats, (32, 32)).argmax(1)
    inner = (slice(None), slice(2, -2), slice(2, -2))
    # bilinear upsampling blurs block edges; block centres must be exact
    assert (pred[:, 1::4, 1::4] == coarse).float().mean() > 0.97
    assert (pred[inner] == labels[inner]).float().mean() > 0.85
    with pytest.raises(ValueError, match="num_classes"):
        fit_linear_probe(feats, labels, num_classes=2)


def test_linear_probe_on_the_engine_equals_a_plain_adam_loop_and_keeps_global_rngs():
    import random

    import numpy as np

    from rslab.models.qsacl import LinearProbe

    g = torch.Generator().manual_seed(1)
    feats, labels = torch.randn(4, 8, 8, 8, generator=g), torch.randint(0, 3, (4, 32, 32), generator=g)
    labels[0, :6] = 255
    # the reference: a plain full-batch Adam loop, seeded as the probe is
    torch.manual_seed(0)
    ref = LinearProbe(feats.mean(dim=(0, 2, 3)), feats.std(dim=(0, 2, 3)).clamp_min(1e-6), 3)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05, weight_decay=1e-4)
    y = labels[:, 2::4, 2::4]
    for _ in range(7):
        loss = F.cross_entropy(ref(feats, y.shape[-2:]), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after_ref = torch.get_rng_state()
    random.seed(3), np.random.seed(3)
    py, npy = random.getstate(), np.random.get_state()[1].copy()
    probe = fit_linear_probe(feats, labels, num_classes=3, steps=7, lr=0.05, weight_decay=1e-4, seed=0)
    for (name, a), b in zip(probe.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    # the trainer re-seeds the global RNGs; the probe restores them (torch: as after the probe's init)
    assert torch.equal(torch.get_rng_state(), after_ref)
    assert random.getstate() == py and (np.random.get_state()[1] == npy).all()


def test_config_validation():
    with pytest.raises(ValueError, match="aggregation"):
        QSACLConfig(aggregation="max")
    with pytest.raises(ValueError, match="local_scale"):
        QSACLConfig(local_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="UnifiedBackbone"):
        ContrastiveSSL(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        QueryAggregator(dim=10, num_queries=2, num_heads=4)
    with pytest.raises(ValueError, match="init_std"):
        QueryAggregator(dim=8, num_queries=2, num_heads=2, init_std=0.0)
    agg = QueryAggregator(dim=64, num_queries=32, num_heads=2, init_std=1.0)
    assert 0.7 < agg.queries.std().item() < 1.2


def test_feature_diagnostics_detects_collapse():
    from rslab.models.qsacl import feature_diagnostics

    torch.manual_seed(0)
    healthy = feature_diagnostics(torch.randn(4, 16, 8, 8))
    assert healthy["effective_rank"] > 14 and healthy["within_image_var"] > 0.5
    # every channel a copy of one map (plus an offset and scale per channel): rank 1
    one = torch.randn(4, 1, 8, 8)
    copies = one * torch.linspace(0.5, 2, 16).view(1, 16, 1, 1) + torch.arange(16.0).view(1, 16, 1, 1)
    assert feature_diagnostics(copies)["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    # the same token everywhere: no variance inside or across images
    const = feature_diagnostics(torch.ones(3, 8, 4, 4))
    assert const["within_image_var"] == 0 and const["between_image_var"] == 0
    with pytest.raises(ValueError, match="N >= 2"):
        feature_diagnostics(torch.randn(1, 8, 4, 4))


def test_pretrain_runs_and_validates(tiny_backbone_cfg):
    from rslab.recipes.qsacl import pretrain, pretrain_config

    torch.manual_seed(0)
    student = ContrastiveSSL(UnifiedBackbone(tiny_backbone_cfg),
                             QSACLConfig(num_queries=2, hidden_dim=32, proj_dim=16, num_local=1, global_size=32,
                                         local_size=32))
    scenes = {"optical": torch.rand(4, 4, 64, 64), "sar": torch.rand(4, 2, 64, 64) * 2 - 1}
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = pretrain(student, scenes, pretrain_config(2, seed=0), batch_size=4)
    assert trainer.ema_model is not None and len([r for r in trainer.history if "contrastive" in r]) >= 1
    changed = [k for k, v in student.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.tokenizers.optical") for k in changed)
    assert any(k.startswith("backbone.tokenizers.sar") for k in changed)  # the batches alternate modalities
    with pytest.raises(ValueError, match="batch_size >= 2"):
        pretrain(student, scenes, pretrain_config(2), batch_size=1)
    with pytest.raises(ValueError, match="no tokenizer"):
        pretrain(student, {"lidar": torch.rand(4, 1, 64, 64)}, pretrain_config(1))
    with pytest.raises(ValueError, match="TrainConfig"):
        pretrain(student, scenes, 2)


def test_multi_crop_alt_images_feed_the_local_views():
    cfg = QSACLConfig(global_size=32, local_size=16, num_global=1, num_local=2, intensity_jitter=0.0)
    images = torch.full((3, 4, 64, 64), 0.2)
    alt = torch.full((3, 4, 64, 64), 0.7)  # "the same ground in another style"
    g, l = multi_crop(images, cfg, torch.Generator().manual_seed(0), alt_images=alt)
    torch.testing.assert_close(g[0], torch.full_like(g[0], 0.2))  # globals from the images
    for view in l:
        torch.testing.assert_close(view, torch.full_like(view, 0.7))  # locals from the other rendering
    with pytest.raises(ValueError, match="alt_images must match"):
        multi_crop(images, cfg, alt_images=alt[:2])


def test_query_init_std_default_follows_the_aggregator():
    assert QSACLConfig(attention="paper").init_std == 0.02
    assert QSACLConfig(attention="compete").init_std == 1.0
    assert QSACLConfig.tiny(attention="compete").init_std == 1.0  # resolved lazily, after replace()
    assert QSACLConfig(attention="compete", query_init_std=0.3).init_std == 0.3
    model = ContrastiveSSL(UnifiedBackbone(BackboneConfig.tiny()), QSACLConfig(attention="compete", num_queries=64))
    assert 0.7 < float(model.aggregator.queries.detach().std()) < 1.3
    with pytest.raises(ValueError, match="query_init_std"):
        QSACLConfig(query_init_std=0.0)


def test_pretrain_with_alt_scenes(tiny_backbone_cfg):
    from rslab.recipes.qsacl import pretrain, pretrain_config

    torch.manual_seed(0)
    cfg = QSACLConfig(num_queries=2, hidden_dim=32, proj_dim=16, num_local=1, global_size=32, local_size=32)
    scenes = {"optical": torch.rand(4, 4, 64, 64)}
    alt = torch.rand(4, 2, 4, 64, 64)
    trainer = pretrain(ContrastiveSSL(UnifiedBackbone(tiny_backbone_cfg), cfg), scenes, pretrain_config(2),
                       batch_size=4, alt_scenes={"optical": alt})
    assert len([r for r in trainer.history if "contrastive" in r]) >= 1
    student = ContrastiveSSL(UnifiedBackbone(tiny_backbone_cfg), cfg)
    with pytest.raises(ValueError, match="alt_scenes"):
        pretrain(student, scenes, pretrain_config(1), batch_size=4, alt_scenes={"optical": alt[:3]})
    with pytest.raises(ValueError, match="lacks"):
        pretrain(student, scenes, pretrain_config(1), batch_size=4, alt_scenes={"sar": torch.rand(4, 1, 2, 64, 64)})
