"""Notebook 01's steps around the stage-1 training loops (rslab.recipes.alignment_study)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from fakes import HashText
from torch.utils.data import TensorDataset

from rslab.data.augment import SARViewAugment
from rslab.data.sample import Sample
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.losses.contrastive import ImageAlignmentLoss
from rslab.models.alignment import embed_sar
from rslab.models.encoders import ImageEncoder, ImageEncoderConfig, freeze
from rslab.recipes.alignment import TeacherSARModel
from rslab.recipes.alignment_study import (
    SARAlignmentRuns,
    alignment_encoder_config,
    evaluate_paper_alignment,
    percentile_stretch,
    real_chip_scores,
    time_alignment_step,
    train_ceiling_students,
    train_optical_tower,
)
from rslab.train import TrainConfig

TINY = dict(embed_dim=32, depth=1, num_heads=2, img_size=16, out_dim=16)


def toy_pairs(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    optical = torch.rand(n, 4, size, size, generator=g)
    sar = torch.stack([optical[:, 3] * 20 - 25, optical[:, 0] * 15 - 28], dim=1)
    return optical, sar


def cfg(steps: int = 2) -> TrainConfig:
    return TrainConfig(max_steps=steps, lr=1e-3, warmup_steps=1, progress=False, log_every=1)


def test_encoder_config_overrides_the_preset_and_gives_sar_its_own_depth():
    sar = alignment_encoder_config("tiny", 2, 64, embed_dim=48, depth=3, num_heads=2, sar_depth=1)
    optical = alignment_encoder_config("tiny", 4, 64, embed_dim=48, depth=3, num_heads=2, sar_depth=1)
    assert (sar.in_chans, sar.depth, sar.embed_dim, sar.img_size, sar.out_dim) == (2, 1, 48, 64, 384)
    assert (optical.in_chans, optical.depth) == (4, 3)
    kept = alignment_encoder_config("small", 2, 64)  # None keeps the preset's values
    assert (kept.embed_dim, kept.depth) == (ImageEncoderConfig.small(2).embed_dim, ImageEncoderConfig.small(2).depth)
    with pytest.raises(ValueError, match="preset must be one of"):
        alignment_encoder_config("huge", 2, 64)


def test_runs_share_the_initial_encoder_and_are_reproducible():
    optical, sar = toy_pairs(8)
    runs = SARAlignmentRuns(freeze(ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY))),
                            ImageEncoderConfig(in_chans=2, **TINY), optical, sar,
                            SARViewAugment(crop=None, looks=(4.0, 8.0)), lr=1e-3, temperature=0.1, seed=0, init_seed=1,
                            batch_size=4, optical_bank=True)
    before = runs.initial_encoder().state_dict()
    assert all(torch.equal(v, runs.initial_encoder().state_dict()[k]) for k, v in before.items())
    optical_before = {k: v.clone() for k, v in runs.optical_encoder.state_dict().items()}
    model, history = runs.train(0.5, 1.0, steps=2)
    again, _ = runs.train(0.5, 1.0, steps=2)
    assert len(history) >= 1 and {"loss_cl", "loss_cma"} <= set(history[-1])
    assert torch.equal(embed_sar(model.sar, sar), embed_sar(again.sar, sar))  # same init, data order and draws
    assert any(not torch.equal(v, model.sar.state_dict()[k]) for k, v in before.items())  # it trained
    assert all(torch.equal(v, runs.optical_encoder.state_dict()[k]) for k, v in optical_before.items())  # frozen
    with pytest.raises(ValueError, match="steps must be >= 1"):
        runs.train(1.0, 1.0, steps=0)
    with pytest.raises(ValueError, match="2 channels"):
        SARAlignmentRuns(runs.optical_encoder, ImageEncoderConfig(in_chans=3, **TINY), optical, sar, runs.augment,
                         lr=1e-3, temperature=0.1, seed=0, init_seed=1)


def test_optical_tower_trains_against_the_frozen_text_space():
    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    samples = [world.scene(i) for i in range(4)]

    torch.manual_seed(0)
    tower_cfg = ImageEncoderConfig(in_chans=4, **{**TINY, "img_size": 64})
    encoder, history = train_optical_tower(world, samples, HashText(), world.tree, 2, tower_cfg, cfg(2),
                                           layout_captions=1, batch_size=4, crop=32, view_weight=1.0)
    assert isinstance(encoder, ImageEncoder) and not encoder.training
    assert {"loss_text", "loss_view"} <= set(history[-1])
    with pytest.raises(ValueError, match="in_chans=4"):
        train_optical_tower(world, samples, HashText(), world.tree, 2, ImageEncoderConfig(in_chans=2, **TINY), cfg())
    with pytest.raises(ValueError, match="at least one scene"):
        train_optical_tower(world, [], HashText(), world.tree, 2, tower_cfg, cfg())


def test_ceiling_students_score_retrieval_per_student():
    optical, _ = toy_pairs(8)
    labels = np.random.default_rng(0).integers(0, 3, size=(8, 16, 16))
    scores = train_ceiling_students(freeze(ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY))), optical, optical[:4],
                                    labels, labels[:4], 3, ImageEncoderConfig(in_chans=2, **TINY), cfg(2),
                                    batch_size=4)
    assert list(scores) == ["label map", "optical"]
    assert all(set(r) == {1, 5} and 0.0 <= r[1] <= r[5] == 1.0 for r in scores.values())  # 4 held out: R@5 = 1
    with pytest.raises(ValueError, match="one label map per image"):
        train_ceiling_students(None, optical, optical[:4], labels[:3], labels[:4], 3, None, cfg())


def test_percentile_stretch_maps_each_band_to_unit_range():
    x = torch.stack([torch.linspace(0, 1, 400).view(1, 20, 20), torch.linspace(100, 300, 400).view(1, 20, 20)], 1)
    out = percentile_stretch(x)
    assert out.shape == x.shape and out.min() == 0 and out.max() == 1
    assert torch.allclose(out[0, 0], out[0, 1], atol=1e-4)  # same shape of distribution, other scale: same result
    with pytest.raises(ValueError, match="low < high"):
        percentile_stretch(x, 0.9, 0.1)


def test_real_chip_scores_water_tiles_and_retrieval():
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[:16] = 1  # the top two of four 16 px tiles are water
    chip = Sample(optical=rng.random((13, 32, 32)).astype(np.float32),
                  sar=rng.uniform(-25, -5, (2, 32, 32)).astype(np.float32), labels=labels)
    sar_enc = ImageEncoder(ImageEncoderConfig(in_chans=2, **TINY))
    prompts = F.normalize(torch.randn(3, 16), dim=-1)
    out = real_chip_scores(chip, 16, ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY)), {"before": sar_enc},
                           prompts, water_index=2)
    assert (out["n_tiles"], out["n_water"]) == (4, 2)
    assert set(out["sar"]["before"]) == {"r1", "r5", "acc", "balanced_acc"} and out["sar"]["before"]["r5"] == 1.0
    assert 0.0 <= out["optical_balanced_acc"] <= 1.0
    with pytest.raises(ValueError, match="water_index"):
        real_chip_scores(chip, 16, None, {}, prompts, water_index=3)


class Pooled(nn.Module):
    """A tiny image tower: conv, global average pooling, (B, 8) features."""

    def __init__(self, in_chans: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.nan_to_num(x)).mean((2, 3))


def test_paper_evaluation_and_step_timing_on_a_tiny_teacher():
    torch.manual_seed(0)
    optical, sar = toy_pairs(6)
    model = TeacherSARModel(freeze(Pooled(3)), Pooled(2))
    pairs = TensorDataset(optical[:, :3], sar)
    labels = torch.zeros(6, 16, 16, dtype=torch.long)
    labels[:3] = 1
    labels[5] = 255  # no labelled pixel: not scored
    chips = TensorDataset(optical[:, :3], sar, labels)
    seconds = time_alignment_step(model, pairs, ImageAlignmentLoss(0.5, 1.0), SARViewAugment(crop=8), 4, "cpu")
    assert seconds > 0 and all(p.grad is None for p in model.sar.parameters())
    metrics, n_chips, n_water = evaluate_paper_alignment(model, Pooled(2), pairs, chips, torch.randn(2, 8))
    assert (n_chips, n_water) == (5, 3)
    assert {"sar2opt_r1_before", "sar2opt_r5_after", "sar_zeroshot_balanced_acc_after",
            "optical_zeroshot_acc"} <= set(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    with pytest.raises(ValueError, match="water_prompts must be"):
        evaluate_paper_alignment(model, Pooled(2), pairs, chips, torch.randn(3, 8))
    with pytest.raises(ValueError, match="must yield labels"):
        evaluate_paper_alignment(model, Pooled(2), pairs, pairs, torch.randn(2, 8))
