"""RS2-SAM2 on the real ``sam2`` package, at the CPU ``tiny`` size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("sam2")

from rslab.losses.boundary import TextGuidedBoundaryLoss, boundary_map  # noqa: E402
from rslab.models.rs2sam2 import RS2SAM2, RS2SAM2Config, load_sam2_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RS2SAM2(RS2SAM2Config.tiny()).eval()


def _text(batch: int, length: int = 5, dim: int = 384):
    g = torch.Generator().manual_seed(1)
    states = torch.randn(batch, length, dim, generator=g)
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[0, 3:] = True  # a shorter expression
    return states, pad


def test_boundary_map_hand_case():
    prob = torch.tensor([[[[0.0, 1.0], [0.0, 0.5]]]])
    vertical, horizontal = boundary_map(prob)
    assert torch.equal(vertical, torch.tensor([[[[0.0, 0.5]]]]))
    assert torch.equal(horizontal, torch.tensor([[[[1.0], [0.5]]]]))


def test_boundary_loss_gradient_reaches_mask_logits():
    """The reference thresholds before taking edges (no gradient); ours must train the mask."""
    torch.manual_seed(0)
    loss_fn = TextGuidedBoundaryLoss(text_dim=8)
    logits = (0.01 * torch.randn(2, 1, 16, 16)).requires_grad_()  # nearly flat prediction
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    loss = loss_fn(logits, target, torch.randn(2, 8))
    loss.backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0
    # a flat prediction misses the true boundary: the gradient concentrates there, not inside
    assert logits.grad[:, :, 3:5, 5:11].abs().mean() > 10 * logits.grad[:, :, 7:9, 7:9].abs().mean()


def test_boundary_text_weight_is_bounded():
    loss_fn = TextGuidedBoundaryLoss(text_dim=4, beta=0.5)
    with torch.no_grad():
        loss_fn.to_weight.weight.fill_(100.0)
    w = loss_fn.text_weight(torch.tensor([[1.0, 1, 1, 1], [-1.0, -1, -1, -1]]))
    assert torch.all(w >= 0.5) and torch.all(w <= 1.5)
    assert w[0] > 1.4 and w[1] < 0.6
    with pytest.raises(ValueError, match="beta"):
        TextGuidedBoundaryLoss(4, beta=1.0)


def test_bhfm_starts_as_identity_on_hiera(model):
    """Zero-initialised BHFM outputs leave a (pretrained) Hiera's features unchanged at init."""
    from sam2.build_sam import build_sam2  # noqa: F401  (ensures hydra is initialised)

    from rslab.models.rs2sam2 import build_sam2_model

    plain = build_sam2_model(model.cfg)
    plain.load_state_dict(model.sam.state_dict(), strict=False)
    images = torch.rand(2, 3, 128, 128)
    states, pad = _text(2, dim=model.cfg.union_dim)
    with torch.no_grad():
        ours = model.encode_image(images, states, pad)
        ref = plain.image_encoder(images)["backbone_fpn"]
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_text_state_is_carried_through_blocks(model):
    blocks = model.sam.image_encoder.trunk.blocks
    x = torch.randn(1, 32, 32, blocks[0].dim)
    text, pad = _text(1, dim=model.cfg.union_dim)
    pad[:] = False
    _, text_next = blocks[0](x, text, pad)
    assert text_next.shape == text.shape
    assert not torch.allclose(text_next, text)  # alpha_t = 0.2 blend moved it


def test_forward_shapes_and_split(model):
    states, pad = _text(2)
    out = model(torch.rand(2, 3, 96, 96), states, pad)  # any size is resized to image_size
    assert out["masks"].shape == (2, 1, 128, 128)
    assert out["pseudo_mask"].shape == (2, 1, *model.union.grid)
    counts = model.parameter_counts()
    trunk_trainable = [n for n, p in model.sam.image_encoder.trunk.named_parameters() if p.requires_grad]
    assert trunk_trainable and all(".bhfm." in n for n in trunk_trainable)
    assert counts["hiera_frozen"] > 0 and counts["bhfm_trainable"] > 0
    assert counts["mask_decoder_frozen"] == 0 and counts["union_encoder_frozen"] == 0


def test_loss_backward_reaches_trained_parts(model):
    model.train()
    model.zero_grad()
    states, pad = _text(2)
    out = model(torch.rand(2, 3, 128, 128), states, pad)
    target = torch.zeros(2, 128, 128)
    target[:, 30:80, 40:90] = 1
    loss, logs = model.loss(out, target)
    loss.backward()
    assert set(logs) == {"ce", "dice", "tbl"}
    assert model.mpg.mlp.fc2.weight.grad.abs().sum() > 0
    assert model.union.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.criterion.boundary.to_weight.weight.grad is not None
    frozen = model.sam.image_encoder.trunk.blocks[0].attn.qkv.weight
    assert frozen.grad is None
    model.eval()


def test_mpg_pseudo_mask_is_not_flat_at_initialisation():
    # Unit-scale tokens (the union encoder ends in a LayerNorm): the pseudo-mask must already vary
    # over the grid, else the dense prompt is a constant and its gradient vanishes (measured: a
    # spatial std of ~0.004 logits without the MPG's normalisation).
    from rslab.models.rs2sam2 import MaskPromptGenerator

    torch.manual_seed(0)
    mpg = MaskPromptGenerator(128, 4)
    cls, visual = torch.randn(4, 128), torch.randn(4, 64, 128)
    pseudo = mpg(cls, visual, (8, 8))
    assert pseudo.shape == (4, 1, 8, 8)
    assert float(pseudo.flatten(1).std(1).mean()) > 0.05  # ~0.19 here; ~0.01 without the normalisation
    # and it depends on the text side (V_cls), not only on the image
    other = mpg(torch.randn(4, 128), visual, (8, 8))
    assert float((other - pseudo).abs().mean()) > 1e-3


def test_ablation_switches():
    m = RS2SAM2(RS2SAM2Config.tiny(use_bhfm=False, use_mpg=False, boundary_weight=0.0))
    assert m.mpg is None and m.text_guidance is None
    assert all(b.bhfm is None for b in m.sam.image_encoder.trunk.blocks)
    states, pad = _text(1)
    out = m(torch.rand(1, 3, 128, 128), states, pad)
    _, logs = m.loss(out, torch.zeros(1, 128, 128))
    assert "tbl" not in logs and out["pseudo_mask"] is None


def test_bad_inputs(model):
    states, pad = _text(1)
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(1, 4, 128, 128), states, pad)
    empty = torch.ones(1, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="non-empty"):
        model(torch.rand(1, 3, 128, 128), states, empty)
    with pytest.raises(ValueError, match="multiple of 16"):
        RS2SAM2Config.tiny(image_size=100)


def test_checkpoint_loading_reports_adapter_keys(model, tmp_path):
    from rslab.models.rs2sam2 import build_sam2_model

    torch.manual_seed(3)
    donor = build_sam2_model(model.cfg)
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": donor.state_dict()}, path)
    fresh = RS2SAM2(model.cfg)
    report = load_sam2_checkpoint(fresh, path)
    assert report["unexpected"] == []
    assert report["missing"] and all(".bhfm." in k for k in report["missing"])
    torch.testing.assert_close(
        fresh.sam.image_encoder.trunk.blocks[0].attn.qkv.weight, donor.image_encoder.trunk.blocks[0].attn.qkv.weight
    )
    with pytest.raises(FileNotFoundError, match="RSLAB_WEIGHTS_DIR"):
        load_sam2_checkpoint(fresh, tmp_path / "absent.pt")


def test_token_encoder_rejects_bad_expressions():
    from rslab.models.rs2sam2 import MiniLMTokenEncoder

    enc = MiniLMTokenEncoder(max_tokens=6)
    states, pad = enc(["the lake", "the largest building"])
    assert states.shape[0] == 2 and states.shape[-1] == 384
    assert (~pad).sum(1).tolist()[0] < (~pad).sum(1).tolist()[1]
    with pytest.raises(ValueError, match="non-empty"):
        enc(["  "])
    with pytest.raises(ValueError, match="too long"):
        enc(["the small red car parked nearest to the long winding river in the north"])


def _tiny_spm(folder) -> "Path":
    """A sentencepiece model trained in milliseconds on a few phrases (stands in for beit3.spm)."""
    import io

    spm = pytest.importorskip("sentencepiece")
    words = ["the", "left", "right", "square", "lake", "field", "road", "large", "small", "building", "river"]
    sentences = [" ".join(words[(i * 7 + j) % len(words)] for j in range(5)) for i in range(200)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=30,
                                   minloglevel=2)
    path = folder / "beit3.spm"
    path.write_bytes(model.getvalue())
    return path


def test_beit3_union_encoder_loads_the_release_layout_and_segments(tmp_path, monkeypatch):
    """RS2-SAM2 with the paper's union encoder: BEiT-3 (here shrunk to 32 wide, 2 blocks) loaded
    strictly from a file in the release's layout through the registry, text as BEiT-3 token ids."""
    import dataclasses

    import rslab.weights as W
    from rslab.models.beit3 import BEiT3, BEiT3Config
    from rslab.models.rs2sam2 import RS2SAM2, BEiT3TokenEncoder, RS2SAM2Config, load_union_weights

    cfg = dataclasses.replace(RS2SAM2Config.tiny(image_size=64), union_encoder="beit3", union_dim=32, union_depth=2,
                              union_heads=2, union_image_size=32, union_patch=16)
    entry = W.get_entry("beit3-base")
    small = dict(entry.config, embed_dim=32, depth=2, heads=2, mlp_dim=128, img_size=32)
    monkeypatch.setitem(W.WEIGHTS, "beit3-base", dataclasses.replace(entry, config=small))
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(tmp_path))
    torch.manual_seed(3)
    release = BEiT3(BEiT3Config(img_size=32, embed_dim=32, depth=2, heads=2, mlp_dim=128))
    torch.save({"model": {f"beit3.{k}": v for k, v in release.state_dict().items()}}, tmp_path / entry.files[0])
    spm = _tiny_spm(tmp_path)
    assert W.find_companion("beit3-base") == spm.resolve()

    torch.manual_seed(0)
    model = RS2SAM2(cfg)
    assert load_union_weights(model, "beit3-base") == (tmp_path / entry.files[0]).resolve()
    for k, v in release.state_dict().items():
        assert torch.equal(model.union.beit3.state_dict()[k], v), k
    tokens = BEiT3TokenEncoder(spm, max_tokens=24)
    ids, pad = tokens(["the left square", "the large river"])
    assert ids.dtype == torch.long and ids[:, 0].eq(0).all() and (ids[~pad] != 3).any() and not pad[:, 0].any()
    out = model(torch.rand(2, 3, 64, 64), ids, pad)
    assert out["masks"].shape == (2, 1, 64, 64) and out["pseudo_mask"].shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.rand(2, 3, 64, 64), torch.randn(2, 3, 384), pad[:, :3])
    with pytest.raises(ValueError, match="too long"):
        tokens(["the left square road lake field river building small large " * 3])
    with pytest.raises(ValueError, match="union encoder is 'vit'"):
        load_union_weights(RS2SAM2(RS2SAM2Config.tiny(image_size=64)), "beit3-base")
