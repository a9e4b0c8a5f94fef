"""MaskCLIP and MaskCLIP*: training-free dense patch-text scores from an open_clip ViT.

These are the prior branch of ConInfer (Sec. 3.1, Eqs. 1-4): patch features ``f_i`` from the
CLIP image encoder, text prototypes ``t_k`` from prompt templates, cosine similarities
(Eq. 3) and a softmax (Eq. 4).

* **MaskCLIP** (Zhou et al., ECCV 2022): in the last transformer block each token attends
  only to itself, so the block's output is the value embedding ``out_proj(v)``, read without
  the residual and the FFN, then ``ln_post`` and the image projection.
* **MaskCLIP*** (ConInfer, Sec. 4.2 "Baseline" and Appendix Sec. 8, Eq. 15): the last block
  again drops residual and FFN (ClearCLIP), its attention is the SegEarth-OV self-self form
  ``softmax(q q^T s) + softmax(k k^T s) + softmax(v v^T s)``, and it is fused with the ordinary
  attention maps of earlier blocks (blocks 2, 5, 8, 11, counted from 1; the ViT split into
  four stages) with weight ``lambda = 0.6``: ``A = 3 * ((1 - lambda) A_last + lambda A_mid)``,
  ``A_mid`` being the *sum* of the four maps. The factor 3 and the un-averaged sums follow the
  public implementation (github.com/Dog-Yang/ConInfer, ``open_clip/transformer.py``) so that
  numbers can be compared; the scale matters only relative to the ``out_proj`` bias.

Both run at 448x448 input with the positional embedding interpolated (bicubic) from the
pre-training grid (14x14 for ViT-B/16 at 224) to the input's grid (28x28). Text prototypes
average several prompt templates; classes may have synonyms (``"tree, forest"``), scored
separately and merged by a max over names (the public post-processing); an optional
probability threshold sends low-confidence patches to the background class.

Weights: the full profile loads OpenAI ViT-B/16 through the weights registry
(``load_openai_clip`` -> ``rslab.weights.load("clip-vit-b16-openai")``): OpenAI's TorchScript
``ViT-B-16.pt`` or open_clip's files, always built with QuickGELU (OpenAI's activation); nothing
is downloaded. Tests use :func:`tiny_open_clip`, a randomly initialised 12-block ViT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rslab import weights as W

# A short ensemble of CLIP's ImageNet prompt templates (pass the full 80 via ``templates``).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a satellite image of {}.",
    "an aerial photo of {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a bad photo of the {}.",
    "itap of a {}.",
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VARIANTS = ("maskclip", "maskclip_star")


@dataclass
class MaskClipConfig:
    """Dense-inference settings.

    Attributes:
        variant: ``"maskclip"`` or ``"maskclip_star"``.
        fusion_blocks: 1-based indices of earlier blocks whose attention maps are fused into
            the last block (Appendix Eq. 15); empty = no fusion (SegEarth-OV's last block only).
        fusion_weight: lambda in Eq. 15 (0.6 in the paper).
        attn_scale: overall factor on the fused attention (3.0 in the public code).
        input_size: square input side in pixels (448 in Sec. 4.2).
        templates: prompt templates with one ``{}`` each; prototypes are their average.
        logit_scale: softmax scale of Eq. 4 (the public ConInfer code uses 100 for the prior).
        background_threshold: patches whose max class probability is below it -> background.
        background_index: the class index used by the threshold.
    """

    variant: str = "maskclip_star"
    fusion_blocks: tuple[int, ...] = (2, 5, 8, 11)
    fusion_weight: float = 0.6
    attn_scale: float = 3.0
    input_size: int = 448
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    logit_scale: float = 100.0
    background_threshold: float = 0.0
    background_index: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {self.fusion_weight}")
        if self.input_size < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ValueError("templates must be a non-empty list of strings with exactly one '{}'")
        if any(b < 1 for b in self.fusion_blocks):
            raise ValueError(f"fusion_blocks are 1-based block indices, got {self.fusion_blocks}")


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def tiny_open_clip(seed: int = 0, image_size: int = 64, layers: int = 12) -> nn.Module:
    """A randomly initialised small open_clip CLIP (12-block ViT, patch 16) for tests / ci."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=layers, width=64, head_width=32, patch_size=16,
                           image_size=image_size)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
    return CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()


def load_openai_clip(weights: str | os.PathLike | None = None, model_name: str = "ViT-B-16",
                     quick_gelu: bool | None = None, verify: bool = True, device: str = "cpu"
                     ) -> tuple[nn.Module, object]:
    """OpenAI CLIP (default ViT-B/16) from a local file; returns (model, tokenizer).

    ViT-B/16 goes through the weights registry (``rslab.weights.load("clip-vit-b16-openai")``):
    ``weights`` may be OpenAI's own TorchScript ``ViT-B-16.pt``, open_clip's
    ``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors`` of
    ``timm/vit_base_patch16_clip_224.openai``, or a folder holding one; ``None`` searches
    ``$RSLAB_WEIGHTS_DIR`` and the caches. The model is built with **QuickGELU**, the activation
    OpenAI trained with; ``quick_gelu=False`` is refused (plain GELU gives silently wrong
    features). The published sha256 of ``ViT-B-16.pt`` is checked unless ``verify=False`` or
    ``RSLAB_SKIP_SHA256=1``. Other OpenAI models (``model_name``) are built by open_clip with
    QuickGELU as well. Raises ``FileNotFoundError`` naming the path (nothing is downloaded).
    """
    import open_clip

    if quick_gelu is False:
        raise ValueError(f"OpenAI's {model_name} weights were trained with QuickGELU; building it with plain "
                         "GELU (quick_gelu=False) gives silently wrong features. Leave quick_gelu unset.")
    if weights is not None and not Path(weights).exists():
        raise FileNotFoundError(
            f"CLIP weights not found at {weights}. Put OpenAI's {model_name} checkpoint there (its own "
            "'ViT-B-16.pt', or open_clip's 'open_clip_pytorch_model.bin' of "
            "timm/vit_base_patch16_clip_224.openai), pass its path, or pass None to search "
            "$RSLAB_WEIGHTS_DIR; nothing is downloaded.")
    if model_name == "ViT-B-16":
        model = W.load("clip-vit-b16-openai", path=weights, device=device, verify=verify)
        return model, open_clip.get_tokenizer(model_name)
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(
            f"CLIP weights not found at {weights}. Put OpenAI's {model_name} checkpoint there or pass its "
            "path; nothing is downloaded.")
    model = open_clip.create_model(model_name, pretrained=str(weights), force_quick_gelu=True)
    return model.to(device).eval(), open_clip.get_tokenizer(model_name)


def is_quick_gelu(model: nn.Module) -> bool:
    """Whether an open_clip CLIP's image tower uses QuickGELU (OpenAI's activation)."""
    from open_clip.model import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.visual.modules())


def default_tokenizer(model_name: str = "ViT-B-16"):
    """open_clip's BPE tokenizer (its vocabulary ships with the package: works offline)."""
    import open_clip

    return open_clip.get_tokenizer(model_name)


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------
def interpolate_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (1 + g*g, C) ViT positional embedding to a (gh, gw) grid."""
    n = pos_embed.shape[0] - 1
    g = int(round(n ** 0.5))
    if g * g != n:
        raise ValueError(f"positional embedding of {n} patch tokens is not a square grid")
    if (g, g) == tuple(grid_hw):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), size=tuple(grid_hw), mode="bicubic",
                              align_corners=False).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(-1, pos_embed.shape[1])])


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, l, c = x.shape
    return x.reshape(b, l, heads, c // heads).transpose(1, 2)      # (B, H, L, hd)


def _qkv(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    attn = block.attn
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    h = attn.num_heads
    return _split_heads(q, h), _split_heads(k, h), _split_heads(v, h)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, l, d = x.shape
    return x.transpose(1, 2).reshape(b, l, h * d)


def block_with_attention(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One ordinary pre-norm CLIP block on (B, L, C) tokens, also returning its attention
    (B, heads, L, L). Equal to ``block(x)``; written out to expose the attention map."""
    q, k, v = _qkv(block, block.ln_1(x))
    scale = q.shape[-1] ** -0.5
    attn = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
    out = block.attn.out_proj(_merge_heads(attn @ v))
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, attn


def self_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SegEarth-OV's last-block attention: softmax(qq^T s) + softmax(kk^T s) + softmax(vv^T s)."""
    scale = q.shape[-1] ** -0.5
    return sum(torch.softmax((t @ t.transpose(-1, -2)) * scale, dim=-1) for t in (q, k, v))


# --------------------------------------------------------------------------------------------
# the segmenter
# --------------------------------------------------------------------------------------------
def parse_class_names(classes: Sequence[str | Sequence[str]]) -> tuple[list[str], list[int]]:
    """Class list -> flat query names and their class index. A class is a name, a list of
    synonyms, or a comma-separated string ``"tree, forest"`` (the public prompt-file format)."""
    if not classes:
        raise ValueError("classes must be a non-empty list of names (or synonym lists)")
    names, index = [], []
    for i, c in enumerate(classes):
        syns = [s.strip() for s in c.split(",")] if isinstance(c, str) else [str(s).strip() for s in c]
        syns = [s for s in syns if s]
        if not syns:
            raise ValueError(f"class {i} has no name: {c!r}")
        names += syns
        index += [i] * len(syns)
    return names, index


def merge_synonyms(query_scores: torch.Tensor, query_to_class: Sequence[int]) -> torch.Tensor:
    """Max over each class's names: (B, Q, ...) -> (B, K, ...) (public post-processing)."""
    idx = torch.as_tensor(list(query_to_class), device=query_scores.device)
    if idx.numel() != query_scores.shape[1]:
        raise ValueError(f"query_to_class has {idx.numel()} entries for {query_scores.shape[1]} queries")
    k = int(idx.max()) + 1
    out = [query_scores[:, idx == c].amax(dim=1) for c in range(k)]
    return torch.stack(out, dim=1)


def threshold_background(probs: torch.Tensor, threshold: float, background_index: int = 0
                         ) -> torch.Tensor:
    """argmax over classes (dim 1); patches with max probability < threshold -> background."""
    labels = probs.argmax(dim=1)
    if threshold > 0:
        labels = torch.where(probs.amax(dim=1) < threshold,
                             torch.full_like(labels, background_index), labels)
    return labels


class MaskClipSegmenter(nn.Module):
    """Dense open-vocabulary scores from an open_clip CLIP model (MaskCLIP / MaskCLIP*).

    Example::

        model, tok = load_openai_clip("/weights/ViT-B-16.pt")   # or None: $RSLAB_WEIGHTS_DIR
        seg = MaskClipSegmenter(model, tok, MaskClipConfig())
        probs = seg.class_probs(images01, ["background", "building, roof", "road", "water"])
        # (B, 4, 28, 28) per-patch prior for ConInfer
    """

    def __init__(self, clip_model: nn.Module, tokenizer=None, config: MaskClipConfig | None = None):
        super().__init__()
        self.clip = clip_model.eval()
        self.tokenizer = tokenizer or default_tokenizer()
        self.config = config or MaskClipConfig()
        visual = self.clip.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ValueError("MaskClipSegmenter needs an open_clip ViT image tower (visual.conv1 "
                             "and visual.transformer); timm/ConvNeXt towers are not supported")
        n_blocks = len(visual.transformer.resblocks)
        if self.config.variant == "maskclip_star" and any(b >= n_blocks for b in self.config.fusion_blocks):
            raise ValueError(f"fusion_blocks {self.config.fusion_blocks} must be < the number of "
                             f"blocks ({n_blocks}); the last block is the one modified")
        self._cache: dict[tuple, torch.Tensor] = {}

    # ---------------------------------------------------------------- text (Eq. 2)
    @torch.no_grad()
    def text_prototypes(self, names: Sequence[str]) -> torch.Tensor:
        """(Q, E) unit text prototypes: each name's template embeddings, normalised and averaged."""
        protos = []
        device = next(self.clip.parameters()).device
        for name in names:
            tokens = self.tokenizer([t.format(name) for t in self.config.templates]).to(device)
            emb = F.normalize(self.clip.encode_text(tokens).float(), dim=-1)
            protos.append(F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(protos)

    # ---------------------------------------------------------------- image (Eq. 1)
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> resized to ``input_size`` and CLIP-normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        s = self.config.input_size
        x = F.interpolate(images.float(), size=(s, s), mode="bilinear", align_corners=False,
                          antialias=True) if images.shape[-2:] != (s, s) else images.float()
        mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
        return (x - mean) / std

    @torch.no_grad()
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) CLIP-normalised pixels -> (B, E, gh, gw) unit patch features."""
        v = self.clip.visual
        dtype = v.conv1.weight.dtype
        x = v.conv1(pixels.to(dtype))
        b, c, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1) + interpolate_pos_embed(v.positional_embedding, (gh, gw)).to(x.dtype)
        x = v.ln_pre(x)

        blocks = v.transformer.resblocks
        cfg = self.config
        star = cfg.variant == "maskclip_star"
        fuse = {i - 1 for i in cfg.fusion_blocks} if star else set()
        mid_attn = None
        for i, blk in enumerate(blocks[:-1]):
            if i in fuse:
                x, attn = block_with_attention(blk, x)
                mid_attn = attn if mid_attn is None else mid_attn + attn
            else:
                x = blk(x)

        last = blocks[-1]
        q, k, val = _qkv(last, last.ln_1(x))
        if star:
            attn = self_self_attention(q, k, val)
            if mid_attn is not None and cfg.fusion_weight > 0:
                attn = cfg.attn_scale * ((1 - cfg.fusion_weight) * attn + cfg.fusion_weight * mid_attn)
            out = attn @ val
        else:                       # MaskCLIP: every token attends only to itself
            out = val
        x = last.attn.out_proj(_merge_heads(out))     # no residual, no FFN
        x = v.ln_post(x)
        if v.proj is not None:
            x = x @ v.proj
        patches = F.normalize(x[:, 1:].float(), dim=-1)
        return patches.transpose(1, 2).reshape(b, -1, gh, gw)

    # ---------------------------------------------------------------- scores (Eqs. 3-4)
    def patch_logits(self, images: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """(B, Q, gh, gw) cosine similarities between patches and each name's prototype."""
        key = tuple(names)
        if key not in self._cache:
            self._cache[key] = self.text_prototypes(names)
        protos = self._cache[key]
        images = images.to(next(self.clip.parameters()).device)  # inputs follow the model
        feats = self.dense_features(self.preprocess(images))
        return torch.einsum("bchw,qc->bqhw", feats, protos.to(feats.device, feats.dtype))  # cache may predate .to()

    def class_probs(self, images: torch.Tensor, classes: Sequence[str | Sequence[str]],
                    merge: bool = True) -> torch.Tensor:
        """Eq. 4 per patch: softmax(logit_scale * cos) over all names, then (``merge``) the max
        over each class's synonyms -> (B, K, gh, gw); with ``merge=False`` (B, Q, gh, gw). Computed on
        the model's device, returned on the CPU."""
        names, index = parse_class_names(classes)
        probs = torch.softmax(self.config.logit_scale * self.patch_logits(images, names), dim=1).cpu()
        return merge_synonyms(probs, index) if merge else probs

    def predict(self, images: torch.Tensor, classes: Sequence[str | Sequence[str]]) -> torch.Tensor:
        """(B, gh, gw) labels, with the background threshold applied."""
        probs = self.class_probs(images, classes)
        return threshold_background(probs, self.config.background_threshold,
                                    self.config.background_index)
