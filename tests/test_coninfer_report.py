"""Tests for rslab.recipes.coninfer_report: notebook 05's ablation, tables and the floor of Eq. 8."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rslab.metrics import pixel_miou
from rslab.models import coninfer as ci
from rslab.models.encoders import ImageEncoder, ImageEncoderConfig
from rslab.recipes import coninfer_report as cr


def clustered(b: int = 2, k: int = 3, h: int = 4, seed: int = 0):
    """Class maps in vertical bands, features clustered by class, a noisy prior; labels at 4 px per patch."""
    g = torch.Generator().manual_seed(seed)
    cls = (torch.arange(h)[None, :].expand(h, h) * k // h)[None].expand(b, h, h)
    centres = torch.randn(k, 8, generator=g) * 3
    feats = (centres[cls] + 0.3 * torch.randn(b, h, h, 8, generator=g)).permute(0, 3, 1, 2)
    onehot = torch.nn.functional.one_hot(cls, k).float().permute(0, 3, 1, 2)
    logits = onehot + 0.8 * torch.randn(b, k, h, h, generator=g)
    prior = torch.softmax(logits, 1)
    labels = np.kron(cls.numpy(), np.ones((4, 4), dtype=np.int64))
    return prior, feats, labels, k


def test_ablation_runs_every_setting_and_scores_it():
    prior, feats, labels, k = clustered()
    settings = cr.ablation_settings({"reference": 5.0, "paper": 2.0}, n_iter=3)
    assert list(settings) == ["context_only", "decoupled", "joint_reference", "joint_paper"]
    assert settings["joint_paper"].mode == "paper" and settings["joint_paper"].temperature == 2.0
    assert settings["decoupled"].temperature == 5.0 and settings["decoupled"].standardize
    probs, fits, scores = cr.run_ablation(prior, feats, settings, labels, k, pool_images=1)
    assert list(probs) == ["prior", *settings] and probs["prior"] is prior
    assert len(fits["joint_reference"]) == 2   # one fit per pool of one image
    assert scores["prior"][0] == pixel_miou(prior, labels, k)[0]
    z, _ = ci.refine_maps(prior, feats, settings["joint_paper"], pool_images=1)
    assert torch.equal(probs["joint_paper"], z)
    assert scores["joint_reference"][0] >= scores["prior"][0]   # the clusters are the classes: context helps
    table = cr.per_class_table(scores, ["a", "b", "c"])
    assert table.splitlines()[0].split()[1:] == list(probs) and table.splitlines()[-1].split()[0] == "mIoU"


def test_settings_and_words_reject_bad_inputs():
    with pytest.raises(ValueError, match="missing"):
        cr.ablation_settings({"reference": 5.0})
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cr.consensus_setting("paper", 0)
    with pytest.raises(ValueError, match="settings is empty"):
        cr.run_ablation(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), {}, np.zeros((1, 8, 8)), 2)
    assert [cr.compare_word(x, 0.5) for x in (0.6, 0.4, 0.503)] == ["above", "below", "level with"]
    scores = {"prior": (0.5, np.array([0.5, 0.2, np.nan, 0.4])), "joint": (0.6, np.array([0.7, 0.1, 0.3, 0.4]))}
    assert cr.class_gains(scores, "joint", ["a", "b", "c", "d"]) == ("a +20", "b -10")
    with pytest.raises(ValueError, match="scores needs"):
        cr.class_gains(scores, "paper", ["a"])


def test_prior_context_grid_reuses_done_pairs_and_finds_the_fallback():
    prior, feats, labels, k = clustered()
    tau_of = {"f": {"reference": 5.0, "paper": 2.0}, "g": {"reference": 10.0, "paper": 5.0}}
    contexts = {"f": feats, "g": feats.flip(1)}
    done = {("p", "f"): {"reference": -1.0, "paper": -2.0}}
    table = cr.prior_context_grid({"p": prior}, contexts, labels, k, tau_of, n_iter=2, pool_images=2, done=done)
    assert list(table) == ["p+f", "p+g"]
    assert table["p+f"] == {"prior": pixel_miou(prior, labels, k)[0], "reference": -1.0, "paper": -2.0}
    z, _ = ci.refine_maps(prior, contexts["g"], cr.consensus_setting("paper", 5.0, 2), pool_images=2)
    assert table["p+g"]["paper"] == pixel_miou(z, labels, k)[0]
    row = {"features": "g", "mode": "paper", "temperature": 5.0, "miou": 0.4}
    fb = cr.fallback_result(table, row, "p")
    assert fb["miou_joint"] == table["p+g"]["paper"] and fb["validation_miou"] == 0.4
    assert cr.fallback_result(table, None, "p") is None
    with pytest.raises(ValueError, match="not in the prior-context table"):
        cr.fallback_result(table, row, "q")
    with pytest.raises(ValueError, match="no consensus temperatures"):
        cr.prior_context_grid({"p": prior}, {"h": feats}, labels, k, tau_of)
    assert "p+g" in cr.prior_context_table(table)


def test_bhattacharyya_floor_is_eq8_at_its_best_z():
    g = torch.Generator().manual_seed(0)
    p, q = torch.softmax(torch.randn(50, 4, generator=g), 1), torch.softmax(torch.randn(50, 4, generator=g), 1)
    z = ci.consensus(p.log(), q.log(), "geometric")   # z ∝ sqrt(p q), the minimiser of Eq. 7
    assert cr.bhattacharyya_floor(p, q) == pytest.approx(ci.objective(z, p.log(), q.log()), abs=1e-5)
    assert cr.bhattacharyya_floor(p, p) == pytest.approx(0.0, abs=1e-6)
    other = ci.consensus(p.log(), q.log(), "product")
    assert ci.objective(other, p.log(), q.log()) >= cr.bhattacharyya_floor(p, q) - 1e-6
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        cr.bhattacharyya_floor(p, q[:10])


def test_objective_floors_follow_the_fit():
    prior, feats, _, _ = clustered()
    p0, f0 = ci.flatten_maps(prior, feats)
    cfg = cr.consensus_setting("reference", 5.0, n_iter=3)
    floors = cr.objective_floors(p0, f0, cfg, 3)
    assert len(floors) == 3
    q1 = ci.coninfer(p0, f0, dataclasses.replace(cfg, n_iter=1)).posterior
    assert floors[1] == cr.bhattacharyya_floor(p0, q1)
    with pytest.raises(ValueError, match="n_updates"):
        cr.objective_floors(p0, f0, cfg, 0)


class PromptEncoder:
    """A stand-in for MiniLM: one fixed random unit vector per class name."""

    def __init__(self, dim: int):
        self.dim = dim

    def prompt_embeddings(self, synonyms):
        out = [torch.randn(self.dim, generator=torch.Generator().manual_seed(len(s[0]) + 7 * i))
               for i, s in enumerate(synonyms)]
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def test_evaluate_levels_scores_every_level_and_mixture_weighting():
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    val, test = [world.scene(1000 + i) for i in range(2)], [world.scene(i) for i in range(2)]
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig.tiny(4, embed_dim=32, depth=1, num_heads=2, img_size=64, out_dim=16)).eval()
    opt = [torch.from_numpy(np.stack([s.optical for s in sc])).float() for sc in (val, test)]
    feats = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    settings = cr.ablation_settings({"reference": 5.0, "paper": 5.0}, n_iter=2)
    rows, details = cr.evaluate_levels(enc, PromptEncoder(16), world.tree, (val, opt[0]), (test, opt[1]), feats,
                                       settings, patch=8, pool_images=2, levels=(1, 3))
    assert list(rows) == [1, 3] and rows[1]["classes"] == len(world.tree.names(1))
    assert set(rows[3]) == {"classes", "prior_temperature", "prior", "joint_reference", "joint_paper",
                            "joint_reference_estimated_weights", "joint_paper_estimated_weights"}
    share = details[1]["share"]
    assert all(abs(v.sum() - 1) < 1e-6 for v in share.values())   # shares of the area sum to one
    fixed, _ = cr.evaluate_levels(enc, PromptEncoder(16), world.tree, (val, opt[0]), (test, opt[1]), feats,
                                  settings, patch=8, prior_temperature=0.1, pool_images=2, levels=(1,))
    assert fixed[1]["prior_temperature"] == 0.1
    text = cr.level_lines(rows, details, detail=1)
    assert text.count("level ") == 3 and "truth" in text
    with pytest.raises(ValueError, match="settings lacks"):
        cr.evaluate_levels(enc, PromptEncoder(16), world.tree, (val, opt[0]), (test, opt[1]), feats, {}, patch=8)
