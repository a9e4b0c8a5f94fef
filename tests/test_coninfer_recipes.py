"""Tests for rslab.recipes.coninfer: ConInfer's branches built from the suite's own models."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from rslab.metrics import zero_shot_predict
from rslab.models.alignment import save_encoder
from rslab.models.backbone import BackboneConfig, UnifiedBackbone
from rslab.models.encoders import ImageEncoder, ImageEncoderConfig, preprocess_optical
from rslab.recipes import coninfer as rc


def tiny_encoder(in_chans: int = 4, out_dim: int = 16, seed: int = 0) -> ImageEncoder:
    torch.manual_seed(seed)
    cfg = ImageEncoderConfig.tiny(in_chans, embed_dim=32, depth=1, num_heads=2, img_size=32, out_dim=out_dim)
    return ImageEncoder(cfg).eval()


def classes(k: int = 5, d: int = 16, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(k, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_text_prior_is_a_distribution_on_the_token_grid():
    enc, emb = tiny_encoder(), classes()
    x = torch.rand(3, 4, 32, 48)
    p = rc.text_prior_maps(enc, x, emb, temperature=0.05, batch_size=2)
    assert p.shape == (3, 5, 4, 6)                       # patch 8 -> 32/8 x 48/8 tokens
    assert torch.allclose(p.sum(1), torch.ones(3, 4, 6), atol=1e-5)
    assert (p >= 0).all()


def test_text_prior_one_token_matches_image_level_zero_shot():
    """With one token, GAP is that token, so the dense prior's argmax is the image-level zero-shot class."""
    enc, emb = tiny_encoder(), classes()
    x = torch.rand(6, 4, 8, 8)
    p = rc.text_prior_maps(enc, x, emb, temperature=0.1)
    with torch.no_grad():
        image_emb = enc(preprocess_optical(x)).embedding
    assert torch.equal(p[:, :, 0, 0].argmax(1), zero_shot_predict(image_emb, emb))


def test_text_prior_temperature_sharpens_without_changing_argmax():
    enc, emb = tiny_encoder(), classes()
    x = torch.rand(2, 4, 32, 32)
    hot, cold = (rc.text_prior_maps(enc, x, emb, temperature=t) for t in (1.0, 0.01))
    assert torch.equal(hot.argmax(1), cold.argmax(1))
    assert (cold.max(1).values >= hot.max(1).values - 1e-6).all()
    assert cold.max(1).values.mean() > hot.max(1).values.mean() + 0.1


def test_text_prior_on_sar_with_nodata_is_finite():
    enc, emb = tiny_encoder(in_chans=2), classes()
    sar = torch.full((2, 2, 16, 16), -12.0)
    sar[0, :, :8, :8] = float("nan")
    p = rc.text_prior_maps(enc, sar, emb, modality="sar")
    assert p.shape == (2, 5, 2, 2) and torch.isfinite(p).all()


def test_text_prior_rejects_bad_inputs():
    enc, emb = tiny_encoder(), classes()
    with pytest.raises(ValueError, match="class_embeddings"):
        rc.text_prior_maps(enc, torch.rand(1, 4, 16, 16), classes(d=8))
    with pytest.raises(ValueError, match="temperature"):
        rc.text_prior_maps(enc, torch.rand(1, 4, 16, 16), emb, temperature=0)
    with pytest.raises(ValueError, match="modality"):
        rc.text_prior_maps(enc, torch.rand(1, 4, 16, 16), emb, modality="lidar")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        rc.text_prior_maps(enc, torch.rand(4, 16, 16), emb)


def test_backbone_context_maps_pool_the_chosen_stages():
    torch.manual_seed(0)
    bb = UnifiedBackbone(BackboneConfig.tiny(depths=(1, 1, 1, 1))).eval()
    x = torch.rand(2, 4, 64, 64)
    f = rc.backbone_context_maps(bb, x, "optical", (4, 4), stages=(1, 3), gsd=1.0)
    with torch.no_grad():
        feats = bb(x, "optical", 1.0)
    assert f.shape == (2, feats[1].shape[1] + feats[3].shape[1], 4, 4)
    expected = torch.cat([F.adaptive_avg_pool2d(feats[1], 4), F.adaptive_avg_pool2d(feats[3], 4)], 1)
    assert torch.allclose(f, expected, atol=1e-5)
    up = rc.backbone_context_maps(bb, x, "optical", (32, 32), stages=(3,), gsd=1.0)   # finer grid: upsampled
    assert up.shape == (2, feats[3].shape[1], 32, 32)
    with pytest.raises(ValueError, match="stages"):
        rc.backbone_context_maps(bb, x, "optical", (4, 4), stages=(4,))
    with pytest.raises(ValueError, match="grid"):
        rc.backbone_context_maps(bb, x, "optical", (0, 4))


def test_loading_notebook_artifacts_round_trips(tmp_path):
    from rslab.models.backbone import load_backbone, save_backbone

    with pytest.raises(FileNotFoundError, match="01_sar_alignment"):
        rc.load_alignment_encoders(tmp_path)
    with pytest.raises(FileNotFoundError, match="02_qsacl_pretraining"):
        load_backbone(tmp_path)
    assert rc.artifact_profile(tmp_path) is None

    opt, sar = tiny_encoder(), tiny_encoder(in_chans=2, seed=1)
    save_encoder(opt, tmp_path / "optical_encoder")
    save_encoder(sar, tmp_path / "sar_encoder")
    loaded = rc.load_alignment_encoders(tmp_path)
    x = torch.rand(1, 4, 16, 16)
    assert torch.equal(rc.text_prior_maps(loaded["optical"], x, classes()), rc.text_prior_maps(opt, x, classes()))

    torch.manual_seed(0)
    cfg = BackboneConfig.tiny(depths=(1, 1, 1, 1))
    bb = UnifiedBackbone(cfg).eval()
    save_backbone(bb, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("backbone")) == [
        "backbone_config.json", "backbone_qsacl.safetensors"]  # no temporary file left behind
    (tmp_path / "results.json").write_text(json.dumps({"profile": "smoke", "metrics": {}}))
    again = load_backbone(tmp_path)
    y = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(y, "optical")[3], bb(y, "optical")[3])
    assert rc.artifact_profile(tmp_path) == "smoke"


def test_pretrain_backbone_validates_its_budget():
    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.recipes.qsacl import pretrain_config

    with pytest.raises(ValueError, match="TrainConfig"):
        rc.pretrain_backbone(SyntheticWorld(WorldConfig(size=64)), 30)
    with pytest.raises(ValueError, match="n_scenes"):
        rc.pretrain_backbone(SyntheticWorld(WorldConfig(size=64)), pretrain_config(1), n_scenes=1)
    small_world = SimpleNamespace(config=SimpleNamespace(size=32, gsd_m=1.0))
    with pytest.raises(ValueError, match="64 px"):
        rc.pretrain_backbone(small_world, pretrain_config(1))


def test_train_alignment_encoders_gives_text_space_encoders():
    """Notebook 01's recipe on a one-step budget: both encoders project into MiniLM's 384-d space
    and plug into the text prior; the SAR encoder is a new 2-channel tower."""
    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.models.encoders import MiniLMTextEncoder

    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    text = MiniLMTextEncoder()
    enc = rc.train_alignment_encoders(world, rc.small_budget(1), lit=rc.small_budget(1), n_train=8, batch_size=4,
                                      text_encoder=text)
    assert enc["optical"].cfg.in_chans == 4 and enc["sar"].cfg.in_chans == 2
    assert enc["optical"].cfg.out_dim == enc["sar"].cfg.out_dim == text.dim
    emb = text.prompt_embeddings(["water", "forest"])
    s = world.scene(100)
    p = rc.text_prior_maps(enc["sar"], torch.from_numpy(s.sar)[None], emb, modality="sar")
    assert p.shape == (1, 2, 8, 8) and torch.allclose(p.sum(1), torch.ones(1, 8, 8), atol=1e-5)
    with pytest.raises(ValueError, match="n_train"):
        rc.train_alignment_encoders(world, rc.small_budget(1), lit=rc.small_budget(1), n_train=2, batch_size=4,
                                    text_encoder=text)
    with pytest.raises(ValueError, match="TrainConfig"):
        rc.train_alignment_encoders(world, 60, n_train=8, batch_size=4, text_encoder=text)


def test_backbone_stage_maps_give_every_stage_from_one_pass():
    torch.manual_seed(0)
    bb = UnifiedBackbone(BackboneConfig.tiny(depths=(1, 1, 1, 1))).eval()
    x = torch.rand(3, 4, 64, 64)
    maps = rc.backbone_stage_maps(bb, x, "optical", (8, 8), gsd=1.0, batch_size=2)
    assert len(maps) == 4 and all(m.shape[0] == 3 and m.shape[2:] == (8, 8) for m in maps)
    both = rc.backbone_context_maps(bb, x, "optical", (8, 8), stages=(0, 2), gsd=1.0)
    assert torch.allclose(both, torch.cat([maps[0], maps[2]], 1), atol=1e-5)
    assert bb.training is False
    with pytest.raises(ValueError, match="batch_size"):
        rc.backbone_stage_maps(bb, x, "optical", (8, 8), batch_size=0)


def test_context_helpers_shapes_keys_and_errors():
    from rslab.models.backbone import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    optical, sar = torch.rand(2, 4, 64, 64), torch.rand(2, 2, 64, 64) * 2 - 1
    inputs = {"optical": optical, "sar": sar}
    sets = rc.build_contexts(["backbone[0]", "backbone[0,3]"], inputs, (8, 8), backbone=backbone, gsd=1.0)
    sets.update({"sar_" + k: v
                 for k, v in rc.build_contexts(["backbone[0]", "backbone[0,3]"], inputs, (8, 8),
                                               backbone=backbone, modalities=["sar"], gsd=1.0).items()})
    assert set(sets) == {"backbone[0]", "sar_backbone[0]", "backbone[0,3]", "sar_backbone[0,3]"}
    c0 = sets["sar_backbone[0]"].shape[1]
    assert sets["backbone[0]"].shape == (2, 2 * c0, 8, 8)
    assert torch.equal(sets["backbone[0]"][:, c0:], sets["sar_backbone[0]"])  # optical first, then SAR
    with pytest.raises(ValueError, match="no input images"):
        rc.build_contexts(["backbone[0]"], {"optical": optical}, (8, 8), backbone=backbone, modalities=["sar"])
    with pytest.raises(ValueError, match="stage indices"):
        rc.build_contexts(["backbone[4]"], {"optical": optical}, (8, 8), backbone=backbone, modalities=["optical"])
    resized = rc.to_grid({"a": torch.rand(1, 3, 4, 4), "b": torch.rand(1, 2, 8, 8)}, (8, 8))
    assert resized["a"].shape == (1, 3, 8, 8) and resized["b"].shape == (1, 2, 8, 8)


def test_load_or_train_prefers_files_then_training_then_stand_in(tmp_path, capsys):
    def load(directory):
        if not (directory / "weights").exists():
            raise FileNotFoundError(f"{directory / 'weights'} not found")
        return "loaded"

    assert rc.load_or_train(load, tmp_path, "01") == (None, "stand-in")
    assert "notebook 01 artifacts" in capsys.readouterr().out  # the missing file is reported
    assert rc.load_or_train(load, tmp_path, "01", train=lambda: "trained", trained_note="3 steps") == (
        "trained", "trained here (3 steps)")
    (tmp_path / "weights").touch()
    model, origin = rc.load_or_train(load, tmp_path, "01", train=lambda: "trained")
    assert model == "loaded" and origin.startswith(f"loaded from {tmp_path} (notebook 01")


def _tiny_vita():
    from rslab.models import vita as V

    torch.manual_seed(0)
    return V.VITA(V.VITAConfig.tiny(dim=32, heads=2, ffn_dim=32, encoder_widths=(8, 16, 16))).eval()


def test_vita_round_trip_and_context_maps(tmp_path):
    import dataclasses

    from safetensors.torch import save_file

    model = _tiny_vita()
    with pytest.raises(FileNotFoundError, match="03_vita_sga"):
        rc.load_vita(tmp_path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "vita_tiny.safetensors"))
    (tmp_path / "vita_config.json").write_text(json.dumps({"preset": "tiny", "encoder_source": "conv",
                                                           **dataclasses.asdict(model.cfg)}))
    loaded = rc.load_vita(tmp_path)
    x = torch.rand(3, 4, 64, 64)
    a = rc.vita_context_maps(model, x, "optical", (8, 8), batch_size=2)
    b = rc.vita_context_maps(loaded, x, "optical", (8, 8))
    assert a.shape == (3, 32, 8, 8) and torch.allclose(a, b, atol=1e-5)
    _, mask_features = model.features(x, "optical")           # stride 4: 16 x 16, pooled 2 x 2 onto 8 x 8
    assert torch.allclose(a, F.avg_pool2d(mask_features, 2), atol=1e-5)
    f4 = rc.vita_context_maps(model, x, "optical", (8, 8), level=0)
    assert torch.allclose(f4, F.avg_pool2d(model.encoder(x, "optical")[0], 2), atol=1e-5)
    assert rc.vita_context_maps(model, x, "optical", (8, 8), level=2).shape == (3, 16, 8, 8)  # 4 x 4 upsampled
    with pytest.raises(ValueError, match="grid"):
        rc.vita_context_maps(model, x, "optical", (0, 8))
    with pytest.raises(ValueError, match="level"):
        rc.vita_context_maps(model, x, "optical", (8, 8), level=3)


def test_build_contexts_joins_parts_once_and_checks_models():
    from rslab.models.backbone import build_backbone

    torch.manual_seed(0)
    backbone, vita, enc = build_backbone("tiny"), _tiny_vita(), tiny_encoder(out_dim=16)
    enc_inputs = {"optical": torch.rand(2, 4, 64, 64), "sar": torch.rand(2, 2, 64, 64) * 2 - 1}
    out = rc.build_contexts(["backbone[0]", "vita", "vita+backbone[0]", "text_tokens+backbone[0]"], enc_inputs,
                            (8, 8), backbone=backbone, encoder=enc, vita=vita, gsd=1.0)
    c0 = backbone.out_channels[0]
    assert out["backbone[0]"].shape == (2, 2 * c0, 8, 8)
    assert out["vita"].shape == (2, 2 * 32, 8, 8)
    assert torch.equal(out["vita+backbone[0]"], torch.cat([out["vita"], out["backbone[0]"]], 1))
    early = rc.build_contexts(["vita_encoder[0]+backbone[0]"], enc_inputs, (8, 8), backbone=backbone, vita=vita,
                              gsd=1.0)["vita_encoder[0]+backbone[0]"]
    assert early.shape == (2, 2 * 8 + 2 * c0, 8, 8)                # encoder width 8 per sensor, then the backbone
    assert out["text_tokens+backbone[0]"].shape == (2, enc.cfg.embed_dim + 2 * c0, 8, 8)
    sar_only = rc.build_contexts(["text_tokens+backbone[0]"], enc_inputs, (8, 8), backbone=backbone, encoder=enc,
                                 modalities=["sar"], gsd=1.0)["text_tokens+backbone[0]"]
    assert torch.equal(sar_only, out["backbone[0]"][:, c0:])      # optical-only tokens drop out for SAR
    with pytest.raises(ValueError, match="needs notebook 03"):
        rc.build_contexts(["vita"], enc_inputs, (8, 8))
    with pytest.raises(ValueError, match="unknown context part"):
        rc.build_contexts(["dino"], enc_inputs, (8, 8), backbone=backbone)
    with pytest.raises(ValueError, match="no input images"):
        rc.build_contexts(["backbone[0]"], {"optical": enc_inputs["optical"]}, (8, 8), backbone=backbone,
                          modalities=["sar"])


def test_available_contexts_keeps_keys_whose_models_are_present():
    keys = ["backbone[0]", "text_tokens+backbone[0]", "vita_encoder[0]+backbone[0]", "vita", "dino"]
    assert rc.available_contexts(keys, backbone=object()) == ["backbone[0]"]
    assert rc.available_contexts(keys, backbone=object(), encoder=object(), vita=object()) == keys[:4]
    assert rc.available_contexts(keys, vita=object()) == ["vita"]
