"""Tests for rslab.recipes.coninfer_branches: notebook 05's priors and contexts on one patch grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.models import coninfer as ci
from rslab.models.backbone import BackboneConfig, UnifiedBackbone
from rslab.recipes import coninfer_branches as cb
from rslab.recipes.coninfer_fit import ValidationChoice

PATCH = 8


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(WorldConfig(size=64), seed=0)


@pytest.fixture(scope="module")
def scenes(world):
    return [world.scene(i) for i in range(3)]


@pytest.fixture(scope="module")
def branches(world, scenes):
    return stand_in_branches(world, scenes)


def stand_in_branches(world, scenes, suite=None, **kw):
    suite = suite or cb.SuiteModels("weak", "standin")
    return cb.build_branches(world, 3, PATCH, suite, scenes[:2], scenes[1:], context_options=["backbone[0]"], **kw)


def test_descriptors_and_targets_share_the_patch_grid(world, scenes):
    optical, sar_db = cb.stack_scenes(scenes)
    assert optical.shape == (3, scenes[0].optical.shape[0], 64, 64) and sar_db.shape == (3, 2, 64, 64)
    assert optical.dtype == torch.float32
    colour = cb.colour_descriptors(scenes, PATCH)
    assert colour.shape == (3, optical.shape[1], 8, 8)
    assert torch.allclose(colour[0, 0, 0, 0], optical[0, 0, :PATCH, :PATCH].mean())
    assert cb.sar_mean_descriptors(scenes, PATCH).shape == (3, 2, 8, 8)
    both, sar = cb.scene_descriptors(scenes, PATCH), cb.scene_descriptors(scenes, PATCH, sar_only=True)
    assert both.shape[1] == sar.shape[1] * (1 + optical.shape[1] / 2) and sar.shape[2:] == (8, 8)
    lut = world.tree.level_lut(3)
    k = len(world.tree.names(3))
    targets = cb.patch_targets(scenes, lut, k, PATCH)
    assert targets.shape == (3 * 64,)
    assert torch.equal(targets[:64], ci.patch_labels(lut[scenes[0].labels], PATCH, k).flatten())
    flat = cb.flatten_patches(colour)   # row i of scene 0 is patch (i // 8, i % 8), the order of the targets
    assert flat.shape == (3 * 64, colour.shape[1]) and torch.equal(flat[9], colour[0, :, 1, 1])


def test_descriptors_reject_bad_inputs():
    with pytest.raises(ValueError, match="scenes must be a non-empty list"):
        cb.stack_scenes([])
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        cb.flatten_patches(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="scenes must be"):
        cb.colour_descriptors([np.zeros((3, 8, 8))], PATCH)


def test_missing_suite_models_fall_back_to_the_stand_ins(tmp_path, capsys):
    suite = cb.load_suite_models("weak", "backbone", tmp_path, train_missing=False)
    assert (suite.prior_source, suite.context_source) == ("weak", "standin")
    assert suite.backbone is None and suite.vita is None and suite.vita_origin == "absent"
    assert suite.context_models == {"backbone": None, "encoder": None, "vita": None}
    assert "notebook 02 artifacts" in capsys.readouterr().out   # a missing file is reported, never silent
    assert "context: standin (stand-in)" in suite.summary()
    with pytest.raises(ValueError, match="prior_source must be one of"):
        cb.load_suite_models("clip", "backbone", tmp_path)
    with pytest.raises(ValueError, match="context_source must be"):
        cb.load_suite_models("weak", "", tmp_path)


def test_stand_in_branches_give_every_map_on_the_grid(world, scenes, branches):
    assert branches.grid == (8, 8) and branches.contexts_here == [] and not branches.registry_context
    optical, sar_db = cb.stack_scenes(scenes)
    scores, contexts = branches.maps(scenes, optical, sar_db)
    assert list(scores) == ["weak"] and list(contexts) == ["standin"]
    k = len(world.tree.names(3))
    assert scores["weak"].shape == (3, k, 8, 8) and torch.allclose(scores["weak"].exp().sum(1), torch.ones(3, 8, 8))
    assert contexts["standin"].shape == (3, 64, 8, 8)   # the stand-in encoder's hidden layer
    with pytest.raises(ValueError, match="must hold the 3 scenes"):
        branches.maps(scenes, optical[:2], sar_db)
    again = stand_in_branches(world, scenes)   # seeded stand-ins: the same maps
    assert torch.equal(again.maps(scenes, optical, sar_db)[0]["weak"], scores["weak"])


def test_large_scene_and_sar_branches_with_stand_ins(world, scenes, branches):
    big = world.large_scene(256, index=0)
    cfg = ci.ConInferConfig(n_iter=2, standardize=True)
    result = branches.refine_large_scene(big, 128, cfg, {"weak": 0.5}, "standin")
    k = len(world.tree.names(3))
    assert result.probs.shape == (k, 256, 256) and len(result.positions) == 4
    assert result.result.z.shape == (4 * 16 * 16, k)   # one mixture over every tile's patches
    with pytest.raises(ValueError, match="multiple of patch"):
        branches.refine_large_scene(big, 124, cfg, {"weak": 0.5}, "standin")
    with pytest.raises(ValueError, match="no entry for the prior"):
        branches.tile_prior(torch.zeros(1, 6, 64, 64), {"text": 1.0}, 4)
    optical, sar_db = cb.stack_scenes(scenes)
    scores, _ = branches.maps(scenes, optical, sar_db)
    choice = ValidationChoice({"weak": 0.5}, [], {}, {}, None)
    prior, prior_source, feats, context_source = branches.sar_branches(scenes, sar_db, scores, choice, "standin")
    assert (prior_source, context_source) == ("weak", "standin")
    assert prior.shape == (3, k, 8, 8) and feats.shape == (3, 64, 8, 8)


def test_suite_backbone_context_on_scenes_and_tiles(world, scenes):
    torch.manual_seed(0)
    backbone = UnifiedBackbone(BackboneConfig.tiny(depths=(1, 1, 1, 1))).eval()
    suite = cb.SuiteModels("weak", "backbone", backbone=backbone)
    branches = stand_in_branches(world, scenes, suite=suite)
    assert branches.contexts_here == ["backbone[0]"]
    optical, sar_db = cb.stack_scenes(scenes)
    _, contexts = branches.maps(scenes, optical, sar_db)
    assert set(contexts) == {"standin", "backbone[0]"} and contexts["backbone[0]"].shape[2:] == (8, 8)
    image = torch.cat([optical[0], torch.from_numpy(cb.normalize_sar(scenes[0].sar).astype(np.float32))])
    tiled = branches.tile_features(image[None], "backbone[0]", optical.shape[1])
    assert torch.allclose(tiled, contexts["backbone[0]"][:1], atol=1e-5)   # one tile = the scene: the same map
    choice = ValidationChoice({"weak": 0.5}, [], {}, {}, None)
    *_, feats, source = branches.sar_branches(scenes, sar_db, {}, choice, "backbone[0]")
    assert source == "sar:backbone[0]" and feats.shape[2:] == (8, 8)
