"""Notebook 03's study around the VITA recipe (rslab.recipes.vita_study) and the SGA schedule it plots:
data, seeded model factory, retraining runs, real one-shot transfer, saving and result keys."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch
from fakes import HashText as _HashText
from safetensors.torch import load_file

from rslab.curriculum import sga_level_probs, sga_mu, sga_schedule
from rslab.data.catalog_testing import write_tiny_dataset
from rslab.data.sample import Sample
from rslab.data.tree import load_tree
from rslab.models.vita import VITA, VITAConfig
from rslab.recipes import vita as R
from rslab.recipes import vita_study as S

SMALL = dict(dim=32, num_queries=4, former_layers=1, decoder_layers=2, heads=4, ffn_dim=64, encoder_widths=(8, 16, 32))


@pytest.fixture(scope="module")
def data():
    return S.vita_data("synthetic", size=64, n_train=4, n_eval=2, seed=0)


@pytest.fixture(scope="module")
def build():
    return functools.partial(S.build_vita, "tiny", _HashText.dim, seed=0, **SMALL)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sga_schedule_stacks_every_step():
    mu, probs = sga_schedule(10, 3, tau=0.4)
    assert mu.shape == (11,) and probs.shape == (11, 3)
    assert np.array_equal(probs[7], sga_level_probs(7, 10, 3, 0.4)) and mu[4] == sga_mu(4, 10, 3)
    assert mu[0] == 1.0 and mu[-1] == 3.0 and np.allclose(probs.sum(1), 1.0)
    with pytest.raises(ValueError, match="total_steps"):
        sga_schedule(0, 3)


def test_vita_data_synthetic_pools_are_disjoint_and_bimodal(data):
    assert data.modalities == ("optical", "sar") and data.in_chans is None
    assert (len(data.train_pool), len(data.eval_targets), len(data.eval_prompts)) == (4, 2, 2)
    assert not torch.equal(data.train_pool.optical[0], data.eval_targets.optical[0])
    assert not torch.equal(data.eval_targets.optical[0], data.eval_prompts.optical[0])
    with pytest.raises(ValueError, match="'synthetic' or 'loveda'"):
        S.vita_data("isaid", size=64, n_train=1, n_eval=1)


def test_vita_data_loveda_halves_val_into_targets_and_prompts(tmp_path):
    write_tiny_dataset("loveda", tmp_path, n=4, size=32)
    d = S.vita_data("loveda", size=32, n_train=3, n_eval=5, data_root=tmp_path)
    assert d.modalities == ("optical",) and d.in_chans == (("optical", 3), ("sar", 2))
    assert (len(d.train_pool), len(d.eval_targets), len(d.eval_prompts)) == (3, 2, 2)  # 4 val items halved
    assert d.eval_targets.indices == [0, 1] and d.eval_prompts.indices == [2, 3]


def test_build_vita_is_the_seeded_model_and_takes_overrides(build):
    torch.manual_seed(0)
    by_hand = VITA(VITAConfig.tiny(text_dim=16, **SMALL))
    assert _same_weights(build(), by_hand)  # the same draws as seeding and building in place
    assert _same_weights(build(seed=3), build(seed=3)) and not _same_weights(build(seed=3), by_hand)
    assert build(fusion="naive").cfg.fusion == "naive"
    rgb = S.build_vita("tiny", 16, seed=0, in_chans=(("optical", 3), ("sar", 2)), **SMALL)
    assert dict(rgb.cfg.in_chans)["optical"] == 3
    assert type(S.build_vita("tiny", 16, seed=0, encoder_source="auto", **SMALL).encoder) is type(by_hand.encoder)


def test_build_vita_refuses_unknown_settings():
    with pytest.raises(ValueError, match="encoder_source"):
        S.build_vita("tiny", 16, seed=0, encoder_source="swin")
    with pytest.raises(ValueError, match="preset"):
        S.build_vita("huge", 16, seed=0)
    with pytest.raises(ValueError, match="qsacl_dir"):
        S.build_vita("tiny", 16, seed=0, encoder_source="qsacl")
    with pytest.raises(ValueError, match="text_weights"):
        S.text_encoder_for(384)


def test_retraining_runs_match_the_recipe_steps_by_hand(data, build, capsys):
    recipe = R.VITARecipe(max_steps=1, batch_size=2, seed=0, num_points=32)
    text = _HashText()
    by_hand = build(seed=1)
    R.train(by_hand, data.train_pool, text, dataclasses.replace(recipe, seed=1), progress=False, log_every=1,
            device="cpu")
    expected = R.text_name_transfer(by_hand, data.eval_targets, data.eval_prompts, text, level=1, seed=0)
    got = S.name_transfer_over_seeds(build, data.train_pool, data.eval_targets, data.eval_prompts, text, recipe, [1],
                                     level=1, eval_seed=0, device="cpu")
    np.testing.assert_equal(got, [expected])  # bit-identical (NaN: a class neither present nor predicted)

    runs = {"reference": ({}, {}), "fine_only": ({}, {"level_mode": "fine"})}
    table = S.run_ablations(build, data.train_pool, data.eval_targets, data.eval_prompts, text, recipe, steps=1,
                            level=2, runs=runs, device="cpu")
    assert list(table) == ["reference", "fine_only"] and list(table["reference"]) == [1, 2, 3]
    assert all(0.0 <= v <= 1.0 for r in table.values() for lv in r.values() for v in lv.values())
    reference = S.train_fresh(build, data.train_pool, text, recipe, device="cpu")
    np.testing.assert_equal(table["reference"][3], R.evaluate(reference, data.eval_targets, data.eval_prompts, text,
                                                              modality="optical", level=3, seed=0))
    out = capsys.readouterr().out
    assert "reference    level 2: V" in out and "fine_only    level 2" in out
    with pytest.raises(ValueError, match="level"):
        S.run_ablations(build, data.train_pool, data.eval_targets, data.eval_prompts, text, recipe, steps=1, level=4)
    with pytest.raises(ValueError, match="callable"):
        S.train_fresh(None, data.train_pool, text, recipe)


def test_prepare_real_resizes_and_fills_nir_with_green():
    rgb = np.random.default_rng(0).random((3, 20, 20), dtype=np.float32)
    sample = Sample(optical=rgb, labels=np.arange(400).reshape(20, 20) % 3)
    x4, lab = S.prepare_real(sample, 4, side=10)
    assert x4.shape == (1, 4, 10, 10) and lab.shape == (10, 10) and lab.dtype == torch.int64
    assert torch.equal(x4[0, 3], x4[0, 1]) and set(lab.unique().tolist()) <= {0, 1, 2}
    assert S.prepare_real(sample, 3, side=10)[0].shape == (1, 3, 10, 10)
    with pytest.raises(ValueError, match="optical_chans"):
        S.prepare_real(sample, 2)
    with pytest.raises(ValueError, match="labels"):
        S.prepare_real(Sample(optical=rgb), 4)


def test_oneshot_transfer_scores_every_mode_and_returns_a_gallery_row(tmp_path, build, capsys):
    from rslab.data.readers import MMSegFolder
    from rslab.viz import show_gallery

    write_tiny_dataset("loveda", tmp_path, n=3, size=32)
    samples = list(MMSegFolder(tmp_path / "loveDA", split="train", encoding="loveda"))
    tree = load_tree("loveda")
    miou, row = S.oneshot_transfer(build().eval(), _HashText(), samples, tree, side=32, name="LoveDA")
    assert list(miou) == ["V", "T", "F"] and all(0.0 <= v <= 1.0 for v in miou.values())
    assert "LoveDA one-shot (prompt image 0 -> images 1..2) mIoU" in capsys.readouterr().out
    assert row["image"].shape == (32, 32, 3) and row["pred"].shape == row["gt"].shape == (32, 32)
    show_gallery([row], tree=tree)  # a valid row of the gallery
    with pytest.raises(ValueError, match="prompt image and at least one target"):
        S.oneshot_transfer(build(), _HashText(), samples[:1], tree)
    assert S.loveda_oneshot(build(), _HashText(), None) == ({}, None)
    assert "skipping the real-data test" in capsys.readouterr().out


def test_save_vita_round_trips_weights_and_config(tmp_path, build):
    model = build()
    weights, config = S.save_vita(model, tmp_path, "tiny", "conv")
    assert weights.name == "vita_tiny.safetensors"
    loaded = load_file(str(weights))
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    saved = json.loads(config.read_text())
    assert saved["preset"] == "tiny" and saved["encoder_source"] == "conv" and saved["dim"] == 32
    with pytest.raises(ValueError, match="existing folder"):
        S.save_vita(model, tmp_path / "missing", "tiny", "conv")


def test_flat_metrics_names_every_value_in_order():
    table = {("optical", 1): {"V": 0.1, "T": 0.2}, ("sar", 1): {"F": 0.3}}
    flat = S.flat_metrics(table, {1: 0.4}, {"box": 0.5}, {"reference": {2: {"F": 0.6}}}, {"V": 0.7})
    assert list(flat.items()) == [
        ("miou_optical_V_l1", 0.1), ("miou_optical_T_l1", 0.2), ("miou_sar_F_l1", 0.3),
        ("miou_text_unseen_synonyms_l1", 0.4), ("miou_visual_prompt_box", 0.5),
        ("ablation_reference_F_l2", 0.6), ("loveda_oneshot_miou_V", 0.7)]
    assert S.flat_metrics({}, {}, {}, {}, {}) == {}
