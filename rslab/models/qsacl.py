"""Query-based Semantic Aggregation Contrastive Learning (QSACL), SkySense V2 Sec. 3.2.

Why: a remote-sensing scene holds many semantics (water, fields, buildings...), so two
random crops of it often show different things and contrasting their *whole-image*
embeddings asks the network to match unrelated content. QSACL instead lets ``m`` learnable
queries cross-attend to each view's feature map; query ``i`` gathers "its" kind of content
(``z_i = softmax(q_i K^T / sqrt(d)) V``), and views are contrasted query by query (Eq. 3,
:func:`rslab.losses.qsacl.qsacl_loss`).

Pieces:

- :class:`QueryAggregator`: the ``m`` queries + multi-head cross-attention over a view's
  last-stage tokens (also returns the attention maps, for "what does each query look at").
- :class:`CompetitiveQueryAggregator`: a deviation (``QSACLConfig.attention="compete"``): the
  softmax runs over the queries for every token (slot attention), keys optionally standardised
  per view, so the queries split the map instead of all attending alike.
- :func:`view_overlap`: how much of a local crop lies inside a global crop (a data check).
- :class:`MeanAggregator`: global average pooling, ``m = 1``: the image-level contrastive
  baseline with the same backbone, heads, loss and budget.
- :class:`ContrastiveSSL`: the student (backbone -> aggregator -> projector -> predictor).
  The teacher is an EMA copy of the whole student (``rslab.train.ema.EMA``) used without its
  predictor, as in MoCo v3 / BYOL; the paper states "EMA teacher" and leaves heads open.
- :func:`multi_crop`: global and local views of each scene (random resized crops + flips +
  intensity jitter), batched with ``torchvision.ops.roi_align``.
- :func:`pretraining_loss`: one step's loss for a batch of scenes (QSACL or baseline, by the
  student's aggregator), plus the MoE load-balancing term when the backbone has MoE.
- Evaluation pieces: :func:`extract_features`, :class:`LinearProbe` (frozen features + 1x1
  conv), :func:`query_attention_maps`, :func:`query_class_affinity`.

The training runs (pre-training with the Trainer + EMA teacher, fitting the probe) are in
:mod:`rslab.recipes.qsacl` (``pretrain``, ``fit_linear_probe``, ``linear_probe_miou``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torchvision.ops import roi_align

from rslab.losses.qsacl import qsacl_loss
from rslab.models.backbone import UnifiedBackbone

__all__ = [
    "QSACLConfig",
    "QueryAggregator",
    "CompetitiveQueryAggregator",
    "MeanAggregator",
    "ContrastiveSSL",
    "multi_crop",
    "view_overlap",
    "pretraining_loss",
    "extract_features",
    "LinearProbe",
    "feature_diagnostics",
    "query_attention_maps",
    "query_class_affinity",
]


KEY_NORMS = ("layer", "instance")  # keys of CompetitiveQueryAggregator (QSACLConfig.key_norm)


@dataclass
class QSACLConfig:
    """QSACL pre-training head and view settings. ``aggregation="mean"`` = image-level baseline."""

    num_queries: int = 8  # m
    num_heads: int = 4  # cross-attention heads (must divide the feature dim)
    # std of the learnable queries at init; None = the aggregator's own default: 0.02 (trunc-normal,
    # as ViT tokens) for attention="paper", 1.0 for "compete" (tiny queries give every query the
    # same ~0 logits, so none can win tokens); see ``init_std``
    query_init_std: float | None = None
    proj_dim: int = 128
    hidden_dim: int = 512
    temperature: float = 0.2
    aggregation: str = "query"  # "query" (QSACL) | "mean" (image-level contrastive baseline)
    # "paper": each query's softmax runs over the tokens (standard cross-attention, Sec. 3.2);
    # "compete": softmax over the queries for every token (slot-attention style), a deviation
    attention: str = "paper"
    # keys of the "compete" aggregator: "layer" (LayerNorm per token) or "instance" (each channel
    # standardised over the view's tokens, so attention sees within-image differences only)
    key_norm: str = "layer"
    feature_stage: int = 3  # which backbone stage the queries read (0-based; 3 = last)
    global_size: int = 64
    local_size: int = 32
    num_global: int = 1
    num_local: int = 2
    global_scale: tuple[float, float] = (0.4, 1.0)  # crop area as a fraction of the scene
    local_scale: tuple[float, float] = (0.05, 0.25)
    intensity_jitter: float = 0.2  # per-view multiplicative jitter (per channel for optical)
    momentum: tuple[float, float] = (0.99, 1.0)  # EMA teacher, cosine from start to end
    moe_aux_weight: float = 0.01  # weight of the MoE load-balancing loss when MoE is on

    def __post_init__(self) -> None:
        if self.aggregation not in ("query", "mean"):
            raise ValueError(f"aggregation must be 'query' (QSACL) or 'mean' (image-level baseline), "
                             f"got {self.aggregation!r}")
        if self.attention not in ("paper", "compete"):
            raise ValueError(f"attention must be 'paper' (softmax over tokens) or 'compete' (softmax over queries), "
                             f"got {self.attention!r}")
        if self.key_norm not in KEY_NORMS:
            raise ValueError(f"key_norm must be one of {KEY_NORMS}, got {self.key_norm!r}")
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")
        if self.num_global < 1 or self.num_local < 1:
            raise ValueError("QSACL needs at least one global and one local view")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.feature_stage <= 3:
            raise ValueError(f"feature_stage must be 0..3, got {self.feature_stage}")
        if self.query_init_std is not None and not self.query_init_std > 0:
            raise ValueError(f"query_init_std must be > 0 (or None for the aggregator default), "
                             f"got {self.query_init_std}")

    @property
    def init_std(self) -> float:
        """The query init std actually used: ``query_init_std``, or the aggregator's default
        (0.02 for ``attention="paper"``, 1.0 for ``"compete"``) when it is None."""
        if self.query_init_std is not None:
            return float(self.query_init_std)
        return 1.0 if self.attention == "compete" else 0.02

    @classmethod
    def tiny(cls, **overrides) -> "QSACLConfig":
        return replace(cls(), **overrides)

    @classmethod
    def small(cls, **overrides) -> "QSACLConfig":
        return replace(cls(num_queries=16, num_heads=8, proj_dim=256, hidden_dim=2048, global_size=128,
                           local_size=64, num_local=4), **overrides)

    @classmethod
    def base(cls, **overrides) -> "QSACLConfig":
        """Paper-scale views (global 224, 6 local crops of 96 as in multi-crop SSL)."""
        return replace(cls(num_queries=16, num_heads=16, proj_dim=256, hidden_dim=4096, global_size=224,
                           local_size=96, num_global=2, num_local=6, momentum=(0.996, 1.0)), **overrides)


class QueryAggregator(nn.Module):
    """``m`` learnable queries cross-attending to a feature map (the "query-based semantic
    aggregation" of Sec. 3.2). Returns ``z`` (B, m, C) and the head-averaged attention
    (B, m, H, W), each query's weights summing to 1 over the map."""

    def __init__(self, dim: int, num_queries: int, num_heads: int, init_std: float = 0.02) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"feature dim {dim} is not divisible by num_heads={num_heads}")
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.queries = nn.Parameter(torch.zeros(num_queries, dim))
        trunc_normal_(self.queries, std=init_std)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = feats.shape
        kv = feats.flatten(2).transpose(1, 2)  # (B, HW, C)
        q = self.queries.unsqueeze(0).expand(B, -1, -1)
        z, attn = self.attn(q, kv, kv, need_weights=True, average_attn_weights=True)
        return z, attn.reshape(B, -1, H, W)


class CompetitiveQueryAggregator(nn.Module):
    """Queries that *compete* for tokens (slot attention, Locatello et al. 2020, one iteration):
    ``a = softmax_over_queries(q_i . k_j / sqrt(d))``, then each query takes the weighted mean of
    the values of the tokens it won, ``z_i = sum_j a_ij v_j / sum_j a_ij``. Keys, queries and
    values are linear maps of the LayerNorm-ed tokens. **A deviation from SkySense V2**, whose
    queries use standard cross-attention (softmax over tokens, :class:`QueryAggregator`): with
    that, nothing stops every query from attending alike, and in our CPU runs they all did
    (attention lift ~1 for every class), which turns QSACL into ``m`` copies of mean pooling.
    Returns ``z`` (B, m, C) and the normalised weights (B, m, H, W), each query's summing to 1."""

    def __init__(self, dim: int, num_queries: int, init_std: float = 1.0, key_norm: str = "layer",
                 eps: float = 1e-8) -> None:
        super().__init__()
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        if key_norm not in KEY_NORMS:
            raise ValueError(f"key_norm must be one of {KEY_NORMS}, got {key_norm!r}")
        self.key_norm = key_norm
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * init_std)
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        for lin in (self.to_q, self.to_k, self.to_v):
            nn.init.xavier_uniform_(lin.weight)
        self.scale = dim ** -0.5
        self.eps = eps

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = feats.shape
        x = self.norm(feats.flatten(2).transpose(1, 2))  # (B, HW, C)
        if self.key_norm == "instance":  # standardise each channel over this view's tokens
            kx = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True).clamp_min(1e-5)
        else:
            kx = x
        k, v = self.to_k(kx), self.to_v(x)
        q = self.to_q(self.queries)  # (m, C)
        logits = torch.einsum("mc,bnc->bmn", q, k) * self.scale
        a = logits.softmax(dim=1) + self.eps  # competition: each token's weights sum to 1 over queries
        w = a / a.sum(dim=-1, keepdim=True)  # then a weighted mean per query
        return torch.bmm(w, v), w.reshape(B, -1, H, W)


class MeanAggregator(nn.Module):
    """Global average pooling as a single "query": the image-level contrastive baseline."""

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = feats.shape
        z = feats.mean(dim=(2, 3)).unsqueeze(1)
        return z, feats.new_full((B, 1, H, W), 1.0 / (H * W))


class PerQueryMLP(nn.Module):
    """MoCo-v3 projection/prediction head applied to every query: Linear -> BN -> GELU -> Linear
    -> BN (affine=False). BatchNorm statistics are per query and channel over the batch (the
    (B, m, D) input is viewed as (B, m * D)); this removes the component shared by all images,
    without which the normalised embeddings of an untrained backbone are nearly identical and
    InfoNCE has almost no signal (we saw the loss sit at log B for a whole run without it)."""

    def __init__(self, num_queries: int, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(num_queries * hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.bn2 = nn.BatchNorm1d(num_queries * out_dim, affine=False)

    @staticmethod
    def _bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        B, m, D = x.shape
        return bn(x.reshape(B, m * D)).reshape(B, m, D)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.act(self._bn(self.bn1, self.fc1(z)))
        return self._bn(self.bn2, self.fc2(z))


class ContrastiveSSL(nn.Module):
    """Student network for QSACL (``cfg.aggregation="query"``) or the image-level baseline
    (``"mean"``): backbone -> aggregator -> projector -> predictor, applied per query."""

    def __init__(self, backbone: UnifiedBackbone, cfg: QSACLConfig | None = None) -> None:
        super().__init__()
        if not isinstance(backbone, UnifiedBackbone):
            raise ValueError(f"backbone must be a UnifiedBackbone, got {type(backbone).__name__}")
        self.cfg = cfg = cfg or QSACLConfig()
        self.backbone = backbone
        dim = backbone.out_channels[cfg.feature_stage]
        if cfg.aggregation == "query" and cfg.attention == "compete":
            self.aggregator: nn.Module = CompetitiveQueryAggregator(dim, cfg.num_queries, cfg.init_std, cfg.key_norm)
        elif cfg.aggregation == "query":
            self.aggregator = QueryAggregator(dim, cfg.num_queries, cfg.num_heads, cfg.init_std)
        else:
            self.aggregator = MeanAggregator()
        m = self.num_queries
        self.projector = PerQueryMLP(m, dim, cfg.hidden_dim, cfg.proj_dim)
        self.predictor = PerQueryMLP(m, cfg.proj_dim, cfg.hidden_dim, cfg.proj_dim)

    @property
    def num_queries(self) -> int:
        return self.cfg.num_queries if self.cfg.aggregation == "query" else 1

    def aggregate(self, x: torch.Tensor, modality: str, gsd: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(aggregated features (B, m, C), attention maps (B, m, H_s, W_s))."""
        feats = self.backbone(x, modality=modality, gsd=gsd)[self.cfg.feature_stage]
        return self.aggregator(feats)

    def embed(self, x: torch.Tensor, modality: str, gsd: float | None = None, predict: bool = True) -> torch.Tensor:
        """Per-query embeddings (B, m, proj_dim); the predictor is for the student only."""
        z, _ = self.aggregate(x, modality, gsd)
        z = self.projector(z)
        return self.predictor(z) if predict else z

    def forward(self, x: torch.Tensor, modality: str, gsd: float | None = None) -> torch.Tensor:
        return self.embed(x, modality, gsd, predict=True)


# ---------------------------------------------------------------------------- views
def _random_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                  generator: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes x1, y1, x2, y2 in pixels; square-ish (aspect in [3/4, 4/3]) crops whose area
    is ``scale`` of the image, clipped to fit."""
    area = torch.empty(n).uniform_(*scale, generator=generator) * height * width
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(2, width)
    h = (area / ratio).sqrt().clamp(2, height)
    x1 = torch.rand(n, generator=generator) * (width - w)
    y1 = torch.rand(n, generator=generator) * (height - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def _one_view(images: torch.Tensor, size: int, scale: tuple[float, float], jitter: float, per_channel: bool,
              generator: torch.Generator) -> torch.Tensor:
    B, C, H, W = images.shape
    boxes = _random_boxes(B, H, W, scale, generator)
    rois = torch.cat([torch.arange(B, dtype=boxes.dtype)[:, None], boxes], dim=1).to(images)
    view = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip_h = torch.rand(B, generator=generator) < 0.5
    flip_v = torch.rand(B, generator=generator) < 0.5
    view = torch.where(flip_h.to(view.device)[:, None, None, None], view.flip(-1), view)
    view = torch.where(flip_v.to(view.device)[:, None, None, None], view.flip(-2), view)
    if jitter > 0:
        shape = (B, C if per_channel else 1, 1, 1)
        gain = 1 + (torch.rand(shape, generator=generator) * 2 - 1) * jitter
        view = view * gain.to(view)
    return view


def multi_crop(images: torch.Tensor, cfg: QSACLConfig, generator: torch.Generator | None = None,
               modality: str = "optical",
               alt_images: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Global and local views of each scene in ``images`` (B, C, H, W).

    Returns ``(globals, locals)``: lists of ``cfg.num_global`` tensors (B, C, G, G) and
    ``cfg.num_local`` tensors (B, C, L, L). Every view is an independent random resized crop
    (area fraction ``cfg.global_scale`` / ``cfg.local_scale``) with random flips and a
    multiplicative intensity jitter (per channel for optical, one gain for SAR so the VV/VH
    ratio, a physical quantity, is kept).

    ``alt_images`` (optional, same shape as ``images``): another rendering of the *same ground*
    (e.g. the same synthetic layout in another regional style, or a second acquisition); when
    given, the local views are cropped from it and the global views from ``images``, so every
    (global, local) pair the loss contrasts crosses the two renderings. ``None`` = the usual
    multi-crop of one image.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {getattr(images, 'shape', None)}")
    if alt_images is not None and (not isinstance(alt_images, torch.Tensor) or alt_images.shape != images.shape):
        raise ValueError(f"alt_images must match images {tuple(images.shape)}, "
                         f"got {getattr(alt_images, 'shape', None)}")
    generator = generator or torch.Generator().manual_seed(0)
    per_channel = modality != "sar"
    local_source = images if alt_images is None else alt_images
    globals_ = [_one_view(images, cfg.global_size, cfg.global_scale, cfg.intensity_jitter, per_channel, generator)
                for _ in range(cfg.num_global)]
    locals_ = [_one_view(local_source, cfg.local_size, cfg.local_scale, cfg.intensity_jitter, per_channel, generator)
               for _ in range(cfg.num_local)]
    return globals_, locals_


@torch.no_grad()
def view_overlap(cfg: QSACLConfig, scene_size: int, n: int = 10_000, seed: int = 0) -> dict[str, float]:
    """How much of a local crop lies inside a global crop of the same scene, for the crop boxes
    :func:`multi_crop` draws with ``cfg`` on ``scene_size`` px scenes (``n`` random pairs).

    QSACL's motivation is views that show *different* content; when the local crop is almost
    always inside the global one, the two views share their semantics and image-level
    contrast is already aligned. Returns ``mean``, ``median``, ``below_half`` (share of pairs
    with less than half of the local crop inside the global one) and ``disjoint`` (no overlap)."""
    if not isinstance(cfg, QSACLConfig):
        raise ValueError(f"cfg must be a QSACLConfig, got {type(cfg).__name__}")
    if scene_size < 2 or n < 1:
        raise ValueError(f"need scene_size >= 2 and n >= 1, got {scene_size}, {n}")
    g = torch.Generator().manual_seed(seed)
    glob = _random_boxes(n, scene_size, scene_size, cfg.global_scale, g)
    loc = _random_boxes(n, scene_size, scene_size, cfg.local_scale, g)
    ix = (torch.minimum(glob[:, 2], loc[:, 2]) - torch.maximum(glob[:, 0], loc[:, 0])).clamp_min(0)
    iy = (torch.minimum(glob[:, 3], loc[:, 3]) - torch.maximum(glob[:, 1], loc[:, 1])).clamp_min(0)
    frac = ix * iy / ((loc[:, 2] - loc[:, 0]) * (loc[:, 3] - loc[:, 1]))
    return {"mean": float(frac.mean()), "median": float(frac.median()),
            "below_half": float((frac < 0.5).float().mean()), "disjoint": float((frac == 0).float().mean())}


def pretraining_loss(student: ContrastiveSSL, teacher: ContrastiveSSL, images: torch.Tensor, modality: str,
                     gsd: float | None = None, generator: torch.Generator | None = None,
                     alt_images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss of one step on a batch of scenes: make views, embed them with the student (with
    predictor) and the teacher (without, no grad), apply Eq. 3. Returns ``{"loss", "contrastive",
    "moe_aux"}``; ``loss`` is what to back-propagate. ``alt_images``: see :func:`multi_crop`."""
    cfg = student.cfg
    globals_, locals_ = multi_crop(images, cfg, generator, modality, alt_images)
    views = globals_ + locals_
    with torch.no_grad():
        teacher_z = [teacher.embed(v, modality, gsd, predict=False) for v in views]
    student_z, moe_aux = [], []
    for v in views:
        student_z.append(student.embed(v, modality, gsd, predict=True))
        moe_aux.append(student.backbone.moe_aux_loss())
    g = cfg.num_global
    contrastive = qsacl_loss(student_z[:g], student_z[g:], teacher_z[:g], teacher_z[g:], cfg.temperature)
    aux = torch.stack(moe_aux).mean()
    return {"loss": contrastive + cfg.moe_aux_weight * aux, "contrastive": contrastive.detach(),
            "moe_aux": aux.detach()}


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def extract_features(backbone: UnifiedBackbone, images: torch.Tensor, modality: str, gsd: float | None = None,
                     stages: tuple[int, ...] = (3,), batch_size: int = 16) -> torch.Tensor:
    """Frozen features for a linear probe: the chosen stages' maps, upsampled (bilinear) to the
    finest of them and concatenated along channels. Returns (N, sum C_s, h, w)."""
    if not stages or any(not 0 <= s <= 3 for s in stages):
        raise ValueError(f"stages must be a non-empty tuple of stage indices 0..3, got {stages}")
    was_training = backbone.training
    backbone.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        feats = backbone(images[i : i + batch_size], modality=modality, gsd=gsd)
        chosen = [feats[s] for s in stages]
        size = max((f.shape[-2:] for f in chosen), key=lambda hw: hw[0] * hw[1])
        out.append(torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                              if f.shape[-2:] != size else f for f in chosen], dim=1))
    backbone.train(was_training)
    return torch.cat(out)


class LinearProbe(nn.Module):
    """Per-channel standardisation (fixed from the training features) + a 1x1 conv."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))
        self.conv = nn.Conv2d(mean.numel(), num_classes, kernel_size=1)

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std

    def classify(self, standardised: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Logits upsampled (bilinear) to ``out_size`` from already standardised features."""
        return F.interpolate(self.conv(standardised), size=out_size, mode="bilinear", align_corners=False)

    def forward(self, feats: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        return self.classify(self.standardise(feats), out_size)


@torch.no_grad()
def feature_diagnostics(features: torch.Tensor, max_tokens: int = 20_000) -> dict[str, float]:
    """Is a frozen feature map collapsed? For ``features`` (N, C, h, w) returns

    - ``effective_rank``: exp of the entropy of the normalised singular values (Roy & Vetterli
      2007) of the per-channel standardised tokens, i.e. of the channel correlation spectrum:
      1 = every channel says the same thing, C = all channels independent. Standardising first
      makes it blind to a constant offset or per-channel scale (which the probe removes too).
    - ``within_image_var`` / ``between_image_var``: mean over channels of the raw variance of
      the tokens inside an image, and of the image means across images. Both near 0 = every
      token is (nearly) the same vector; within near 0 alone = no spatial information left.

    At most ``max_tokens`` tokens (evenly strided) enter the SVD.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[0] < 2:
        raise ValueError(f"features must be a (N >= 2, C, h, w) tensor, got {getattr(features, 'shape', None)}")
    f = features.float()
    tokens = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    tokens = tokens[:: max(1, tokens.shape[0] // max_tokens)]
    z = (tokens - tokens.mean(0)) / tokens.std(0).clamp_min(1e-8)
    sv = torch.linalg.svdvals(z)
    p = sv / sv.sum().clamp_min(1e-12)
    erank = float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
    return {"effective_rank": erank, "within_image_var": float(f.var(dim=(2, 3)).mean()),
            "between_image_var": float(f.mean(dim=(2, 3)).var(dim=0).mean())}


@torch.no_grad()
def query_attention_maps(student: ContrastiveSSL, images: torch.Tensor, modality: str,
                         gsd: float | None = None) -> torch.Tensor:
    """What each query attends to: (B, m, H, W) cross-attention weights, upsampled to the
    image size (each query's map sums to ~1 over the image before upsampling). Runs on the
    model's device, returns a CPU tensor."""
    was_training = student.training
    student.eval()
    _, attn = student.aggregate(images.to(next(student.parameters()).device), modality, gsd)
    student.train(was_training)
    return F.interpolate(attn, size=images.shape[-2:], mode="bilinear", align_corners=False).cpu()


def query_class_affinity(attention: torch.Tensor, labels: torch.Tensor, num_classes: int,
                         ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Does a query specialise? For attention maps (B, m, H, W) (from :func:`query_attention_maps`)
    and labels (B, H, W): returns ``(share, lift)``, both (m, K). ``share[i, k]`` is the fraction
    of query ``i``'s attention mass that falls on class ``k``; ``lift = share / pixel share of k``
    (1 = attends to the class as often as it occurs, > 1 = prefers it; NaN for absent classes)."""
    if attention.ndim != 4 or labels.ndim != 3 or attention.shape[0] != labels.shape[0] \
            or attention.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"attention (B, m, H, W) and labels (B, H, W) must match, got "
                         f"{tuple(attention.shape)} and {tuple(labels.shape)}")
    valid = labels != ignore_index
    onehot = F.one_hot(torch.where(valid, labels, 0).long(), num_classes).float() * valid[..., None]  # (B, H, W, K)
    mass = torch.einsum("bmhw,bhwk->mk", attention.float(), onehot)
    share = mass / mass.sum(dim=1, keepdim=True).clamp_min(1e-12)
    freq = onehot.sum(dim=(0, 1, 2))
    freq = freq / freq.sum().clamp_min(1)
    lift = share / freq.where(freq > 0, torch.tensor(float("nan")))
    return share, lift
