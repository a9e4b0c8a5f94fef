"""Encoders: the offline MiniLM text encoder (for real) and the small image encoders."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rslab.models.encoders import (  # noqa: E402
    ImageEncoder,
    ImageEncoderConfig,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    build_prompts,
    count_parameters,
    freeze,
    patch_valid_fraction,
    preprocess_sar,
)


@pytest.fixture(scope="module")
def text_encoder() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


# ---------------------------------------------------------------- text


def test_minilm_similar_sentences_score_higher(text_encoder):
    emb = text_encoder.encode(
        ["a river flows through the forest", "a stream runs across woodland", "cars parked in a large lot"]
    )
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[1, 2] + 0.3


def test_minilm_padding_does_not_change_embeddings(text_encoder):
    # mean pooling must ignore padding: a short sentence batched with a long one == encoded alone
    short, long = "water", "a very long description of an industrial area with many warehouses and trucks"
    alone = text_encoder._embed([short])
    batched = text_encoder._embed([short, long])[:1]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


def test_minilm_cache_and_order(text_encoder):
    a = text_encoder.encode(["lake", "meadow"])
    n_cached = len(text_encoder.cache)
    b = text_encoder.encode(["meadow", "lake", "lake"])
    assert len(text_encoder.cache) == n_cached  # no new entries: served from the cache
    torch.testing.assert_close(b, torch.stack([a[1], a[0], a[0]]))
    assert text_encoder.encode([]).shape == (0, 384)


def test_minilm_prompt_embeddings_average_templates_and_synonyms(text_encoder):
    templates = ["a photo of {}.", "an image of {}."]
    got = text_encoder.prompt_embeddings(["water", ["forest", "woodland"]], templates)
    assert got.shape == (2, 384)
    manual = F.normalize(text_encoder.encode(["a photo of forest.", "an image of forest.",
                                              "a photo of woodland.", "an image of woodland."]).mean(0), dim=0)
    torch.testing.assert_close(got[1], manual)
    assert isinstance(text_encoder, TextEncoder)


def test_text_input_validation(text_encoder):
    with pytest.raises(ValueError, match="single str"):
        text_encoder.encode("water")
    with pytest.raises(ValueError, match="strings only"):
        text_encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match="\\{\\}"):
        build_prompts(["water"], ["no placeholder"])
    with pytest.raises(ValueError, match="non-empty"):
        build_prompts([])
    with pytest.raises(FileNotFoundError, match="config.json"):
        MiniLMTextEncoder(model_path="/nonexistent/minilm")


def test_open_clip_adapter_with_a_stand_in_model():
    class FakeClip(torch.nn.Module):
        def encode_text(self, tokens):
            return tokens.float() * 3.0  # not normalised on purpose

    def tokenizer(texts):
        return torch.tensor([[len(t), 1.0] for t in texts])

    enc = OpenCLIPTextEncoder(FakeClip(), tokenizer)
    assert enc.dim == 2
    out = enc.encode(["ab", "abcd"])
    torch.testing.assert_close(out, F.normalize(torch.tensor([[2.0, 1.0], [4.0, 1.0]]), dim=-1))
    assert set(enc.cache) == {"ab", "abcd"}
    with pytest.raises(ValueError, match="encode_text"):
        OpenCLIPTextEncoder(torch.nn.Linear(2, 2), tokenizer)


# ---------------------------------------------------------------- images


def test_image_encoder_shapes_and_presets():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig.tiny(2, img_size=32))
    out = enc(torch.randn(3, 2, 32, 32))
    assert out.embedding.shape == (3, 384) and out.tokens.shape == (3, 16, 96) and out.grid == (4, 4)
    # other sizes work through position-embedding interpolation
    out = enc(torch.randn(2, 2, 48, 32))
    assert out.tokens.shape == (2, 24, 96) and out.grid == (6, 4)
    sizes = [count_parameters(ImageEncoder(c)) for c in (ImageEncoderConfig.tiny(4), ImageEncoderConfig.small(4))]
    assert sizes[0] < sizes[1]
    base = ImageEncoderConfig.base(2)
    assert (base.embed_dim, base.depth, base.num_heads, base.patch_size) == (768, 12, 12, 16)


def test_image_encoder_gap_is_the_mean_of_tokens():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig.tiny(4, img_size=32)).eval()
    x = torch.randn(2, 4, 32, 32)
    out = enc(x)
    torch.testing.assert_close(out.embedding, enc.head(out.tokens.mean(1)))


def test_image_encoder_masked_pooling_ignores_nodata_patches():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig.tiny(2, img_size=32)).eval()
    x = torch.randn(1, 2, 32, 32)
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    torch.testing.assert_close(enc(x, valid=valid).embedding, enc(x).embedding)
    valid[:, :16] = False  # top half nodata: exactly the top two token rows of the 4x4 grid
    out = enc(x, valid=valid)
    torch.testing.assert_close(out.embedding, enc.head(out.tokens[:, 8:].mean(1)))
    frac = patch_valid_fraction(valid, (4, 4))
    assert frac.shape == (1, 16) and frac[0, :8].sum() == 0 and frac[0, 8:].min() == 1
    with pytest.raises(ValueError, match="no valid pixel"):
        enc(x, valid=torch.zeros(1, 32, 32, dtype=torch.bool))


def test_image_encoder_rejects_bad_input():
    enc = ImageEncoder(ImageEncoderConfig.tiny(2, img_size=32))
    with pytest.raises(ValueError, match="takes 2 channels, got 4"):
        enc(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="multiples of patch_size"):
        enc(torch.randn(1, 2, 30, 32))
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.full((1, 2, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="divisible"):
        ImageEncoderConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="power of two"):
        ImageEncoderConfig(patch_size=6)


def test_preprocess_sar_masks_nan_and_uses_the_shared_range():
    sar = torch.tensor([-30.0, 5.0, -12.5, float("nan")]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    x, valid = preprocess_sar(sar)
    torch.testing.assert_close(x[0, 0], torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    assert valid.tolist() == [[[True, True], [True, False]]]
    with pytest.raises(ValueError, match="2, H, W"):
        preprocess_sar(torch.zeros(1, 3, 4, 4))


def test_freeze():
    enc = freeze(ImageEncoder(ImageEncoderConfig.tiny(2, img_size=32)))
    assert not enc.training and count_parameters(enc, trainable_only=True) == 0
