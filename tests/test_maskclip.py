"""Tests for rslab.models.maskclip on a randomly initialised tiny open_clip ViT (no weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")

from rslab.models.maskclip import (  # noqa: E402
    MaskClipConfig,
    MaskClipSegmenter,
    block_with_attention,
    interpolate_pos_embed,
    load_openai_clip,
    merge_synonyms,
    parse_class_names,
    self_self_attention,
    threshold_background,
    tiny_open_clip,
)


@pytest.fixture(scope="module")
def model():
    return tiny_open_clip(seed=0, image_size=64)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_block_with_attention_equals_open_clip_block(model):
    blk = model.visual.transformer.resblocks[3]
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        y, attn = block_with_attention(blk, x)
        assert torch.allclose(y, blk(x), atol=1e-5)
    assert attn.shape == (2, 2, 17, 17)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 2, 17), atol=1e-5)


def test_plain_maskclip_matches_identity_masked_multihead_attention(model, images):
    """MaskCLIP's last block = torch's own attention with each token allowed to see only
    itself, no residual, no FFN, then ln_post and the projection."""
    seg = MaskClipSegmenter(model, config=MaskClipConfig(variant="maskclip", input_size=64))
    got = seg.dense_features(seg.preprocess(images))                 # (2, 32, 4, 4)
    v = model.visual
    with torch.no_grad():
        x = v._embeds(seg.preprocess(images))                        # native 64 px: no interpolation
        for blk in v.transformer.resblocks[:-1]:
            x = blk(x)
        last = v.transformer.resblocks[-1]
        y = last.ln_1(x)
        mask = torch.full((17, 17), float("-inf")).fill_diagonal_(0.0)
        out = last.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        ref = F.normalize((v.ln_post(out) @ v.proj)[:, 1:], dim=-1)
    assert got.shape == (2, 32, 4, 4)
    assert torch.allclose(got.flatten(2).transpose(1, 2), ref, atol=1e-5)


def test_self_self_attention_rows_sum_to_three_and_fusion_changes_output(model, images):
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    a = self_self_attention(q, k, v)
    assert torch.allclose(a.sum(-1), torch.full((1, 2, 5), 3.0), atol=1e-5)
    px = torch.rand(1, 3, 64, 64)
    no_fuse = MaskClipSegmenter(model, config=MaskClipConfig(fusion_weight=0.0, input_size=64))
    fuse = MaskClipSegmenter(model, config=MaskClipConfig(fusion_weight=0.6, input_size=64))
    plain = MaskClipSegmenter(model, config=MaskClipConfig(variant="maskclip", input_size=64))
    f0, f1, f2 = (s.dense_features(s.preprocess(px)) for s in (no_fuse, fuse, plain))
    assert not torch.allclose(f0, f1, atol=1e-4) and not torch.allclose(f0, f2, atol=1e-4)
    assert torch.allclose(f1.norm(dim=1), torch.ones(1, 4, 4), atol=1e-5)


def test_pos_embed_interpolation_and_448_input(model, images):
    pe = model.visual.positional_embedding.detach()
    assert interpolate_pos_embed(pe, (4, 4)) is pe
    big = interpolate_pos_embed(pe, (28, 28))
    assert big.shape == (1 + 28 * 28, 64) and torch.equal(big[0], pe[0])
    # a constant grid stays constant under bicubic resizing
    const = torch.cat([pe[:1], torch.ones(16, 64)])
    assert torch.allclose(interpolate_pos_embed(const, (7, 5))[1:], torch.ones(35, 64), atol=1e-5)
    seg = MaskClipSegmenter(model, config=MaskClipConfig(input_size=448))
    feats = seg.dense_features(seg.preprocess(images[:1]))
    assert feats.shape == (1, 32, 28, 28) and torch.isfinite(feats).all()


def test_class_probs_with_synonyms_and_templates(model, images):
    seg = MaskClipSegmenter(model, config=MaskClipConfig(input_size=64))
    classes = ["background", "building, roof", ["water", "river", "lake"]]
    names, index = parse_class_names(classes)
    assert names == ["background", "building", "roof", "water", "river", "lake"]
    assert index == [0, 1, 1, 2, 2, 2]
    protos = seg.text_prototypes(names)
    assert protos.shape == (6, 32) and torch.allclose(protos.norm(dim=1), torch.ones(6), atol=1e-5)
    q = seg.class_probs(images, classes, merge=False)
    assert q.shape == (2, 6, 4, 4) and torch.allclose(q.sum(1), torch.ones(2, 4, 4), atol=1e-5)
    p = seg.class_probs(images, classes)
    assert torch.allclose(p[:, 2], q[:, 3:].amax(1))
    assert seg.predict(images, classes).shape == (2, 4, 4)


def test_merge_and_threshold_by_hand():
    s = torch.tensor([[0.1, 0.5, 0.3, 0.1]])[:, :, None]             # (1, 4 queries, 1)
    assert torch.allclose(merge_synonyms(s, [0, 1, 1, 2])[:, :, 0], torch.tensor([[0.1, 0.5, 0.1]]))
    probs = torch.tensor([[[0.2, 0.1], [0.5, 0.3], [0.3, 0.6]]])       # (1, 3 classes, 2 patches)
    assert threshold_background(probs, 0.0).tolist() == [[1, 2]]
    assert threshold_background(probs, 0.55).tolist() == [[0, 2]]


def test_errors(model, tmp_path):
    with pytest.raises(ValueError, match="variant"):
        MaskClipConfig(variant="clip")
    with pytest.raises(ValueError, match="fusion_blocks"):
        MaskClipSegmenter(model, config=MaskClipConfig(fusion_blocks=(2, 12)))
    seg = MaskClipSegmenter(model, config=MaskClipConfig(input_size=64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        seg.preprocess(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="no name"):
        parse_class_names(["water", " , "])
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_openai_clip(tmp_path / "missing.bin")
