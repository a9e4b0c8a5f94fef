"""Tests for rslab.recipes.coninfer_real: ConInfer on real samples and on the paper's benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rslab.models import coninfer as ci
from rslab.recipes import coninfer_real as creal


def two_region_rgb(rng, size: int, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) uint8 image, reddish left of column ``cut`` and greenish right of it, and the left mask."""
    left = np.zeros((size, size), bool)
    left[:, :cut] = True
    rgb = np.where(left[..., None], [200, 60, 40], [40, 180, 60]) + rng.integers(-20, 20, (size, size, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8), left


def write_loveda(folder, n: int = 3, size: int = 64):
    rng = np.random.default_rng(0)
    for sub in ("img_dir", "ann_dir"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        rgb, left = two_region_rgb(rng, size, size // 2)
        Image.fromarray(rgb).save(folder / "img_dir" / f"{i}.png")
        Image.fromarray(np.where(left, 2, 7).astype(np.uint8)).save(folder / "ann_dir" / f"{i}.png")  # 2 built, 7 agri


def write_deepglobe(folder, size: int = 128):
    rgb, left = two_region_rgb(np.random.default_rng(1), size, size // 4)   # the training quarter sees both
    folder.mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "6399_sat.jpg", quality=95)
    mask = np.where(left[..., None], [0, 255, 255], [255, 255, 0]).astype(np.uint8)   # urban | agriculture
    Image.fromarray(mask).save(folder / "6399_mask.png")


def test_real_sample_scores_on_tiny_loveda_and_deepglobe(tmp_path):
    assert creal.real_sample_scores(tmp_path, n_iter=2) == {}   # nothing there: nothing scored
    write_loveda(tmp_path / "loveda")
    write_deepglobe(tmp_path / "deepglobe_landcover")
    cfg = ci.ConInferConfig(n_iter=2, standardize=True)
    scores = creal.real_sample_scores(tmp_path, n_iter=2, seed=0)
    assert set(scores) == {"loveda_prior", "loveda_joint", "deepglobe_prior", "deepglobe_joint"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["loveda_prior"] > 0.3   # colour separates the two classes of the tiny crops
    assert creal.loveda_scores(tmp_path / "loveda", cfg, seed=0) == {k: scores[k] for k in ("loveda_prior",
                                                                                           "loveda_joint")}
    assert creal.deepglobe_scores(tmp_path / "deepglobe_landcover", cfg, tile=64)["deepglobe_prior"] > 0.9
    with pytest.raises(ValueError, match="n_iter and patch"):
        creal.real_sample_scores(tmp_path, n_iter=0)


def test_check_benchmarks_fails_early_with_the_fix():
    creal.check_benchmarks([], "text", "backbone")   # nothing asked: nothing to check
    with pytest.raises(ValueError, match="no reader for"):
        creal.check_benchmarks(["isaid"], "maskclip_star", "dinov2-vitb14")
    with pytest.raises(ValueError, match="prior_source='maskclip_star'"):
        creal.check_benchmarks(["loveda"], "text", "backbone")
    with pytest.raises(FileNotFoundError, match="loveda"):
        creal.check_benchmarks(["loveda"], "maskclip_star", "dinov2-vitb14", data_root="/nonexistent")


class FakeSegmenter:
    """MaskCLIP*'s interface: (B, K, h, w) class probabilities on a 4x4 grid, favouring class 0."""

    def class_probs(self, rgb, names):
        logits = torch.zeros(rgb.shape[0], len(names), 4, 4)
        logits[:, 0] = 1.0
        return torch.softmax(logits, 1)


class FakeViT(torch.nn.Module):
    """A timm ViT's interface: patch_embed.patch_size and forward_features -> (B, 1 + g*g, D)."""

    def __init__(self):
        super().__init__()
        self.patch_embed = torch.nn.Module()
        self.patch_embed.patch_size = (16, 16)
        self.proj = torch.nn.Conv2d(3, 8, 16, 16)

    def forward_features(self, x):
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], 1)


def test_benchmark_scores_on_a_tiny_official_layout(tmp_path):
    from rslab.data.catalog_testing import write_tiny_dataset

    write_tiny_dataset("potsdam", tmp_path, seed=0, n=2, size=64)
    cfg = ci.ConInferConfig(n_iter=2, standardize=True)
    out = creal.benchmark_scores("potsdam", tmp_path, FakeSegmenter(), FakeViT().eval(), 0.1, cfg, n_images=2,
                                 clip_input_size=64, context_size=64)
    assert out["n_images"] == 2 and 0.0 <= out["prior"] <= 1.0 and 0.0 <= out["joint"] <= 1.0
    with pytest.raises(ValueError, match="no reader"):
        creal.benchmark_scores("isaid", tmp_path, FakeSegmenter(), FakeViT(), 0.1, cfg)
