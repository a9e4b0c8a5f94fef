"""SkySense-VITA stage 1: frozen optical encoder, SAR training, evaluation helpers, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rslab.data.augment import SARViewAugment
from rslab.data.pairs import check_pairs
from rslab.losses.contrastive import ImageAlignmentLoss
from rslab.metrics import retrieval_scores, zero_shot_accuracy
from rslab.models.alignment import (
    AlignmentConfig,
    OpticalTextModel,
    SARAlignmentModel,
    embed_optical,
    embed_sar,
    load_encoder,
    save_encoder,
)
from rslab.models.encoders import ImageEncoder, ImageEncoderConfig
from rslab.recipes.alignment import train_locked_text, train_sar_alignment
from rslab.train import TrainConfig
from rslab.viz import pca_2d

TINY = dict(embed_dim=32, depth=1, num_heads=2, img_size=16, out_dim=16)


def toy_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-registered toy pairs of 4 "classes" (the brightest optical channel) with smooth random
    content; SAR is a fixed per-pixel function of the optical image. Returns optical, sar, class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    coarse = 0.5 * torch.rand(n, 4, 4, 4, generator=g)
    coarse[torch.arange(n), labels] += 0.5
    optical = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    sar = torch.stack([optical[:, 3] * 20 - 25 - 5 * optical[:, 1], optical[:, 0] * 15 - 28 + 5 * optical[:, 2]], dim=1)
    return optical, sar, labels


def test_optical_encoder_is_frozen_and_stays_in_eval_mode():
    model = SARAlignmentModel(ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY)),
                              ImageEncoderConfig(in_chans=2, **TINY))
    model.train()
    assert model.sar.training and not model.optical.training
    assert all(not p.requires_grad for p in model.optical.parameters())
    assert all(p.requires_grad for p in model.sar.parameters())
    optical, sar, _ = toy_pairs(3, 0)
    out = model(optical, sar, sar)
    assert out["f_opt"].shape == out["f_sar_a"].shape == out["f_sar_b"].shape == (3, 16)
    assert not out["f_opt"].requires_grad and out["f_sar_a"].requires_grad


def test_model_and_config_reject_mismatches():
    opt = ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY))
    with pytest.raises(ValueError, match="in_chans=2"):
        SARAlignmentModel(opt, ImageEncoderConfig(in_chans=3, **TINY))
    with pytest.raises(ValueError, match="out_dim"):
        SARAlignmentModel(opt, ImageEncoderConfig(in_chans=2, **{**TINY, "out_dim": 8}))
    with pytest.raises(ValueError, match="same optical-text space"):
        AlignmentConfig(ImageEncoderConfig.tiny(4), ImageEncoderConfig.tiny(2, out_dim=128))
    model = SARAlignmentModel(opt, ImageEncoderConfig(in_chans=2, **TINY))
    with pytest.raises(ValueError, match="co-registered"):
        model(torch.rand(2, 4, 16, 16), torch.rand(2, 2, 24, 24))
    with pytest.raises(ValueError, match="sar must be"):
        model(None, torch.rand(2, 4, 16, 16))


def test_check_pairs():
    optical, sar, _ = toy_pairs(4, 0)
    sar[1] = float("nan")  # a tile that is all nodata
    sar[2, :, :4] = float("nan")  # a quarter nodata: kept, masked in the encoder
    assert check_pairs(optical, sar).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="2 channels"):
        check_pairs(optical, optical)
    with pytest.raises(ValueError, match="co-registered"):
        check_pairs(optical, sar[:, :, :8])
    with pytest.raises(ValueError, match="co-registered"):
        check_pairs(optical[:3], sar)
    bad = optical.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="optical contains NaN"):
        check_pairs(bad, sar)


def test_sar_inherits_zero_shot_text_classification_from_the_frozen_optical_space():
    """The notebook's point in miniature: optical is tuned against fixed "text" vectors, frozen,
    then SAR is aligned to it with L_img and classifies held-out pairs by text without ever
    having seen a text."""
    torch.manual_seed(0)
    optical, sar, labels = toy_pairs(256, seed=1)
    sar[5] = float("nan")  # an all-nodata tile: dropped, never trained on
    test_opt, test_sar, test_labels = toy_pairs(64, seed=2)  # held-out pairs
    text = F.normalize(torch.randn(4, 16), dim=-1)  # one fixed "prompt" vector per class
    optical_model = OpticalTextModel(ImageEncoderConfig(in_chans=4, **TINY))
    train_locked_text(optical_model, optical, text[labels], TrainConfig(max_steps=40, lr=3e-3, progress=False),
                      texts=[str(c) for c in labels.tolist()], batch_size=32, crop=None)
    assert zero_shot_accuracy(embed_optical(optical_model.encoder, test_opt), text, test_labels)["acc"] > 0.9

    before_opt = {k: v.clone() for k, v in optical_model.encoder.state_dict().items()}
    model = SARAlignmentModel(optical_model.encoder, ImageEncoderConfig(in_chans=2, **TINY))
    acc_before = zero_shot_accuracy(embed_sar(model.sar, test_sar), text, test_labels)["acc"]
    f_opt = embed_optical(model.optical, test_opt)
    r5_before = retrieval_scores(embed_sar(model.sar, test_sar), f_opt)[5]
    history = train_sar_alignment(
        model, optical, sar, ImageAlignmentLoss(lambda_cl=0.5, lambda_cma=1.0),
        TrainConfig(max_steps=60, lr=3e-3, warmup_steps=5, progress=False, log_every=20),
        batch_size=32, augment=SARViewAugment(crop=None, looks=(8.0, 16.0), max_offset_db=0.5),
    )
    f_sar = embed_sar(model.sar, test_sar)
    acc_after = zero_shot_accuracy(f_sar, text, test_labels)["acc"]
    r5_after = retrieval_scores(f_sar, f_opt)[5]
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"loss_cl", "loss_cma"} <= set(history[-1])
    assert acc_before < 0.5 and acc_after > 0.75, (acc_before, acc_after)  # chance: 0.25
    assert r5_after > r5_before + 0.1, (r5_before, r5_after)
    for k, v in model.optical.state_dict().items():
        assert torch.equal(v, before_opt[k]), f"frozen optical weight {k} changed"


def test_locked_text_tuning_reaches_its_text_targets():
    torch.manual_seed(0)
    optical, _, labels = toy_pairs(64, seed=3)
    text = F.normalize(torch.randn(4, 16), dim=-1)
    model = OpticalTextModel(ImageEncoderConfig(in_chans=4, **TINY))
    acc_before = zero_shot_accuracy(embed_optical(model.encoder, optical), text, labels)["acc"]
    history = train_locked_text(
        model, optical, text[labels], TrainConfig(max_steps=30, lr=3e-3, progress=False, log_every=10),
        texts=[str(c) for c in labels.tolist()], batch_size=16, crop=8,
    )
    acc = zero_shot_accuracy(embed_optical(model.encoder, optical), text, labels)["acc"]
    assert acc > 0.9 and acc_before < 0.6, (acc_before, acc)
    assert history[-1]["loss"] < history[0]["loss"] and "temperature" in history[-1]
    with pytest.raises(ValueError, match="one text set per image"):
        train_locked_text(model, optical, text[labels][:10], TrainConfig(max_steps=1, progress=False))


def test_evaluation_helpers_hand_computed():
    e = torch.eye(4)
    assert retrieval_scores(e, e, ks=(1,)) == {1: 1.0}
    shifted = e[[1, 2, 3, 0]]  # query i matches gallery i+1: rank of the true match is >= 1
    assert retrieval_scores(shifted, e, ks=(1, 5)) == {1: 0.0, 5: 1.0}
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    images = torch.tensor([[0.9, 0.1], [0.8, 0.3], [0.1, 0.9], [0.7, 0.2]])
    # predictions 0, 0, 1, 0 against targets 0, 1, 1, 1: acc 2/4, per-class recall (1/1 + 1/3) / 2
    got = zero_shot_accuracy(images, classes, torch.tensor([0, 1, 1, 1]))
    assert got["acc"] == pytest.approx(0.5) and got["balanced_acc"] == pytest.approx(2 / 3)
    a, b = pca_2d(torch.randn(5, 8), torch.randn(3, 8))
    assert a.shape == (5, 2) and b.shape == (3, 2)
    assert abs((a.sum(0) + b.sum(0))).max() < 1e-4  # one PCA on the union: jointly centred


def test_embed_sar_masks_nodata():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig(in_chans=2, **TINY))
    _, sar, _ = toy_pairs(2, 0)
    holed = sar.clone()
    holed[:, :, :8] = float("nan")  # top half nodata
    cropped_view = sar.clone()
    cropped_view[:, :, :8] = -99.0  # anything: the top half must not matter once masked
    e_holed = embed_sar(enc, holed)
    assert torch.isfinite(e_holed).all()
    valid = torch.zeros(2, 16, 16, dtype=torch.bool)
    valid[:, 8:] = True
    from rslab.models.encoders import preprocess_sar

    x, _ = preprocess_sar(holed)
    torch.testing.assert_close(e_holed, F.normalize(enc(x, valid=valid).embedding, dim=-1))


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig(in_chans=2, **TINY)).eval()
    path = save_encoder(enc, tmp_path / "sar_encoder")
    assert path.name == "sar_encoder.safetensors" and (tmp_path / "sar_encoder.json").is_file()
    loaded = load_encoder(tmp_path / "sar_encoder")
    assert loaded.cfg == enc.cfg
    x = torch.randn(2, 2, 16, 16)
    torch.testing.assert_close(loaded(x).embedding, enc(x).embedding)
    with pytest.raises(FileNotFoundError, match="01_sar_alignment"):
        load_encoder(tmp_path / "missing")


def test_data_helpers_on_the_synthetic_world():
    import numpy as np

    from rslab.data.pairs import balanced_scenes, dominant_class, pairs_to_tensors, tile_pairs
    from rslab.data.sample import Sample
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    tree = world.tree
    labels = np.full((4, 4), 255)
    labels[:3] = tree.find("river").leaf_id
    labels[3] = tree.find("car").leaf_id
    assert tree.names(2)[dominant_class(labels, tree, 2)] == "river"
    assert tree.names(1)[dominant_class(labels, tree, 1)] == "water"

    samples, targets = balanced_scenes(world, ["bare soil", "road"], per_class=2, level=2, start=1000)
    assert targets.tolist() == [0, 0, 1, 1]
    assert [tree.names(2)[dominant_class(s.labels, tree, 2)] for s in samples] == ["bare soil"] * 2 + ["road"] * 2
    assert all(s.meta["index"] >= 1000 for s in samples)
    optical, sar = pairs_to_tensors(samples)
    assert optical.shape == (4, 4, 64, 64) and sar.shape == (4, 2, 64, 64)
    with pytest.raises(ValueError, match="lack an optical or SAR"):
        pairs_to_tensors([Sample(optical=samples[0].optical)])

    big = Sample(optical=np.random.rand(13, 40, 40).astype(np.float32),
                 sar=np.random.rand(2, 40, 40).astype(np.float32), labels=np.zeros((40, 40), dtype=np.int64))
    tiles = tile_pairs(big, 16, optical_bands=(3, 2, 1, 7))
    assert tiles["optical"].shape == (4, 4, 16, 16) and tiles["sar"].shape == (4, 2, 16, 16)
    assert tiles["origin"].tolist() == [[0, 0], [0, 16], [16, 0], [16, 16]]
    np.testing.assert_array_equal(tiles["optical"][3].numpy(), big.optical[[3, 2, 1, 7], 16:32, 16:32])
    with pytest.raises(ValueError, match="tile must be"):
        tile_pairs(big, 64)


def test_view_term_makes_the_optical_embedding_see_through_colour():
    """The image-image term of train_locked_text (second view = the same ground recoloured) must pull
    an image and its recoloured copy together, closer than other images of its class; LiT alone
    (text targets are per class) cannot tell images of one class apart."""
    from rslab.data.augment import colour_jitter

    torch.manual_seed(0)
    optical, _, labels = toy_pairs(64, seed=4)
    text = F.normalize(torch.randn(4, 16), dim=-1)
    recoloured = colour_jitter(optical, 0.3)
    same_class_other = (labels[:, None] == labels[None, :]) & ~torch.eye(64, dtype=torch.bool)
    gap = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = OpticalTextModel(ImageEncoderConfig(in_chans=4, **TINY))
        history = train_locked_text(
            model, optical, text[labels], TrainConfig(max_steps=60, lr=3e-3, progress=False, log_every=10),
            batch_size=32, crop=None, view_weight=weight, optical_other=recoloured,
        )
        sim = embed_optical(model.encoder, recoloured) @ embed_optical(model.encoder, optical).T
        gap[weight] = float(sim.diag().mean() - sim[same_class_other].mean())
    assert "loss_view" in history[-1] and "loss_text" in history[-1]
    assert history[-1]["loss_view"] < history[0]["loss_view"] - 0.1
    assert gap[1.0] > gap[0.0] + 0.03, gap  # measured: about 0.004 without the term, 0.06-0.08 with it
    with pytest.raises(ValueError, match="optical_other must match"):
        train_locked_text(model, optical, text[labels], TrainConfig(max_steps=1, progress=False),
                          view_weight=1.0, optical_other=optical[:3])
    with pytest.raises(ValueError, match="view_weight"):
        train_locked_text(model, optical, text[labels], TrainConfig(max_steps=1, progress=False), view_weight=-1.0)


def test_colour_jitter_bounds_and_validation():
    from rslab.data.augment import colour_jitter

    x = torch.rand(3, 4, 8, 8)
    y = colour_jitter(x, 0.5)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)
    assert torch.equal(colour_jitter(x, 0.0), x)
    with pytest.raises(ValueError, match="strength"):
        colour_jitter(x, 1.5)
    with pytest.raises(ValueError, match="B, C, H, W"):
        colour_jitter(x[0], 0.1)


def test_sar_encoder_can_start_from_the_optical_blocks():
    optical = ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY))
    model = SARAlignmentModel(optical, ImageEncoderConfig(in_chans=2, **TINY), init_from_optical=True)
    assert torch.equal(model.sar.blocks[0].attn.qkv.weight, optical.blocks[0].attn.qkv.weight)
    assert model.sar.blocks[0].attn.qkv.weight is not optical.blocks[0].attn.qkv.weight
    assert model.sar.tokenizer is not None and not any(p.requires_grad for p in model.optical.parameters())
    with pytest.raises(ValueError, match="embed_dim"):
        SARAlignmentModel(optical, ImageEncoderConfig(in_chans=2, **{**TINY, "embed_dim": TINY["embed_dim"] * 2}),
                          init_from_optical=True)


def test_restyled_scenes_keep_the_ground_and_change_the_colours():
    import numpy as np

    from rslab.data.pairs import restyled_scenes
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    samples = [world.scene(i) for i in range(4)]
    other = restyled_scenes(world, samples)
    for a, b in zip(samples, other):
        assert np.array_equal(a.labels, b.labels) and a.meta["style"] != b.meta["style"]
        assert not np.allclose(a.optical, b.optical)
    assert [b.meta["style"] for b in restyled_scenes(world, samples, offset=1)] == [
        (a.meta["style"] + 1) % world.config.n_styles for a in samples]
    with pytest.raises(ValueError, match="every style to itself"):
        restyled_scenes(world, samples, offset=world.config.n_styles)
    with pytest.raises(ValueError, match="at least 2 styles"):
        restyled_scenes(SyntheticWorld(WorldConfig(size=64, n_styles=1), seed=0), samples)


def test_scene_texts_caption_then_every_template_and_synonym():
    from rslab.data.pairs import dominant_class
    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.models.alignment import scene_texts
    from rslab.models.encoders import DEFAULT_TEMPLATES

    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    sample = world.scene(0)
    (texts,) = scene_texts([sample], world.tree, level=2)
    names = world.tree.synonyms(world.tree.nodes(2)[dominant_class(sample.labels, world.tree, 2)], "train")
    assert texts[0] == sample.caption and len(texts) == 1 + len(names) * len(DEFAULT_TEMPLATES)
    assert texts[1] == DEFAULT_TEMPLATES[0].format(names[0])


def test_layout_captions_state_shares_and_places():
    import numpy as np

    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.data.synthetic_text import make_layout_caption
    from rslab.models.alignment import scene_texts

    tree = SyntheticWorld(WorldConfig(size=64), seed=0).tree
    river, crop = tree.find("river").leaf_id, tree.find("cropland").leaf_id
    labels = np.full((30, 30), crop)
    labels[:10, :10] = river  # the north-west ninth
    rng = np.random.default_rng(0)
    text = make_layout_caption(labels, tree, rng)
    crop_names = [n.replace(" parcel", "") for n in tree.synonyms("cropland")]
    river_names = tree.synonyms("river")
    first, places = text.split(". ", 1)
    assert first.startswith("About 90 percent ") and "about 10 percent" in first
    assert any(f"{n} in the north-west." in places for n in river_names), text
    assert any(f"{n} in the north, north-east, west, centre, east, south-west, south and south-east" in places.lower()
               for n in crop_names), text
    held = make_layout_caption(labels, tree, rng, split="heldout")
    assert not any(n in held for n in river_names) and any(n in held for n in tree.synonyms("river", "heldout"))
    labels[:] = crop
    assert "throughout" in make_layout_caption(labels, tree, rng)
    with pytest.raises(ValueError, match="leaf ids"):
        make_layout_caption(np.full((9, 9), 99), tree, rng)
    with pytest.raises(ValueError, match="2-D"):
        make_layout_caption(np.zeros(9, dtype=int), tree, rng)
    sample = SyntheticWorld(WorldConfig(size=64), seed=0).scene(0)
    base = scene_texts([sample], tree)[0]
    (texts,) = scene_texts([sample], tree, layout_captions=3)
    assert texts[: len(base)] == base and len(texts) == len(base) + 3
    assert all("percent" in t for t in texts[len(base):])


def test_optical_bank_alignment_trains_sar_only_and_retrieves():
    torch.manual_seed(0)
    optical, sar, labels = toy_pairs(128, seed=1)
    opt_enc = ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY))
    before_opt = {k: v.clone() for k, v in opt_enc.state_dict().items()}
    model = SARAlignmentModel(opt_enc, ImageEncoderConfig(in_chans=2, **TINY))
    test_opt, test_sar, _ = toy_pairs(32, seed=2)
    f_opt = embed_optical(model.optical, test_opt)
    r5_before = retrieval_scores(embed_sar(model.sar, test_sar), f_opt)[5]
    history = train_sar_alignment(
        model, optical, sar, ImageAlignmentLoss(lambda_cl=0.25, lambda_cma=1.0),
        TrainConfig(max_steps=40, lr=3e-3, warmup_steps=5, progress=False, log_every=10),
        batch_size=32, augment=SARViewAugment(crop=8, looks=(8.0, 16.0), max_offset_db=0.5), optical_bank=True,
    )
    r5_after = retrieval_scores(embed_sar(model.sar, test_sar), f_opt)[5]
    assert {"loss_cl", "loss_cma"} <= set(history[-1]) and history[-1]["loss"] < history[0]["loss"]
    assert r5_after > r5_before + 0.1, (r5_before, r5_after)
    for k, v in model.optical.state_dict().items():
        assert torch.equal(v, before_opt[k]), f"frozen optical weight {k} changed"


def test_bank_student_ceiling_diagnostic_learns_its_rows_and_validates():
    from rslab.models.alignment import embed_inputs, one_hot_labels
    from rslab.recipes.alignment import train_bank_student

    torch.manual_seed(0)
    optical, _, _ = toy_pairs(64, seed=3)
    bank = F.normalize(torch.randn(64, TINY["out_dim"]), dim=-1)
    student = ImageEncoder(ImageEncoderConfig(in_chans=4, **TINY))
    before = retrieval_scores(embed_inputs(student, optical), bank)[1]
    history = train_bank_student(student, optical, bank,
                                 TrainConfig(max_steps=60, lr=3e-3, warmup_steps=5, progress=False, log_every=10),
                                 batch_size=32)
    after = retrieval_scores(embed_inputs(student, optical), bank)[1]
    assert history[-1]["loss"] < history[0]["loss"] and after > before + 0.2, (before, after)
    with pytest.raises(ValueError, match="one row per input"):
        train_bank_student(student.train(), optical, bank[:10], TrainConfig(max_steps=1, progress=False))
    with pytest.raises(ValueError, match="finite"):
        train_bank_student(student, optical * float("nan"), bank, TrainConfig(max_steps=1, progress=False))

    labels = torch.tensor([[[0, 2], [255, 1]]])
    oh = one_hot_labels(labels, 3)
    assert (oh.shape == (1, 3, 2, 2) and oh[0, :, 0, 0].tolist() == [1, -1, -1]
            and oh[0, :, 1, 0].tolist() == [-1, -1, -1])
    with pytest.raises(ValueError, match="lie in"):
        one_hot_labels(labels, 2)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        one_hot_labels(labels[0], 3)
