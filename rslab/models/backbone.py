"""SkySense V2's unified multi-modal backbone (Sec. 3.1 of arXiv:2507.13812).

One four-stage hierarchical encoder, one set of weights, for every modality:

- **Tokenizers** (one per modality): a patch embedding (timm ``PatchEmbed``) that maps an
  image of that modality's channels to ``embed_dim`` tokens. This is the only
  modality-specific part besides the prompt tokens.
- **Stages 1-2**: Swin Transformer V2 blocks (timm ``SwinTransformerV2Block``; window
  attention, alternating shifted windows, window 8 in the paper).
- **Stages 3-4**: standard ViT blocks (timm ``Block``) with global self-attention.
- **Adaptive Patch Merging (APM)** between stages (:class:`AdaptivePatchMerging`): 2x2
  merge with channel doubling for high-resolution input, or a resolution-preserving linear
  projection for medium-resolution input, chosen per stage from the ground sampling
  distance (GSD) so that geographically aligned inputs end up on aligned feature grids.
- **Modality prompt tokens** (:class:`ModalityPrompts`): ``P`` learnable tokens per modality
  per stage in stages 3-4, concatenated before the stage and dropped after its last block:
  ``[E_drop, E^{s+1}] = F_s([P^s, E^s])`` (Eq. 1).
- **MoE** (optional): the FFN of the last ``moe_blocks`` global blocks becomes a top-1
  mixture of experts (:class:`rslab.models.moe.MoEMlp`; ``M = 8``, ``L = 6`` in the paper).

``UnifiedBackbone.forward(x, modality)`` returns one feature map ``(B, C_s, H_s, W_s)`` per
stage (``features_only`` style) for dense heads.

Inputs are expected normalised: optical reflectance in [0, 1] as the ``Sample`` stores it,
SAR passed through :func:`rslab.data.sar.normalize_sar` (models never see raw dB).

Choices the paper leaves open, made here and stated:

- Global stages use no absolute position embedding: positions enter through the Swin-V2
  relative position bias of stages 1-2, which also keeps the backbone resolution-agnostic.
- The APM "keep" branch reuses the merge projection with its four 2x2 weight slices
  averaged (our reading of "a linear projection with averaged weights"), so the branch adds
  no parameters and a 2x2 block of identical tokens maps to the same output either way.
- The APM rule: at each stage boundary, merge iff the merged token would still be no
  coarser than ``apm_target_gsd`` (10 m by default, the Sentinel grid). With the paper's
  inputs (HR optical ~0.3 m, patch 4; S1/S2 at 10 m) this gives "merge at every stage" for
  HR optical and "keep" for SAR/MS, as the paper describes.
- Sizes: feature maps entering window stages must be multiples of the window size. Inputs
  that are not raise a ``ValueError`` naming the nearest valid sizes (no silent padding).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed, trunc_normal_
from timm.models.swin_transformer_v2 import SwinTransformerV2Block
from timm.models.vision_transformer import Block
from torch import nn

from rslab.io import write_atomically, write_text_atomically
from rslab.models.moe import MoEMlp

__all__ = [
    "ModalitySpec",
    "DEFAULT_MODALITIES",
    "BackboneConfig",
    "AdaptivePatchMerging",
    "ModalityPrompts",
    "UnifiedBackbone",
    "build_backbone",
    "count_parameters",
    "profile_variants",
    "save_backbone",
    "load_backbone",
    "option_variants",
    "preset_sizes",
]


@dataclass(frozen=True)
class ModalitySpec:
    """What the backbone needs to know about one input modality.

    ``gsd`` is the default ground sampling distance in metres per pixel (override it per
    call with ``forward(..., gsd=...)``); ``patch_size`` overrides the config's patch size
    for this modality's tokenizer (``None`` = use ``BackboneConfig.patch_size``).
    """

    in_chans: int
    gsd: float
    description: str = ""
    patch_size: int | None = None


#: The paper's three modalities, plus plain RGB for RGB-only optical sources.
DEFAULT_MODALITIES: dict[str, ModalitySpec] = {
    "optical": ModalitySpec(4, 1.0, "high-resolution optical RGB+NIR, reflectance in [0, 1]"),
    "rgb": ModalitySpec(3, 1.0, "high-resolution optical RGB, reflectance in [0, 1]"),
    "ms": ModalitySpec(13, 10.0, "Sentinel-2 multispectral, 13 bands scaled by 1/10000"),
    "sar": ModalitySpec(2, 10.0, "SAR (VV, VH) normalised with rslab.data.sar.normalize_sar"),
}


@dataclass
class BackboneConfig:
    """Configuration of :class:`UnifiedBackbone`. Use :meth:`tiny`, :meth:`small`, :meth:`base`.

    Stage ``s`` has ``embed_dim * 2**s`` channels (APM doubles channels at each boundary,
    in both of its branches, so all modalities share the same weights).
    """

    embed_dim: int = 32
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    patch_size: int = 4
    window_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    num_prompts: int = 4  # per modality per global stage (stages 3-4); 0 disables them
    apm: bool = True  # False = always merge (a plain Swin hierarchy), for ablation
    apm_target_gsd: float = 10.0  # metres; see the module docstring
    moe_blocks: int = 0  # the last `moe_blocks` global blocks get an MoE FFN
    num_experts: int = 8
    moe_top_k: int = 1
    modalities: dict[str, ModalitySpec] = field(default_factory=lambda: dict(DEFAULT_MODALITIES))

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"depths and num_heads need 4 entries (one per stage), "
                             f"got {self.depths}, {self.num_heads}")
        if any(d < 1 for d in self.depths):
            raise ValueError(f"every stage needs at least one block, got depths={self.depths}")
        for s, h in enumerate(self.num_heads):
            if (self.embed_dim * 2**s) % h:
                raise ValueError(f"stage {s + 1} dim {self.embed_dim * 2**s} is not divisible by num_heads={h}")
        if self.patch_size < 1 or self.window_size < 1:
            raise ValueError(f"patch_size and window_size must be >= 1, got {self.patch_size}, {self.window_size}")
        if self.num_prompts < 0:
            raise ValueError(f"num_prompts must be >= 0, got {self.num_prompts}")
        if not 0 <= self.moe_blocks <= self.depths[2] + self.depths[3]:
            raise ValueError(
                f"moe_blocks={self.moe_blocks} must be between 0 and the number of global blocks "
                f"(depths[2] + depths[3] = {self.depths[2] + self.depths[3]})"
            )
        if not self.modalities:
            raise ValueError("modalities must name at least one modality")
        if self.apm_target_gsd <= 0:
            raise ValueError(f"apm_target_gsd must be positive (metres), got {self.apm_target_gsd}")

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return tuple(self.embed_dim * 2**s for s in range(4))  # type: ignore[return-value]

    @classmethod
    def tiny(cls, **overrides) -> "BackboneConfig":
        """CPU-sized: 2.3 M parameters, window 4 so 32-128 px inputs work."""
        return replace(cls(), **overrides)

    @classmethod
    def small(cls, **overrides) -> "BackboneConfig":
        """Swin-T-like widths (96 ... 768), window 8."""
        return replace(cls(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=8), **overrides)

    @classmethod
    def base(cls, **overrides) -> "BackboneConfig":
        """The paper's structure: token dim C = 352 (Swin-H widths 352 ... 2816, depths
        2-2-18-2, head dim 32), Swin-V2 window 8, 4 prompts per modality per global stage,
        MoE (8 experts, top-1) in the last 6 blocks."""
        cfg = cls(
            embed_dim=352, depths=(2, 2, 18, 2), num_heads=(11, 22, 44, 88), window_size=8,
            drop_path_rate=0.2, moe_blocks=6, num_experts=8, moe_top_k=1,
        )
        return replace(cfg, **overrides)


class AdaptivePatchMerging(nn.Module):
    """APM (Sec. 3.1): 2x2 merge for fine GSD, resolution-preserving projection otherwise.

    ``merge=True``: concatenate each 2x2 neighbourhood (4C) and project to 2C (Swin's
    PatchMerging, with Swin-V2's post-projection LayerNorm). ``merge=False``: project each
    token C -> 2C with the same weights averaged over the four 2x2 positions, keeping the
    spatial size. Both branches double the channels, so the next stage's shared weights fit.
    Works on NHWC tensors.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor, merge: bool) -> torch.Tensor:
        B, H, W, C = x.shape
        if C != self.dim:
            raise ValueError(f"AdaptivePatchMerging expects {self.dim} channels, got {C}")
        if merge:
            if H % 2 or W % 2:
                raise ValueError(f"2x2 patch merging needs an even feature size, got {H}x{W}")
            # same ordering as timm's PatchMerging: (h, w) offsets flattened inside each 2x2 cell
            x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
            x = self.reduction(x)
        else:
            weight = self.reduction.weight.view(2 * C, 4, C).mean(dim=1)  # averaged 2x2 slices
            x = F.linear(x, weight)
        return self.norm(x)


class ModalityPrompts(nn.Module):
    """``num_prompts`` learnable tokens per modality for one stage (Eq. 1).

    :meth:`prepend` concatenates them in front of the token sequence; :meth:`drop` removes
    them after the stage's last block (``E_drop``).
    """

    def __init__(self, modalities: list[str], num_prompts: int, dim: int) -> None:
        super().__init__()
        self.num_prompts = num_prompts
        self.prompts = nn.ParameterDict({m: nn.Parameter(torch.zeros(num_prompts, dim)) for m in modalities})
        for p in self.prompts.values():
            trunc_normal_(p, std=0.02)

    def prepend(self, tokens: torch.Tensor, modality: str) -> torch.Tensor:
        if self.num_prompts == 0:
            return tokens
        prompts = self.prompts[modality].unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return torch.cat([prompts.to(tokens.dtype), tokens], dim=1)

    def drop(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.num_prompts :]


class UnifiedBackbone(nn.Module):
    """SkySense V2 backbone: shared 4-stage encoder, per-modality tokenizers and prompts.

    >>> net = UnifiedBackbone(BackboneConfig.tiny())
    >>> feats = net(torch.rand(2, 4, 64, 64), modality="optical")
    >>> [tuple(f.shape) for f in feats]  # optical at 1 m, patch 4: merge once, then keep
    [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 8, 8), (2, 256, 8, 8)]
    """

    def __init__(self, cfg: BackboneConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or BackboneConfig.tiny()
        dims = cfg.dims
        self.out_channels: tuple[int, ...] = dims
        modalities = list(cfg.modalities)

        self.tokenizers = nn.ModuleDict(
            {
                name: PatchEmbed(
                    img_size=None, patch_size=spec.patch_size or cfg.patch_size, in_chans=spec.in_chans,
                    embed_dim=cfg.embed_dim, norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False,
                )
                for name, spec in cfg.modalities.items()
            }
        )

        total_blocks = sum(cfg.depths)
        drop_path = [cfg.drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]  # stochastic depth
        first_moe = cfg.depths[2] + cfg.depths[3] - cfg.moe_blocks  # index among global blocks
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList(AdaptivePatchMerging(dims[s]) for s in range(3))
        self.prompts = nn.ModuleDict()
        block_id = global_id = 0
        for s in range(4):
            blocks = []
            for j in range(cfg.depths[s]):
                if s < 2:  # local: Swin-V2 window attention, shifted every other block
                    blocks.append(
                        SwinTransformerV2Block(
                            dims[s], input_resolution=cfg.window_size, num_heads=cfg.num_heads[s],
                            window_size=cfg.window_size, shift_size=0 if j % 2 == 0 else cfg.window_size // 2,
                            always_partition=True, dynamic_mask=True,  # any multiple of the window works
                            mlp_ratio=cfg.mlp_ratio, drop_path=drop_path[block_id],
                        )
                    )
                else:  # global self-attention, optionally with an MoE feed-forward
                    mlp_layer = (
                        partial(MoEMlp, num_experts=cfg.num_experts, top_k=cfg.moe_top_k)
                        if global_id >= first_moe else Mlp
                    )
                    blocks.append(
                        Block(
                            dims[s], num_heads=cfg.num_heads[s], mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
                            drop_path=drop_path[block_id], mlp_layer=mlp_layer,
                        )
                    )
                    global_id += 1
                block_id += 1
            self.stages.append(nn.ModuleList(blocks))
            if s >= 2:
                self.prompts[str(s)] = ModalityPrompts(modalities, cfg.num_prompts, dims[s])
        self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ planning and checks
    @property
    def modalities(self) -> list[str]:
        return list(self.cfg.modalities)

    def patch_size_of(self, modality: str) -> int:
        return self.cfg.modalities[modality].patch_size or self.cfg.patch_size

    def apm_plan(self, modality: str, gsd: float | None = None) -> list[bool]:
        """Which of the 3 stage boundaries merge 2x2 (True) or keep resolution (False)."""
        self._check_modality(modality)
        gsd = self.cfg.modalities[modality].gsd if gsd is None else float(gsd)
        if not gsd > 0:
            raise ValueError(f"gsd must be a positive number of metres per pixel, got {gsd}")
        token_gsd = gsd * self.patch_size_of(modality)
        plan = []
        for _ in range(3):
            merge = (not self.cfg.apm) or token_gsd * 2 <= self.cfg.apm_target_gsd * (1 + 1e-6)
            plan.append(merge)
            token_gsd *= 2 if merge else 1
        return plan

    def feature_sizes(self, image_size: tuple[int, int], modality: str,
                      gsd: float | None = None) -> list[tuple[int, int]]:
        """(H_s, W_s) of each stage's output for an input of ``image_size`` (no checks)."""
        p = self.patch_size_of(modality)
        h, w = image_size[0] // p, image_size[1] // p
        sizes = [(h, w)]
        for merge in self.apm_plan(modality, gsd):
            if merge:
                h, w = h // 2, w // 2
            sizes.append((h, w))
        return sizes

    def valid_size_multiple(self, modality: str, gsd: float | None = None) -> int:
        """Input sides must be multiples of this (patch x window x the stage-2 merge)."""
        merges_before_stage2 = 2 if self.apm_plan(modality, gsd)[0] else 1
        return self.patch_size_of(modality) * self.cfg.window_size * merges_before_stage2

    def _check_modality(self, modality: str) -> None:
        if modality not in self.cfg.modalities:
            raise ValueError(
                f"no tokenizer for modality {modality!r}; this backbone has {sorted(self.cfg.modalities)}. "
                "Add a ModalitySpec for it to BackboneConfig.modalities (and train its tokenizer)."
            )

    def _check_input(self, x: torch.Tensor, modality: str, gsd: float | None) -> None:
        self._check_modality(modality)
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, "
                             f"got {type(x).__name__} of shape {getattr(x, 'shape', None)}")
        spec = self.cfg.modalities[modality]
        if x.shape[1] != spec.in_chans:
            raise ValueError(
                f"modality {modality!r} expects {spec.in_chans} channels ({spec.description}), got {x.shape[1]}"
            )
        multiple = self.valid_size_multiple(modality, gsd)
        H, W = x.shape[-2:]
        if H % multiple or W % multiple:
            def near(n: int) -> str:
                lo = max(multiple, n // multiple * multiple)
                return f"{lo} or {lo + multiple}" if lo != n else str(n)

            p = self.patch_size_of(modality)
            raise ValueError(
                f"input size {H}x{W} is not a multiple of {multiple} (patch {p} x "
                f"window {self.cfg.window_size}"
                f"{' x 2 for the stage-2 merge' if multiple > p * self.cfg.window_size else ''}) "
                f"for modality {modality!r}; crop or pad to e.g. {near(H)} x {near(W)}."
            )

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, modality: str, gsd: float | None = None) -> list[torch.Tensor]:
        """Per-stage feature maps ``[(B, C_s, H_s, W_s)] * 4`` for ``x`` of ``modality``.

        ``gsd`` (metres/pixel) overrides the modality's default and drives APM.
        """
        self._check_input(x, modality, gsd)
        plan = self.apm_plan(modality, gsd)
        x = self.tokenizers[modality](x)  # (B, H/p, W/p, C) NHWC
        features = []
        for s, blocks in enumerate(self.stages):
            if s > 0:
                x = self.merges[s - 1](x, merge=plan[s - 1])
            if s < 2:
                for blk in blocks:
                    x = blk(x)
            else:
                B, H, W, C = x.shape
                prompts = self.prompts[str(s)]
                tokens = prompts.prepend(x.reshape(B, H * W, C), modality)
                for blk in blocks:
                    tokens = blk(tokens)
                x = prompts.drop(tokens).reshape(B, H, W, C)
            features.append(self.out_norms[s](x).permute(0, 3, 1, 2).contiguous())
        return features

    def moe_aux_loss(self) -> torch.Tensor:
        """Sum of the MoE load-balancing losses of the last forward (0 without MoE)."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoEMlp)]
        if not losses:
            return torch.zeros((), device=self.out_norms[0].weight.device)
        return torch.stack([torch.as_tensor(l) for l in losses]).sum()


def build_backbone(preset: str = "tiny", **overrides) -> UnifiedBackbone:
    """``build_backbone("tiny" | "small" | "base", **config_overrides)``."""
    presets = {"tiny": BackboneConfig.tiny, "small": BackboneConfig.small, "base": BackboneConfig.base}
    if preset not in presets:
        raise ValueError(f"unknown backbone preset {preset!r}; choose one of {sorted(presets)}")
    return UnifiedBackbone(presets[preset](**overrides))


def count_parameters(module: nn.Module, active_experts: int | None = None) -> int:
    """Number of parameters. With ``active_experts=k``, MoE layers count only ``k`` experts
    (the parameters a single token actually uses)."""
    total = sum(p.numel() for p in module.parameters())
    if active_experts is None:
        return total
    for m in module.modules():
        if isinstance(m, MoEMlp):
            per_expert = sum(p.numel() for p in m.experts[0].parameters())
            total -= per_expert * (m.num_experts - active_experts)
    return total


def option_variants() -> dict[str, BackboneConfig]:
    """The tiny preset and one option changed at a time (APM, prompt tokens, MoE): the variants
    whose cost notebook 02 and ``benchmarks/bench_backbone.py`` compare with :func:`profile_variants`."""
    tiny = BackboneConfig.tiny
    return {
        "tiny": tiny(),                    # APM, 4 prompt tokens, dense FFNs
        "no_apm": tiny(apm=False),         # always merge 2x2
        "no_prompts": tiny(num_prompts=0),
        "prompts_16": tiny(num_prompts=16),
        "moe_last2": tiny(moe_blocks=2),   # MoE FFN in the last 2 blocks
        "moe_last4": tiny(moe_blocks=4),
    }


def preset_sizes() -> dict[str, float]:
    """Parameters (millions) of the small and base presets, built on the meta device (no memory):
    ``small_params_M``, ``base_params_active_M`` (one expert per MoE layer: what a token uses; the
    paper's 665 M) and ``base_params_all_experts_M``."""
    with torch.device("meta"):
        base = UnifiedBackbone(BackboneConfig.base())
        small = UnifiedBackbone(BackboneConfig.small())
    return {
        "small_params_M": count_parameters(small) / 1e6,
        "base_params_active_M": count_parameters(base, active_experts=1) / 1e6,
        "base_params_all_experts_M": count_parameters(base) / 1e6,
    }


def profile_variants(variants: dict[str, BackboneConfig], image_size: int = 128, batch_size: int = 8,
                     modality: str = "optical", gsd: float | None = None, repeats: int = 3) -> list[dict]:
    """Parameters and forward time of backbone variants (e.g. with/without APM, prompts, MoE).

    Each row: ``name``, ``params_M`` (all), ``active_params_M`` (one expert per MoE layer),
    ``forward_ms`` (median of ``repeats`` timed no-grad forwards after one warm-up, on the CPU
    with the current torch thread count), ``stage_sizes``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for name, cfg in variants.items():
        torch.manual_seed(0)
        model = UnifiedBackbone(cfg).eval()
        spec = cfg.modalities[modality] if modality in cfg.modalities else None
        if spec is None:
            raise ValueError(f"variant {name!r} has no tokenizer for modality {modality!r}")
        x = torch.rand(batch_size, spec.in_chans, image_size, image_size)
        times = []
        with torch.no_grad():
            model(x, modality, gsd)  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x, modality, gsd)
                times.append(time.perf_counter() - t0)
        rows.append({
            "name": name,
            "params_M": count_parameters(model) / 1e6,
            "active_params_M": count_parameters(model, active_experts=cfg.moe_top_k) / 1e6,
            "forward_ms": 1000 * sorted(times)[len(times) // 2],
            "stage_sizes": [f"{h}x{w}" for h, w in model.feature_sizes((image_size, image_size), modality, gsd)],
        })
    return rows


BACKBONE_CONFIG_FILE, BACKBONE_WEIGHTS_FILE = "backbone_config.json", "backbone_qsacl.safetensors"


def save_backbone(backbone: UnifiedBackbone, directory) -> Path:
    """Write ``backbone_config.json`` + ``backbone_qsacl.safetensors`` into ``directory`` (each
    file written under a temporary name, then renamed, so a crash never leaves a half file)."""
    from safetensors.torch import save_file

    if not isinstance(backbone, UnifiedBackbone):
        raise ValueError(f"backbone must be a UnifiedBackbone, got {type(backbone).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, config = directory / BACKBONE_WEIGHTS_FILE, directory / BACKBONE_CONFIG_FILE
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    write_atomically(weights, lambda tmp: save_file(state, str(tmp)))
    write_text_atomically(config, json.dumps(asdict(backbone.cfg), indent=2))  # asdict recurses into the ModalitySpecs
    return directory


def load_backbone(directory) -> UnifiedBackbone:
    """The backbone :func:`save_backbone` wrote (notebook 02 saves its QSACL backbone this way), in eval mode."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config, weights = directory / BACKBONE_CONFIG_FILE, directory / BACKBONE_WEIGHTS_FILE
    for f in (config, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; run notebooks/02_qsacl_pretraining.ipynb (it saves the "
                                    "pre-trained backbone to artifacts/02_qsacl_pretraining/) "
                                    "or pass the right folder.")
    backbone = UnifiedBackbone(backbone_config_from_dict(json.loads(config.read_text())))
    backbone.load_state_dict(load_file(str(weights)))
    return backbone.eval()


def backbone_config_from_dict(cfg: dict) -> BackboneConfig:
    """The :class:`BackboneConfig` of ``dataclasses.asdict(config)`` (a JSON file, a model card)."""
    cfg = dict(cfg)
    cfg["modalities"] = {k: ModalitySpec(**v) for k, v in cfg["modalities"].items()}
    for key in ("depths", "num_heads"):
        cfg[key] = tuple(cfg[key])
    return BackboneConfig(**cfg)
