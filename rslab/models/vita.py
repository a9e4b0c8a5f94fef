"""SkySense-VITA: in-context segmentation from visual, text and fused prompts (CVPR 2026).

Two data streams (paper Sec. "Overall Architecture"):

* the **target flow** encodes the target image into multi-scale features ``F_tgt``;
* the **prompt flow** turns a prompt triplet (prompt image, its annotation, class name) into
  visual prompt tokens ``P_V`` (masked average pooling of the prompt image's features under the
  annotation) and text prompt tokens ``P_T`` (the text encoder on the class name).

:class:`VITAFormer` fuses prompts without letting the modalities pollute each other: learnable
modality prototypes (one set for optical, one for SAR, shared by all layers) are injected into
``P_V`` by cross-attention, ``P_F`` starts as a linear projection of ``P_T``, and a masked
self-attention over ``[P'_V, P_T, P_F]`` lets V and T see only themselves while ``P_F`` sees both.
Cross-attention to ``F_tgt`` then gives three in-context queries ``Q_ctx^V, Q_ctx^T, Q_ctx^F``.

:class:`VITADecoder` is Mask2Former-style (masked cross-attention to multi-scale features,
self-attention, FFN, a pixel decoder) with three replicated sets of segmentation queries plus a
query-type embedding, separated by a block-diagonal self-attention mask. Masks are query x
per-pixel embedding; classes come from prompt-guided classification,
``logit_{q,k} = cos(Q'_seg,q, Q_ctx,k) / tau`` plus a no-object logit. Semantic inference
combines per-query class probabilities and masks per mode.

Ablation switches: ``fusion="naive"`` replaces VITA-Former by concatenation + a linear (1x1 conv)
fusion with unmasked attention, the paper's "w/o VITA-Former". A prompt kind that is not given
(no text in V mode, no prompt image in T mode) enters as zero tokens: VITA-Former's attention
masks make that irrelevant to the other unimodal branch; naive fusion sees the missing input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

MODES: tuple[str, str, str] = ("V", "T", "F")
MODALITIES: tuple[str, str] = ("optical", "sar")


@dataclass(frozen=True)
class VITAConfig:
    """Sizes of VITA-Former + VITA-Decoder (+ the small default image encoder).

    Attributes:
        dim: token width D of prompts, queries and the pixel decoder.
        text_dim: width of the text encoder's sentence embedding (MiniLM: 384, CLIP B/16: 512).
        num_queries: segmentation queries per mode (the decoder holds 3x this many).
        former_layers / decoder_layers: depth of VITA-Former and VITA-Decoder.
        heads: attention heads. ffn_dim: hidden width of every FFN.
        num_prototypes: learnable prototype tokens per modality.
        temperature: tau of prompt-guided classification.
        fusion: ``"vita"`` (the paper) or ``"naive"`` (concat + linear, unmasked; ablation).
        encoder_widths: channels of the default conv encoder's three levels (strides 4, 8, 16).
        in_chans: input channels per modality for the default encoder.
    """

    dim: int = 96
    text_dim: int = 384
    num_queries: int = 8
    former_layers: int = 1
    decoder_layers: int = 2
    heads: int = 4
    ffn_dim: int = 256
    num_prototypes: int = 1
    temperature: float = 0.07
    fusion: str = "vita"
    encoder_widths: tuple[int, int, int] = (32, 64, 128)
    in_chans: tuple[tuple[str, int], ...] = (("optical", 4), ("sar", 2))

    def __post_init__(self):
        if self.fusion not in ("vita", "naive"):
            raise ValueError(f"fusion must be 'vita' or 'naive', got {self.fusion!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.num_queries < 1 or self.decoder_layers < 1 or self.former_layers < 1:
            raise ValueError("num_queries, decoder_layers and former_layers must all be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def tiny(cls, **kw) -> "VITAConfig":
        return replace(cls(), **kw)

    @classmethod
    def small(cls, **kw) -> "VITAConfig":
        return replace(cls(dim=192, num_queries=32, former_layers=2, decoder_layers=6, heads=6, ffn_dim=768,
                           encoder_widths=(64, 128, 256)), **kw)

    @classmethod
    def base(cls, **kw) -> "VITAConfig":
        """The paper's head: Mask2Former-sized decoder (9 layers, 100 queries, D = 256, FFN 2048)."""
        return replace(cls(dim=256, num_queries=100, former_layers=3, decoder_layers=9, heads=8, ffn_dim=2048,
                           num_prototypes=1, encoder_widths=(96, 192, 384), text_dim=512), **kw)


# ----------------------------------------------------------------------------------------------
# Prompt encoding helpers
# ----------------------------------------------------------------------------------------------


def masked_average_pool(features: torch.Tensor, masks: torch.Tensor,
                        may_be_empty: torch.Tensor | None = None) -> torch.Tensor:
    """Visual prompt tokens: average of ``features (S, C, h, w)`` under ``masks (S, K, H, W)``.

    ``S`` shots share the K classes; the pooled vectors are averaged over the shots in which a
    class is annotated (k-shot prompting). Masks are resized to the feature grid by area
    interpolation, so thin objects keep a fractional weight. Returns ``(K, C)``; a class with
    no annotated pixel in any shot raises ``ValueError`` unless ``may_be_empty`` (a ``(K,)`` bool)
    marks it as an unprompted class, whose token is then zero (it is masked out downstream).
    """
    if features.ndim != 4 or masks.ndim != 4 or features.shape[0] != masks.shape[0]:
        raise ValueError(
            f"features must be (S, C, h, w) and masks (S, K, H, W) with the same S; got "
            f"{tuple(features.shape)} and {tuple(masks.shape)}"
        )
    weights = F.interpolate(masks.float(), size=features.shape[-2:], mode="area")  # (S, K, h, w)
    mass = weights.sum((-2, -1))  # (S, K)
    is_empty = mass.sum(0) <= 0
    if may_be_empty is not None:
        is_empty = is_empty & ~may_be_empty.to(is_empty.device).bool()
    empty = is_empty.nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"prompt annotation for class index {empty} is empty in every shot; give each prompted class "
            "at least one annotated pixel (mask, box or point), or leave the class out of the episode."
        )
    pooled = torch.einsum("skhw,schw->skc", weights, features) / mass.clamp_min(1e-6)[..., None]
    shot_has = (mass > 0).float()[..., None]
    return (pooled * shot_has).sum(0) / shot_has.sum(0).clamp_min(1.0)


def box_to_mask(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(K, 4)`` boxes (x0, y0, x1, y1) in pixels, inclusive-exclusive -> ``(K, H, W)`` masks."""
    h, w = size
    ys = torch.arange(h, device=boxes.device)[None, :, None]
    xs = torch.arange(w, device=boxes.device)[None, None, :]
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])


def points_to_mask(points: Sequence[Sequence[tuple[int, int]]], size: tuple[int, int], radius: int = 2) -> torch.Tensor:
    """Per class, a list of (y, x) clicks -> ``(K, H, W)`` masks of small discs around them."""
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = torch.zeros(len(points), h, w, dtype=torch.bool)
    for k, clicks in enumerate(points):
        for y, x in clicks:
            out[k] |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
    return out


def sine_position_encoding(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """2-D sine/cosine position encoding ``(h*w, dim)`` (DETR's, normalised coordinates)."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for a 2-D sine encoding, got {dim}")
    y, x = torch.meshgrid(torch.linspace(0, 1, h, device=device), torch.linspace(0, 1, w, device=device), indexing="ij")
    freqs = 10000 ** (-torch.arange(dim // 4, device=device) / (dim // 4))
    parts = [f(c.flatten()[:, None] * 2 * math.pi * freqs) for c in (y, x) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, -1)


# ----------------------------------------------------------------------------------------------
# Default image encoder and pixel decoder
# ----------------------------------------------------------------------------------------------


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class ConvPyramidEncoder(nn.Module):
    """A small factorised encoder: a patchify stem per modality, one shared body, strides 4 / 8 / 16.

    The per-modality stems play the part of SkySense's modality-specific tokenizers; the body is
    shared. It stands in for the factorised encoder on the CPU; any module with
    ``forward(x, modality) -> [f_4, f_8, f_16]`` and ``out_channels`` can replace it (for example
    the unified backbone of notebook 02, through a thin adapter).
    """

    def __init__(self, in_chans: dict[str, int], widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        self.stems = nn.ModuleDict({
            m: nn.Sequential(nn.Conv2d(c, widths[0], 4, 4), nn.BatchNorm2d(widths[0]), nn.GELU())
            for m, c in in_chans.items()
        })
        self.in_chans = dict(in_chans)
        self.stage1 = _conv_block(widths[0], widths[0], 1)
        self.stage2 = _conv_block(widths[0], widths[1], 2)
        self.stage3 = _conv_block(widths[1], widths[2], 2)
        self.out_channels = list(widths)

    def forward(self, x: torch.Tensor, modality: str) -> list[torch.Tensor]:
        if modality not in self.stems:
            raise ValueError(f"no tokenizer (stem) for modality {modality!r}; known: {sorted(self.stems)}")
        if x.ndim != 4 or x.shape[1] != self.in_chans[modality]:
            raise ValueError(
                f"{modality} input must be (B, {self.in_chans[modality]}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"image size must be a multiple of 16, got {tuple(x.shape[-2:])}")
        f4 = self.stage1(self.stems[modality](x))
        f8 = self.stage2(f4)
        return [f4, f8, self.stage3(f8)]


class PixelDecoder(nn.Module):
    """FPN pixel decoder: multi-scale memory for the decoder and the per-pixel embedding phi(F)."""

    def __init__(self, in_channels: Sequence[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim), nn.GELU())
                                    for _ in in_channels)
        self.mask_features = nn.Conv2d(dim, dim, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Returns memory levels coarse-to-fine and the stride-4 per-pixel embedding."""
        out = None
        levels = []
        for i in reversed(range(len(feats))):
            lat = self.lateral[i](feats[i])
            if out is not None:
                lat = lat + F.interpolate(out, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            out = self.smooth[i](lat)
            levels.append(out)
        return levels, self.mask_features(out)


# ----------------------------------------------------------------------------------------------
# VITA-Former
# ----------------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """Pre-norm multi-head attention with a residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, q, kv=None, attn_mask=None, q_pos=None, k_pos=None):
        qn = self.norm(q)
        kv = qn if kv is None else kv
        key = kv if k_pos is None else kv + k_pos
        query = qn if q_pos is None else qn + q_pos
        return q + self.attn(query, key, kv, attn_mask=attn_mask, need_weights=False)[0]


class _FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        from timm.layers import Mlp

        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, dim)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


def prompt_attention_mask(k: int, fusion: str, device=None) -> torch.Tensor | None:
    """Boolean mask (True = blocked) over ``[V (k), T (k), F (k)]``: V and T isolated, F sees all."""
    if fusion == "naive":
        return None
    blocked = torch.ones(3 * k, 3 * k, dtype=torch.bool, device=device)
    blocked[:k, :k] = False  # V -> V
    blocked[k : 2 * k, k : 2 * k] = False  # T -> T
    blocked[2 * k :, :] = False  # F -> V, T, F
    return blocked


class VITAFormerLayer(nn.Module):
    def __init__(self, cfg: VITAConfig):
        super().__init__()
        self.proto_attn = _Attention(cfg.dim, cfg.heads)
        self.self_attn = _Attention(cfg.dim, cfg.heads)
        self.cross_attn = _Attention(cfg.dim, cfg.heads)
        self.ffn = _FFN(cfg.dim, cfg.ffn_dim)

    def forward(self, pv, pt, pf, prototypes, target, target_pos, fusion: str):
        k = pv.shape[1]
        pv = self.proto_attn(pv, prototypes)  # modality prototypes -> visual tokens (P'_V)
        x = torch.cat([pv, pt, pf], 1)
        x = self.self_attn(x, attn_mask=prompt_attention_mask(k, fusion, x.device))
        x = self.cross_attn(x, target, k_pos=target_pos)  # read the target image
        x = self.ffn(x)
        return x[:, :k], x[:, k : 2 * k], x[:, 2 * k :]


class VITAFormer(nn.Module):
    """Decoupled prompt fusion -> in-context queries ``{V, T, F: (B, K, D)}``."""

    def __init__(self, cfg: VITAConfig):
        super().__init__()
        self.cfg = cfg
        self.prototypes = nn.Parameter(torch.randn(len(MODALITIES), cfg.num_prototypes, cfg.dim) * 0.02)
        self.fuse_init = nn.Linear(cfg.dim, cfg.dim) if cfg.fusion == "vita" else nn.Linear(2 * cfg.dim, cfg.dim)
        self.layers = nn.ModuleList(VITAFormerLayer(cfg) for _ in range(cfg.former_layers))

    def forward(self, pv, pt, prompt_modality: str, target, target_pos) -> dict[str, torch.Tensor]:
        if prompt_modality not in MODALITIES:
            raise ValueError(f"prompt modality must be one of {MODALITIES}, got {prompt_modality!r}")
        b = pv.shape[0]
        protos = self.prototypes[MODALITIES.index(prompt_modality)].expand(b, -1, -1)
        # P_F: linear projection of P_T (VITA); naive fusion: concat + linear (a 1x1 conv).
        pf = self.fuse_init(pt) if self.cfg.fusion == "vita" else self.fuse_init(torch.cat([pv, pt], -1))
        for layer in self.layers:
            pv, pt, pf = layer(pv, pt, pf, protos, target, target_pos, self.cfg.fusion)
        return {"V": pv, "T": pt, "F": pf}


# ----------------------------------------------------------------------------------------------
# VITA-Decoder
# ----------------------------------------------------------------------------------------------


class VITADecoderLayer(nn.Module):
    """Masked cross-attention -> (block-diagonal) self-attention -> FFN (Mask2Former order)."""

    def __init__(self, cfg: VITAConfig):
        super().__init__()
        self.cross_attn = _Attention(cfg.dim, cfg.heads)
        self.self_attn = _Attention(cfg.dim, cfg.heads)
        self.ffn = _FFN(cfg.dim, cfg.ffn_dim)

    def forward(self, x, pos, memory, memory_pos, cross_mask, self_mask):
        x = self.cross_attn(x, memory, attn_mask=cross_mask, q_pos=pos, k_pos=memory_pos)
        x = self.self_attn(x, attn_mask=self_mask, q_pos=pos, k_pos=pos)
        return self.ffn(x)


class VITADecoder(nn.Module):
    """Three replicated query sets, each ``[Q_seg (N); Q_ctx (K)]``, isolated block-diagonally."""

    def __init__(self, cfg: VITAConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.dim, cfg.num_queries
        self.query_feat = nn.Parameter(torch.randn(n, d) * 0.02)  # shared, replicated per mode
        self.query_pos = nn.Parameter(torch.randn(n, d) * 0.02)
        self.type_embed = nn.Embedding(len(MODES), d)  # the query-type embedding
        self.ctx_embed = nn.Parameter(torch.zeros(1, d))  # marks in-context tokens
        self.level_embed = nn.Embedding(3, d)
        self.layers = nn.ModuleList(VITADecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        from timm.layers import Mlp

        self.mask_embed = Mlp(d, d, d)
        self.no_object = nn.Parameter(torch.randn(1, d) * 0.02)
        self.logit_scale = 1.0 / cfg.temperature

    def _predict(self, x, modes, n, k, mask_features, ctx_valid):
        x = self.norm(x)
        outs = {}
        per = n + k
        for i, mode in enumerate(modes):
            seg, ctx = x[:, i * per : i * per + n], x[:, i * per + n : (i + 1) * per]
            seg_n, ctx_n = F.normalize(seg, dim=-1), F.normalize(ctx, dim=-1)
            logits = torch.einsum("bnd,bkd->bnk", seg_n, ctx_n) * self.logit_scale
            logits = logits.masked_fill(~ctx_valid[:, None, :], -1e4)
            no_obj = (seg_n @ F.normalize(self.no_object, dim=-1).T) * self.logit_scale
            masks = torch.einsum("bnd,bdhw->bnhw", self.mask_embed(seg), mask_features)
            outs[mode] = {"class_logits": torch.cat([logits, no_obj], -1), "mask_logits": masks}
        return outs

    def forward(self, ctx: dict[str, torch.Tensor], modes: Sequence[str], memory: list[torch.Tensor],
                mask_features: torch.Tensor, ctx_valid: torch.Tensor) -> dict:
        b, k, d = ctx[modes[0]].shape
        n = self.cfg.num_queries
        parts, pos_parts = [], []
        for mode in modes:
            t = self.type_embed.weight[MODES.index(mode)]
            parts += [self.query_feat.expand(b, -1, -1) + t, ctx[mode] + self.ctx_embed + t]
            pos_parts += [self.query_pos.expand(b, -1, -1), torch.zeros(b, k, d, device=mask_features.device)]
        x, pos = torch.cat(parts, 1), torch.cat(pos_parts, 1)
        per, total = n + k, len(modes) * (n + k)
        # block-diagonal self-attention: a mode's queries never see another mode's.
        mode_id = torch.arange(total, device=x.device) // per
        self_mask = mode_id[:, None] != mode_id[None, :]
        # in-context tokens of invalid (unprompted) classes are hidden from everyone
        valid_tok = torch.cat([torch.cat([torch.ones(b, n, dtype=torch.bool, device=x.device), ctx_valid], 1)]
                              * len(modes), 1)
        mem_flat = [m.flatten(2).transpose(1, 2) for m in memory]
        mem_pos = [sine_position_encoding(m.shape[-2], m.shape[-1], d, m.device) + self.level_embed.weight[i % 3]
                   for i, m in enumerate(memory)]
        predictions = [self._predict(x, modes, n, k, mask_features, ctx_valid)]
        heads = self.layers[0].cross_attn.attn.num_heads
        for i, layer in enumerate(self.layers):
            level = i % len(memory)
            h, w = memory[level].shape[-2:]
            cross_mask = self._cross_mask(predictions[-1], modes, n, k, (h, w), b, heads)
            sm = self_mask[None].expand(b, -1, -1) | ~valid_tok[:, None, :]
            sm = sm & ~torch.eye(total, dtype=torch.bool, device=x.device)  # a token always sees itself
            sm = sm.repeat_interleave(heads, 0)
            x = layer(x, pos, mem_flat[level], mem_pos[level], cross_mask, sm)
            predictions.append(self._predict(x, modes, n, k, mask_features, ctx_valid))
        return {"final": predictions[-1], "aux": predictions[:-1]}

    @staticmethod
    def _cross_mask(pred, modes, n, k, size, b, heads):
        """Mask2Former masked attention: a query attends only where its previous mask is > 0.5."""
        rows = []
        for mode in modes:
            m = F.interpolate(pred[mode]["mask_logits"].detach(), size=size, mode="bilinear", align_corners=False)
            blocked = m.flatten(2).sigmoid() < 0.5  # (B, N, hw)
            blocked[blocked.all(-1)] = False  # an empty mask attends everywhere
            rows += [blocked, torch.zeros(b, k, size[0] * size[1], dtype=torch.bool, device=m.device)]
        return torch.cat(rows, 1).repeat_interleave(heads, 0)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class VITA(nn.Module):
    """Encoder + prompt flow + VITA-Former + VITA-Decoder.

    ``forward(target, target_modality, prompt_images, prompt_masks, prompt_modality, text_emb,
    modes=("V", "T", "F"), ctx_valid=None)``:

    * ``target``: ``(B, C, H, W)``; ``prompt_images``: ``(S, C, H', W')`` shots shared by the batch;
      ``prompt_masks``: ``(S, K, H', W')`` annotations of the K prompted classes in those shots
      (use :func:`box_to_mask` / :func:`points_to_mask` for boxes and clicks);
    * ``text_emb``: ``(K, text_dim)`` sentence embeddings of the K class names;
    * ``ctx_valid``: ``(B, K)`` bool, False for classes to ignore (default all True).

    Returns ``{mode: {"class_logits" (B, N, K+1), "mask_logits" (B, N, H/4, W/4)}}`` under
    ``"final"`` plus the per-layer ``"aux"`` list (deep supervision).
    """

    def __init__(self, cfg: VITAConfig | None = None, encoder: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VITAConfig.tiny()
        self.encoder = encoder or ConvPyramidEncoder(dict(cfg.in_chans), cfg.encoder_widths)
        self.pixel_decoder = PixelDecoder(self.encoder.out_channels, cfg.dim)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim)
        self.former = VITAFormer(cfg)
        self.decoder = VITADecoder(cfg)

    def features(self, x: torch.Tensor, modality: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.pixel_decoder(self.encoder(x, modality))

    def forward(self, target, target_modality, prompt_images, prompt_masks, prompt_modality, text_emb,
                modes: Sequence[str] = MODES, ctx_valid: torch.Tensor | None = None) -> dict:
        modes = tuple(modes)
        if not modes or any(m not in MODES for m in modes):
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes}")
        if prompt_images is None and ("V" in modes or "F" in modes):
            raise ValueError("modes V and F need prompt_images and prompt_masks; pass them or use modes=('T',)")
        if text_emb is None and ("T" in modes or "F" in modes):
            raise ValueError("modes T and F need text_emb (class-name embeddings); pass them or use modes=('V',)")
        if prompt_images is not None:
            if prompt_modality != target_modality:
                raise ValueError(
                    f"prompt modality {prompt_modality!r} differs from target modality {target_modality!r}; "
                    "VITA prompts and targets share a modality (use an optical prompt for an optical target, "
                    "a SAR prompt for a SAR target)."
                )
            if prompt_masks is None or prompt_masks.ndim != 4 or prompt_masks.shape[0] != prompt_images.shape[0]:
                raise ValueError(
                    f"prompt_masks must be (S, K, H, W) for S = {prompt_images.shape[0]} shots, got "
                    f"{None if prompt_masks is None else tuple(prompt_masks.shape)}"
                )
            if prompt_masks.shape[-2:] != prompt_images.shape[-2:]:
                raise ValueError(
                    f"prompt mask size {tuple(prompt_masks.shape[-2:])} differs from prompt image size "
                    f"{tuple(prompt_images.shape[-2:])}; resize the annotation (nearest) to the prompt image."
                )
        k = prompt_masks.shape[1] if prompt_images is not None else text_emb.shape[0]
        if text_emb is not None and tuple(text_emb.shape) != (k, self.cfg.text_dim):
            raise ValueError(f"text_emb must be (K={k}, {self.cfg.text_dim}), got {tuple(text_emb.shape)}")
        b = target.shape[0]
        ctx_valid = torch.ones(b, k, dtype=torch.bool, device=target.device) if ctx_valid is None else ctx_valid.bool()
        if ctx_valid.shape != (b, k):
            raise ValueError(f"ctx_valid must be (B={b}, K={k}), got {tuple(ctx_valid.shape)}")

        memory, mask_features = self.features(target, target_modality)
        d = self.cfg.dim
        # An absent prompt kind is zero-filled: VITA-Former's masks keep it away from the other
        # unimodal branch; for naive fusion that is the "concat with a missing input" it sees.
        if prompt_images is not None:
            _, prompt_pixels = self.features(prompt_images, prompt_modality)
            # a class no target prompts (ctx_valid False everywhere) may lack an annotation
            unprompted = ~ctx_valid.any(0)
            pv = masked_average_pool(prompt_pixels, prompt_masks, unprompted)[None].expand(b, -1, -1)
        else:
            pv = torch.zeros(b, k, d, device=target.device)
        pt = self.text_proj(text_emb.to(target.dtype))[None].expand(b, -1, -1) if text_emb is not None \
            else torch.zeros(b, k, d, device=target.device)
        coarse = memory[0]
        tgt_tokens = coarse.flatten(2).transpose(1, 2)
        tgt_pos = sine_position_encoding(coarse.shape[-2], coarse.shape[-1], d, coarse.device)
        ctx = self.former(pv, pt, prompt_modality if prompt_images is not None else target_modality,
                          tgt_tokens, tgt_pos)
        return self.decoder(ctx, modes, memory, mask_features, ctx_valid)


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-class score maps ``(B, K, H, W)``: sum over queries of p(class) x sigmoid(mask).

    The no-object column is dropped, as in Mask2Former's semantic inference.
    """
    prob = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bnk,bnhw->bkhw", prob, mask_logits.sigmoid())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_breakdown(model: VITA) -> dict[str, int]:
    """Parameters per part. The paper's "VITA-Former + VITA-Decoder: 18M" counts the two heads;
    a Mask2Former-style decoder also needs the pixel decoder (FPN) and a text projection, listed
    separately here so the comparison is honest."""
    parts = {"encoder": model.encoder, "pixel_decoder": model.pixel_decoder, "text_proj": model.text_proj,
             "vita_former": model.former, "vita_decoder": model.decoder}
    out = {name: count_parameters(m) for name, m in parts.items()}
    out["former+decoder"] = out["vita_former"] + out["vita_decoder"]
    out["former+decoder+pixel_decoder+text_proj"] = out["former+decoder"] + out["pixel_decoder"] + out["text_proj"]
    return out


# ----------------------------------------------------------------------------------------------
# Reusing notebook 02's backbone as the image encoder
# ----------------------------------------------------------------------------------------------


class BackboneAdapter(nn.Module):
    """Wraps any ``backbone(x, modality, gsd) -> [f_1, f_2, f_3, ...]`` (e.g. the SkySense V2
    :class:`rslab.models.backbone.UnifiedBackbone` of notebook 02) into VITA's encoder
    interface: its first three stages resized to strides 4 / 8 / 16.

    ``gsd`` is passed to the backbone (the synthetic optical and SAR share 1 m pixels, whereas
    the backbone's SAR default is 10 m, which would change its adaptive patch merging).
    """

    def __init__(self, backbone: nn.Module, gsd: float | None = 1.0):
        super().__init__()
        if not hasattr(backbone, "out_channels") or len(backbone.out_channels) < 3:
            raise ValueError("backbone must expose out_channels with at least three stages")
        self.backbone, self.gsd = backbone, gsd
        self.out_channels = list(backbone.out_channels[:3])

    def forward(self, x: torch.Tensor, modality: str) -> list[torch.Tensor]:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"image size must be a multiple of 16, got {tuple(x.shape[-2:])}")
        feats = self.backbone(x, modality, self.gsd)[:3]
        h, w = x.shape[-2:]
        return [f if f.shape[-2:] == (h // s, w // s) else
                F.interpolate(f, size=(h // s, w // s), mode="bilinear", align_corners=False)
                for f, s in zip(feats, (4, 8, 16))]
