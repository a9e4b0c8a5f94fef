"""RS2-SAM2: SAM2 customised for referring remote-sensing segmentation (Rong et al., AAAI 2026).

Read top to bottom, the model is four parts around the ``sam2`` package's SAM2:

1. :class:`UnionEncoder` -- joint vision-language encoder giving a multimodal CLS token ``V_cls``,
   visual tokens ``V`` and text tokens ``T`` (paper: BEiT-3). BEiT-3 is not in ``transformers``;
   the substitute here is a small joint transformer (timm blocks) over image patches and the
   token states of the frozen, pretrained all-MiniLM-L6-v2 (offline). What is lost: BEiT-3's
   large-scale image-text pre-training of the joint layers; the language side keeps real
   pre-training through MiniLM.
2. :class:`BHFM` -- Bidirectional Hierarchical Fusion Module, inside *every* Hiera block between
   attention and the residual (:class:`BHFMHieraBlock`): down-projection to 0.25x width,
   bidirectional cross-attention image<->text, text state blended with ``alpha_t = 0.2``
   (``T_{i+1} = (1 - alpha_t) T_i + alpha_t Linear(T_i'')``) and carried to the next block, visual
   MLP and linear branches blended with ``alpha_i = 0.5``. After the encoder, the original text
   tokens guide the final image embedding by cross-attention (:class:`TextGuidedAttention`, F_en).
3. :class:`MaskPromptGenerator` (MPG) -- ``V_cls`` attends to ``V``; the result times ``V_cls`` is
   projected, broadcast over the visual map and multiplied with it; an MLP gives the pseudo-mask
   ``M_p`` at the union encoder's patch grid, upsampled to SAM2's mask-input size and fed to the
   prompt encoder as the dense prompt. SAM2 expects *logits* there (its predictor feeds back
   low-resolution logits), so ``M_p`` is kept as logits.
4. SAM2's prompt encoder and mask decoder. Besides the dense prompt, the projected ``V_cls`` is
   given to the decoder as one sparse prompt token, so that the baseline row of the paper's
   ablation ("SAM2 + Union Encoder", no MPG, no BHFM) still receives the text.

Frozen/trained split (paper): Hiera frozen except the BHFM adapters; prompt encoder, mask decoder,
union encoder and MPG trained. :class:`RS2SAM2Config` also has ``train_hiera`` (train Hiera too),
for a SAM2 that was not pre-trained at scale. Offline there is no official SAM2 checkpoint: the
default profile starts from the shipped stand-in (``rslab pretrain sam2-standin-tiny-64``: SAM's
promptable task on synthetic scenes, trained on :class:`PromptableSAM2`, the plain SAM2 with
point / box / mask prompts), loaded by :func:`load_sam2_checkpoint` exactly like Meta's file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rslab import weights as W
from rslab.losses.boundary import TextGuidedBoundaryLoss
from rslab.losses.segmentation import dice_loss, sigmoid_bce_loss
from rslab.models.beit3 import BEiT3, BEiT3Config, beit3_tokenizer
from rslab.models.encoders import MiniLMTextEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RS2SAM2Config:
    """Sizes and switches of :class:`RS2SAM2`.

    Attributes:
        sam2_config: config shipped by the ``sam2`` package (``configs/sam2.1/sam2.1_hiera_*.yaml``).
        image_size: SAM2 input size (paper: 1024); prompt grid = image_size / 16.
        sam2_overrides: extra Hydra overrides (the ``tiny`` preset shrinks Hiera for the CPU).
        union_image_size / union_patch: the union encoder's input size and patch (paper: 224 / 16).
        union_dim / union_depth / union_heads: width, joint layers, heads of the union encoder.
        text_dim: width of the language model's token states (MiniLM: 384).
        max_text_tokens: word pieces kept per expression (longer ones are refused, not cut).
        use_bhfm / use_mpg: the ablation switches.
        bhfm_ratio / alpha_t / alpha_i / bhfm_heads: BHFM width ratio, blend weights and heads.
        train_hiera: train all of Hiera (no pretrained weights) instead of only its adapters.
        boundary_weight: lambda_tbl of the text-guided boundary loss (0 = off, for the ablation).
        union_encoder: ``"vit"`` (the in-repo joint transformer over MiniLM token states, trained
            from scratch) or ``"beit3"`` (the paper's BEiT-3 Multiway Transformer,
            :mod:`rslab.models.beit3`, reading BEiT-3 token ids; its weights come from the
            registry's ``beit3-base`` / ``beit3-large`` entries, :meth:`with_beit3`).
    """

    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    image_size: int = 128
    sam2_overrides: tuple[str, ...] = ()
    union_image_size: int = 64
    union_patch: int = 8
    union_dim: int = 128
    union_depth: int = 2
    union_heads: int = 4
    text_dim: int = 384
    max_text_tokens: int = 40
    use_bhfm: bool = True
    use_mpg: bool = True
    bhfm_ratio: float = 0.25
    alpha_t: float = 0.2
    alpha_i: float = 0.5
    bhfm_heads: int = 1
    train_hiera: bool = False
    boundary_weight: float = 0.2
    union_encoder: str = "vit"

    @classmethod
    def tiny(cls, **kw) -> "RS2SAM2Config":
        """CPU teaching size: 128 px, a 5-block Hiera of width 32, 64-d SAM heads (about 2 M params)."""
        overrides = (
            "++model.image_encoder.trunk.embed_dim=32",
            "++model.image_encoder.trunk.stages=[1,1,2,1]",
            "++model.image_encoder.trunk.global_att_blocks=[3]",
            "++model.image_encoder.trunk.window_spec=[8,4,4,4]",
            "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
            "++model.image_encoder.neck.d_model=64",
        )
        return replace(cls(image_size=128, sam2_overrides=overrides, union_dim=128, union_depth=2), **kw)

    @classmethod
    def small(cls, **kw) -> "RS2SAM2Config":
        """SAM2.1 Hiera-T as shipped, at 256 px (a GPU or patient CPU)."""
        return replace(cls(image_size=256, union_image_size=112, union_patch=16, union_dim=384, union_depth=4,
                           union_heads=6), **kw)

    @classmethod
    def base(cls, **kw) -> "RS2SAM2Config":
        """The paper's setting: SAM2 Hiera-L at 1024 px; union encoder at 224 px, patch 16."""
        return replace(
            cls(
                sam2_config="configs/sam2.1/sam2.1_hiera_l.yaml",
                image_size=1024,
                union_image_size=224,
                union_patch=16,
                union_dim=768,
                union_depth=6,
                union_heads=12,
                bhfm_heads=2,
            ),
            **kw,
        )

    def with_beit3(self, size: str = "large") -> "RS2SAM2Config":
        """This config with the paper's union encoder: BEiT-3 ``size`` (``"base"``: 768 wide, 12
        blocks, 12 heads; ``"large"``: 1024, 24, 16; the paper uses BEiT-3-Large) at its
        pre-training input of 224 px, patch 16."""
        sizes = {"base": (768, 12, 12), "large": (1024, 24, 16)}
        if size not in sizes:
            raise ValueError(f"BEiT-3 size must be one of {list(sizes)}, got {size!r}")
        dim, depth, heads = sizes[size]
        return replace(self, union_encoder="beit3", union_dim=dim, union_depth=depth, union_heads=heads,
                       union_image_size=224, union_patch=16)

    def __post_init__(self):
        if self.union_encoder not in ("vit", "beit3"):
            raise ValueError(f"union_encoder must be 'vit' or 'beit3', got {self.union_encoder!r}")
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (SAM2's stride), got {self.image_size}")
        if self.union_image_size % self.union_patch:
            raise ValueError(
                f"union_image_size ({self.union_image_size}) must be a multiple of union_patch ({self.union_patch})"
            )
        if not (0.0 <= self.alpha_t <= 1.0 and 0.0 <= self.alpha_i <= 1.0):
            raise ValueError(f"alpha_t and alpha_i must be in [0, 1], got {self.alpha_t}, {self.alpha_i}")


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def _zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's output weights so the module starts as a no-op (safe on pretrained SAM2)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class UnionEncoder(nn.Module):
    """BEiT-3 substitute: one transformer over ``[CLS; image patches; text tokens]``.

    Modality-type embeddings tell the two token kinds apart (as BEiT-3's multiway design does with
    separate experts); padding text tokens are masked out of attention.
    Returns ``cls (B, D)``, ``visual (B, Np, D)``, ``text (B, L, D)``.
    """

    def __init__(self, cfg: RS2SAM2Config):
        super().__init__()
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block

        d = cfg.union_dim
        self.image_size = cfg.union_image_size
        self.patch_embed = PatchEmbed(cfg.union_image_size, cfg.union_patch, 3, d)
        self.grid = self.patch_embed.grid_size
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patch_embed.num_patches, d) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.type_embed = nn.Parameter(torch.randn(2, d) * 0.02)  # 0: vision, 1: language
        self.text_in = nn.Linear(cfg.text_dim, d)
        self.blocks = nn.ModuleList(Block(d, cfg.union_heads, mlp_ratio=4.0, qkv_bias=True)
                                    for _ in range(cfg.union_depth))
        self.norm = nn.LayerNorm(d)

    def forward(self, image: torch.Tensor, text_states: torch.Tensor, text_pad: torch.Tensor):
        x = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        v = self.patch_embed(x)
        cls = self.cls_token.expand(v.shape[0], -1, -1)
        v = torch.cat([cls, v], 1) + self.pos_embed + self.type_embed[0]
        t = self.text_in(text_states) + self.type_embed[1]
        tokens = torch.cat([v, t], 1)
        keep = torch.cat([torch.ones(v.shape[:2], dtype=torch.bool, device=v.device), ~text_pad], 1)
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, N): True = may be attended to
        for blk in self.blocks:
            tokens = blk(tokens, attn_mask=attn_mask)
        tokens = self.norm(tokens)
        n_vis = v.shape[1]
        return tokens[:, 0], tokens[:, 1:n_vis], tokens[:, n_vis:]


class BEiT3UnionEncoder(nn.Module):
    """The paper's union encoder (RS2-SAM2 Sec. 3.1): BEiT-3 over ``[image CLS; patches; text]``.

    ``forward(image, text_ids, text_pad)``: the image is resized to BEiT-3's input size and
    normalised as in BEiT-3 (mean = std = 0.5); ``text_ids (B, L)`` are BEiT-3 (XLM-R
    sentencepiece) token ids with ``<s> ... </s>`` (:class:`BEiT3TokenEncoder`). Returns the image
    ``[CLS]`` token ``(B, D)`` (the paper's ``V_cls``), the patch tokens ``(B, Np, D)`` and the text
    tokens ``(B, L, D)``, as :class:`UnionEncoder` does.
    """

    def __init__(self, cfg: RS2SAM2Config):
        super().__init__()
        self.image_size = cfg.union_image_size
        self.beit3 = BEiT3(BEiT3Config(img_size=cfg.union_image_size, patch_size=cfg.union_patch,
                                       embed_dim=cfg.union_dim, depth=cfg.union_depth, heads=cfg.union_heads,
                                       mlp_dim=4 * cfg.union_dim))
        g = cfg.union_image_size // cfg.union_patch
        self.grid = (g, g)

    def forward(self, image: torch.Tensor, text_ids: torch.Tensor, text_pad: torch.Tensor):
        x = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        out = self.beit3(images=(x - 0.5) / 0.5, text_ids=text_ids, text_padding_mask=text_pad)
        tokens, split = out["tokens"], out["split"]
        return tokens[:, 0], tokens[:, 1:split], tokens[:, split:]


def _check_expressions(expressions) -> None:
    """Both token encoders take a list of non-empty strings (a bare string would be split into characters)."""
    if isinstance(expressions, str):
        raise ValueError("pass a list of expressions, not a single string")
    for text in expressions:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"referring expressions must be non-empty strings, got {text!r}")


class BEiT3TokenEncoder:
    """Token ids ``(B, L)`` int64 and padding masks ``(B, L)`` bool for :class:`BEiT3UnionEncoder`,
    from the BEiT-3 release's sentencepiece model (``beit3.spm``, found by ``rslab.weights``).

    ``max_tokens`` counts the ``<s>``/``</s>`` tokens; a longer expression raises, unless
    ``truncate=True`` (then it is cut, and :func:`rslab.recipes.rs2sam2.check_expression_lengths`
    warns about it before training)."""

    def __init__(self, spm_path, max_tokens: int = 40, truncate: bool = False):
        if not isinstance(max_tokens, int) or max_tokens < 3:
            raise ValueError(f"max_tokens must be an int >= 3 (<s>, one word piece, </s>), got {max_tokens!r}")
        self.tokenizer = beit3_tokenizer(spm_path)  # XLM-R ids: <s> 0, <pad> 1, </s> 2, <unk> 3
        self.pad_token_id = self.tokenizer.pad_token_id
        self.max_tokens, self.truncate = max_tokens, truncate

    def _ids(self, expressions: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(expressions), add_special_tokens=True)["input_ids"]

    def lengths(self, expressions: Sequence[str]) -> list[int]:
        """Tokens per expression (with ``<s>``/``</s>``), before any truncation."""
        return [len(ids) for ids in self._ids(list(expressions))]

    def __call__(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        _check_expressions(expressions)
        ids = self._ids(list(expressions))
        too_long = [t for t, i in zip(expressions, ids) if len(i) > self.max_tokens]
        if too_long and not self.truncate:
            raise ValueError(f"expression too long ({self.max_tokens} BEiT-3 tokens max): {too_long[0][:80]!r}...; "
                             "shorten it, raise RS2SAM2Config.max_text_tokens, or truncate (check_expression_lengths)")
        ids = [i if len(i) <= self.max_tokens else i[:self.max_tokens - 1] + [i[-1]] for i in ids]
        length = max(len(i) for i in ids)
        pad_id = self.pad_token_id
        out = torch.full((len(ids), length), pad_id, dtype=torch.long)
        pad = torch.ones(len(ids), length, dtype=torch.bool)
        for r, i in enumerate(ids):
            out[r, :len(i)] = torch.tensor(i, dtype=torch.long)
            pad[r, :len(i)] = False
        return out, pad


def load_union_weights(model: "RS2SAM2", name: str = "beit3-large", path=None, allow_download: bool = False) -> Path:
    """Load the BEiT-3 release named ``name`` in ``rslab.weights`` into ``model``'s union encoder
    (strict: every tensor of the release's encoder, shapes checked). Returns the file used."""
    if model.cfg.union_encoder != "beit3":
        raise ValueError(f"the model's union encoder is {model.cfg.union_encoder!r}; build it with "
                         f"cfg.with_beit3(...) to load {name!r}")
    file = W.find(name, path, allow_download=allow_download)
    loaded = W.load(name, file)
    mine = model.union.beit3
    if loaded.cfg.embed_dim != mine.cfg.embed_dim or loaded.cfg.depth != mine.cfg.depth:
        raise ValueError(f"{file} is BEiT-3 width {loaded.cfg.embed_dim}, depth {loaded.cfg.depth}; the model's union "
                         f"encoder is width {mine.cfg.embed_dim}, depth {mine.cfg.depth}: use the matching entry")
    device = next(mine.parameters()).device
    mine.load_state_dict({k: v.to(device) for k, v in loaded.state_dict().items()}, strict=True)
    return file


class BHFM(nn.Module):
    """Bidirectional Hierarchical Fusion Module for one Hiera block (paper Sec. "BHFM").

    Input: the block's attention output ``x (B, H, W, C)`` and the carried text state
    ``T_i (B, L, Dt)``. Output: a residual for ``x`` and ``T_{i+1}``.
    """

    def __init__(self, dim: int, text_dim: int, ratio: float = 0.25, alpha_t: float = 0.2, alpha_i: float = 0.5,
                 heads: int = 1):
        super().__init__()
        from timm.layers import Mlp

        r = max(heads * 8, int(round(dim * ratio / heads)) * heads)
        self.alpha_t, self.alpha_i = alpha_t, alpha_i
        self.down = nn.Linear(dim, r)
        self.text_down = nn.Linear(text_dim, r)
        self.norm_v, self.norm_t = nn.LayerNorm(r), nn.LayerNorm(r)
        self.text_to_image = nn.MultiheadAttention(r, heads, batch_first=True)  # image queries text
        self.image_to_text = nn.MultiheadAttention(r, heads, batch_first=True)  # text queries image
        self.text_up = nn.Linear(r, text_dim)
        self.mlp_branch = Mlp(r, 2 * r, dim)
        self.linear_branch = nn.Linear(r, dim)
        _zero_(self.mlp_branch.fc2)  # start as the identity on the pretrained block
        _zero_(self.linear_branch)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor):
        b, h, w, c = x.shape
        v = self.down(x).reshape(b, h * w, -1)
        t = self.text_down(text)
        # text -> image, then image -> text with the updated image tokens: bidirectional.
        v = v + self.text_to_image(self.norm_v(v), t, t, key_padding_mask=text_pad, need_weights=False)[0]
        t2 = t + self.image_to_text(self.norm_t(t), v, v, need_weights=False)[0]
        text_next = (1.0 - self.alpha_t) * text + self.alpha_t * self.text_up(t2)
        delta = self.alpha_i * self.mlp_branch(v) + (1.0 - self.alpha_i) * self.linear_branch(v)
        return delta.reshape(b, h, w, c), text_next


class BHFMHieraBlock(nn.Module):
    """A SAM2 Hiera ``MultiScaleBlock`` with a :class:`BHFM` between attention and the residual.

    The wrapped block's sub-modules are re-registered under their own names, so a SAM2 checkpoint's
    keys (``trunk.blocks.3.attn.qkv.weight``...) load unchanged; BHFM adds ``trunk.blocks.3.bhfm.*``.
    A forward hook could not carry the text state from block to block, hence a wrapper.
    """

    def __init__(self, block: nn.Module, bhfm: BHFM | None):
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, child)
        self.dim, self.dim_out = block.dim, block.dim_out
        self.window_size, self.q_stride = block.window_size, block.q_stride
        self.bhfm = bhfm

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor):
        # Same computation as sam2.modeling.backbones.hieradet.MultiScaleBlock.forward, plus BHFM.
        from sam2.modeling.backbones.hieradet import do_pool
        from sam2.modeling.backbones.utils import window_partition, window_unpartition

        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = do_pool(self.proj(x), self.pool)
        window_size = self.window_size
        if window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, window_size)
        x = self.attn(x)
        if self.q_stride:
            window_size = self.window_size // self.q_stride[0]
            H, W = shortcut.shape[1:3]
            pad_hw = (H + (window_size - H % window_size) % window_size,
                      W + (window_size - W % window_size) % window_size)
        if self.window_size > 0:
            x = window_unpartition(x, window_size, pad_hw, (H, W))
        if self.bhfm is not None:
            delta, text = self.bhfm(x, text, text_pad)
            x = x + delta
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, text


class TextGuidedAttention(nn.Module):
    """Post-encoding guidance: image embedding queries the original text tokens (F_en)."""

    def __init__(self, dim: int, text_dim: int, heads: int = 1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.text_in = nn.Linear(text_dim, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        _zero_(self.attn.out_proj)

    def forward(self, feat: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        q = feat.flatten(2).transpose(1, 2)
        t = self.text_in(text)
        out = self.attn(self.norm(q), t, t, key_padding_mask=text_pad, need_weights=False)[0]
        return feat + out.transpose(1, 2).reshape(b, c, h, w)


class MaskPromptGenerator(nn.Module):
    """MPG: pseudo-mask logits ``(B, 1, h, w)`` on the union encoder's patch grid.

    ``V_cls`` attends to ``V``, the result is multiplied by ``V_cls``, projected, and multiplied with
    every visual token; a LayerNorm then restores unit scale before the MLP (our addition: the two
    products shrink the features to ~0.2 of unit scale, so without it the pseudo-mask starts within
    ~0.005 logits of a constant and, measured, was still flat (spatial std < 0.01) after a full
    smoke-budget row: the dense prompt carried nothing).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        from timm.layers import Mlp

        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cls_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim, 1)

    def forward(self, cls: torch.Tensor, visual: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        q = cls[:, None]
        inter = self.attn(q, visual, visual, need_weights=False)[0] * q  # (B, 1, D)
        fused = visual * self.cls_proj(inter)  # broadcast over the visual map
        return self.mlp(self.norm(fused)).transpose(1, 2).reshape(cls.shape[0], 1, *grid)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def build_sam2_model(cfg: RS2SAM2Config, device: str | torch.device = "cpu") -> nn.Module:
    """SAM2 from the configs the ``sam2`` package ships, without weights (``ckpt_path=None``)."""
    try:
        from sam2.build_sam import build_sam2
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "RS2-SAM2 needs the 'sam2' package: pip install torch first, then "
            "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0"
        ) from e
    overrides = [f"++model.image_size={cfg.image_size}", *cfg.sam2_overrides]
    return build_sam2(cfg.sam2_config, ckpt_path=None, device=str(device), mode="train",
                      hydra_overrides_extra=overrides, apply_postprocessing=False)


def freeze_video_modules(sam: nn.Module) -> None:
    """Freeze SAM2's video-only parts (memory attention/encoder, object pointers, memory encodings),
    which image segmentation never uses."""
    for name in ("memory_attention", "memory_encoder", "obj_ptr_proj", "mask_downsample"):
        mod = getattr(sam, name, None)
        if isinstance(mod, nn.Module):
            mod.requires_grad_(False)
    for p in (sam.maskmem_tpos_enc, sam.no_obj_ptr, sam.no_mem_pos_enc):
        if isinstance(p, nn.Parameter):
            p.requires_grad_(False)


def sam2_decoder_image_inputs(sam: nn.Module, features: Sequence[torch.Tensor]):
    """SAM2's image path into its mask decoder (as ``SAM2ImagePredictor``): the coarsest FPN level
    plus ``no_mem_embed``, and the two finer levels projected by ``conv_s0`` / ``conv_s1`` (None when
    the config uses no high-resolution features). Returns ``(image_embed, high_res)``."""
    dec = sam.sam_mask_decoder
    high_res = [dec.conv_s0(features[0]), dec.conv_s1(features[1])] if sam.use_high_res_features_in_sam else None
    image_embed = features[-1]
    if sam.directly_add_no_mem_embed:
        image_embed = image_embed + sam.no_mem_embed.view(1, -1, 1, 1)
    return image_embed, high_res


class PromptableSAM2(nn.Module):
    """Plain SAM2 for image segmentation with point / box / mask prompts (SAM's own task).

    ``forward(images, coords, labels, mask_inputs, has_mask)``: ``images (B, 3, S, S)`` RGB in
    [0, 1]; ``coords (P, K, 2)`` pixel (x, y) and ``labels (P, K)`` in SAM2's convention (1 positive
    point, 0 negative, 2 / 3 box corners, -1 padding); ``mask_inputs (P, 1, S/4, S/4)`` logits used
    where ``has_mask (P,)``. ``P = B * prompts_per_image``: prompt ``p`` belongs to image
    ``p // (P / B)``. Returns mask logits ``(P, 1, S, S)``. The image path (normalisation, FPN,
    ``no_mem_embed``, high-resolution features) is the one :class:`RS2SAM2` uses, so the weights
    transfer unchanged.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        freeze_video_modules(sam)  # unused for images

    def forward(self, images, coords, labels, mask_inputs, has_mask):
        sam = self.sam
        size = images.shape[-1]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be RGB (B, 3, S, S), got {tuple(images.shape)}")
        if coords.shape[0] % images.shape[0]:
            raise ValueError(f"{coords.shape[0]} prompts for {images.shape[0]} images: need a whole number per image")
        k = coords.shape[0] // images.shape[0]
        fpn = sam.image_encoder((images - self.pixel_mean) / self.pixel_std)["backbone_fpn"]
        dec, pe = sam.sam_mask_decoder, sam.sam_prompt_encoder
        embed, high_res = sam2_decoder_image_inputs(sam, fpn)
        if high_res is not None:
            high_res = [h.repeat_interleave(k, 0) for h in high_res]
        # PromptEncoder.forward takes one mask prompt for the whole batch or none; a batch mixing
        # point, box and mask prompts needs its two embedding steps, which sam2 keeps private.
        sparse = pe._embed_points(coords, labels, pad=True)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(coords.shape[0], -1, *pe.image_embedding_size)
        dense = torch.where(has_mask[:, None, None, None], pe._embed_masks(mask_inputs), no_mask)
        low_res, _iou, _tok, _obj = dec(image_embeddings=embed.repeat_interleave(k, 0), image_pe=pe.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=False, repeat_image=False, high_res_features=high_res)
        return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)



class RS2SAM2(nn.Module):
    """Referring segmentation: ``forward(images, text_states, text_pad)`` -> mask logits.

    Args of ``forward``:
        images: ``(B, 3, H, W)`` RGB in [0, 1] (any H, W; resized to ``cfg.image_size``).
        text_states: ``(B, L, text_dim)`` token states of the language model (see
            :class:`MiniLMTokenEncoder`); text_pad: ``(B, L)`` bool, True at padding.
    Returns a dict: ``masks`` ``(B, 1, S, S)`` logits at ``S = cfg.image_size``, ``low_res_masks``
    (SAM2's ``S/4`` output), ``pseudo_mask`` (MPG logits or None), ``sentence`` ``(B, D)``
    (the union CLS token, which also weights the boundary loss).
    """

    def __init__(self, cfg: RS2SAM2Config | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg = cfg or RS2SAM2Config.tiny()
        self.sam = build_sam2_model(cfg, device="cpu")
        trunk = self.sam.image_encoder.trunk
        ud = cfg.union_dim
        trunk.blocks = nn.ModuleList(
            BHFMHieraBlock(
                blk,
                (BHFM(blk.dim_out, ud, cfg.bhfm_ratio, cfg.alpha_t, cfg.alpha_i, cfg.bhfm_heads)
                 if cfg.use_bhfm else None),
            )
            for blk in trunk.blocks
        )
        d_model = self.sam.sam_prompt_encoder.embed_dim
        self.union = UnionEncoder(cfg) if cfg.union_encoder == "vit" else BEiT3UnionEncoder(cfg)
        self.text_guidance = TextGuidedAttention(d_model, ud, heads=1) if cfg.use_bhfm else None
        self.mpg = MaskPromptGenerator(ud, cfg.union_heads) if cfg.use_mpg else None
        self.sparse_from_cls = nn.Linear(ud, d_model)
        # The loss owns a learned layer (the boundary loss's text weight), so it lives here and
        # its parameters reach the optimiser with the model's.
        self.criterion = RS2SAM2Loss(ud, RS2SAM2LossWeights(boundary=cfg.boundary_weight))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.set_trainable()
        self.to(device)

    # -- frozen / trained split ------------------------------------------------------------
    def set_trainable(self) -> None:
        """Paper split: Hiera frozen except BHFM; everything else used is trained.

        SAM2's memory modules (video only) are frozen and unused.
        """
        for p in self.parameters():
            p.requires_grad_(True)
        freeze_video_modules(self.sam)
        if not self.cfg.train_hiera:
            for name, p in self.sam.image_encoder.trunk.named_parameters():
                p.requires_grad_(".bhfm." in name)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameter counts, overall and per part."""
        parts = {
            "hiera": self.sam.image_encoder.trunk,
            "fpn_neck": self.sam.image_encoder.neck,
            "prompt_encoder": self.sam.sam_prompt_encoder,
            "mask_decoder": self.sam.sam_mask_decoder,
            "union_encoder": self.union,
        }
        if self.mpg is not None:
            parts["mpg"] = self.mpg
        out: dict[str, int] = {}
        for name, mod in parts.items():
            out[f"{name}_trainable"] = sum(p.numel() for p in mod.parameters() if p.requires_grad)
            out[f"{name}_frozen"] = sum(p.numel() for p in mod.parameters() if not p.requires_grad)
        out["bhfm_trainable"] = sum(p.numel() for n, p in self.named_parameters() if ".bhfm." in n and p.requires_grad)
        out["total_trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        out["total_frozen"] = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return out

    # -- forward -----------------------------------------------------------------------------
    def _check_inputs(self, images, text_states, text_pad) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be RGB (B, 3, H, W), got {tuple(images.shape)}; pass the optical image's "
                "red, green and blue bands (e.g. sample.optical[:3]) scaled to [0, 1]."
            )
        if self.cfg.union_encoder == "beit3":
            if text_states.ndim != 2 or text_states.shape[0] != images.shape[0] or text_states.dtype != torch.long:
                raise ValueError(f"with the BEiT-3 union encoder the text is (B={images.shape[0]}, L) int64 token ids "
                                 f"(BEiT3TokenEncoder), got {text_states.dtype} {tuple(text_states.shape)}")
        elif (text_states.ndim != 3 or text_states.shape[0] != images.shape[0]
              or text_states.shape[-1] != self.cfg.text_dim):
            raise ValueError(
                f"text_states must be (B={images.shape[0]}, L, {self.cfg.text_dim}), got {tuple(text_states.shape)}"
            )
        if text_pad.shape != text_states.shape[:2] or text_pad.dtype != torch.bool:
            raise ValueError(f"text_pad must be a bool (B, L) mask, got {text_pad.dtype} {tuple(text_pad.shape)}")
        if bool(text_pad.all(dim=1).any()):
            raise ValueError("an expression has no tokens (all padding); every referring expression must be non-empty")

    def encode_image(self, images: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor):
        """Hiera (with BHFM carrying ``text`` block to block) + FPN neck; returns SAM2's backbone dict."""
        trunk = self.sam.image_encoder.trunk
        x = trunk.patch_embed(images)
        x = x + trunk._get_pos_embed(x.shape[1:3])
        stage_outputs = []
        for i, blk in enumerate(trunk.blocks):
            x, text = blk(x, text, text_pad)
            if i in trunk.stage_ends:
                stage_outputs.append(x.permute(0, 3, 1, 2))
        features, pos = self.sam.image_encoder.neck(stage_outputs)
        scalp = self.sam.image_encoder.scalp
        if scalp > 0:
            features, pos = features[:-scalp], pos[:-scalp]
        return list(features)

    def forward(self, images: torch.Tensor, text_states: torch.Tensor, text_pad: torch.Tensor) -> dict:
        self._check_inputs(images, text_states, text_pad)
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        cls, visual, text = self.union(images, text_states, text_pad)
        sam_in = (images - self.pixel_mean) / self.pixel_std
        features = self.encode_image(sam_in, text, text_pad)
        dec = self.sam.sam_mask_decoder
        image_embed, high_res = sam2_decoder_image_inputs(self.sam, features)
        if self.text_guidance is not None:
            image_embed = self.text_guidance(image_embed, text, text_pad)

        pseudo = None
        mask_input = None
        if self.mpg is not None:
            pseudo = self.mpg(cls, visual, self.union.grid)
            mask_input = F.interpolate(pseudo, size=self.sam.sam_prompt_encoder.mask_input_size, mode="bilinear",
                                       align_corners=False)
        sparse, dense = self.sam.sam_prompt_encoder(points=None, boxes=None, masks=mask_input)
        if sparse.shape[0] != images.shape[0]:  # no prompt at all gives batch size 1
            sparse = sparse.expand(images.shape[0], -1, -1)
            dense = dense.expand(images.shape[0], -1, -1, -1)
        sparse = torch.cat([sparse, self.sparse_from_cls(cls)[:, None]], 1)
        low_res, _iou, _tokens, _obj = dec(
            image_embeddings=image_embed,
            image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=high_res,
        )
        masks = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
        return {"masks": masks, "low_res_masks": low_res, "pseudo_mask": pseudo, "sentence": cls}

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of the paper on ``forward``'s output and ``(B, [1,] H, W)`` binary targets."""
        return self.criterion(out, target)


def read_sam2_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The SAM2 state dict in ``path``, in float32: Meta's layout (``torch.save({"model": state_dict})``,
    ``.pt``) or a safetensors file of the state dict (the project's stand-ins, stored in fp16)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM2 checkpoint not found: {path}. Download e.g. sam2.1_hiera_large.pt from the SAM2 "
            "release page on a machine with internet, place it under $RSLAB_WEIGHTS_DIR, and pass its path."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            payload = load_file(str(path))
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read SAM2 checkpoint {path}: {e}") from e
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a SAM2 checkpoint: expected a dict with a 'model' state dict")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_sam2_checkpoint(model: RS2SAM2, path: str | Path) -> dict[str, list[str]]:
    """Load an official SAM2 checkpoint (``{"model": state_dict}``) into ``model.sam``, non-strict.

    The RS2-SAM2 modules (BHFM) are absent from the file, so they are reported as missing, and the
    keys the model does not have are reported as unexpected. Returns both lists.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM2 checkpoint not found: {path}. Download e.g. sam2.1_hiera_large.pt from the SAM2 "
            "release page on a machine with internet, place it under $RSLAB_WEIGHTS_DIR, and pass its path."
        )
    state = read_sam2_state(path)
    own = model.sam.state_dict()
    shape_mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shape_mismatch:
        raise ValueError(
            f"{path} does not match this SAM2 config ({model.cfg.sam2_config}, image_size={model.cfg.image_size}); "
            f"shape mismatches: {shape_mismatch[:10]}"
        )
    result = model.sam.load_state_dict(state, strict=False)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}


# ----------------------------------------------------------------------------------------------
# Text side and loss
# ----------------------------------------------------------------------------------------------


class MiniLMTokenEncoder:
    """Token states ``(B, L, 384)`` and padding masks from the frozen offline MiniLM.

    Wraps :class:`rslab.models.encoders.MiniLMTextEncoder` (same weights and tokenizer) and keeps
    per-expression results in a cache, since training loops repeat expressions.
    """

    def __init__(self, text_encoder=None, max_tokens: int = 40):
        if text_encoder is None:
            text_encoder = MiniLMTextEncoder()
        self.text_encoder = text_encoder
        self.max_tokens = max_tokens
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        _check_expressions(expressions)
        missing = [t for t in dict.fromkeys(expressions) if t not in self.cache]
        if missing:
            tok = self.text_encoder.tokenizer(missing, padding=True, truncation=False, return_tensors="pt")
            too_long = [t for t, n in zip(missing, tok["attention_mask"].sum(1).tolist()) if n > self.max_tokens]
            if too_long:
                raise ValueError(
                    f"expression too long ({self.max_tokens} word pieces max): {too_long[0][:80]!r}...; "
                    "shorten it or raise RS2SAM2Config.max_text_tokens"
                )
            inputs = {k: v.to(self.text_encoder.device) for k, v in tok.items()}
            states = self.text_encoder.model(**inputs).last_hidden_state
            for i, text in enumerate(missing):
                n = int(tok["attention_mask"][i].sum())
                self.cache[text] = states[i, :n].float().cpu()
        rows = [self.cache[t] for t in expressions]
        length = max(r.shape[0] for r in rows)
        out = torch.zeros(len(rows), length, rows[0].shape[1])
        pad = torch.ones(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
            pad[i, : r.shape[0]] = False
        return out, pad


@dataclass
class RS2SAM2LossWeights:
    """Paper: lambda_ce = 1, lambda_dice = 0.1, lambda_tbl = 0.2 (0 turns the boundary loss off)."""

    ce: float = 1.0
    dice: float = 0.1
    boundary: float = 0.2


class RS2SAM2Loss(nn.Module):
    """``L = lambda_ce L_ce + lambda_dice L_dice + lambda_tbl L_tbl`` on the full-size mask logits."""

    def __init__(self, sentence_dim: int, weights: RS2SAM2LossWeights | None = None):
        super().__init__()
        self.weights = weights or RS2SAM2LossWeights()
        self.boundary = TextGuidedBoundaryLoss(sentence_dim)

    def forward(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = out["masks"]
        if target.ndim == 3:
            target = target[:, None]
        target = target.to(logits.dtype)
        if target.shape[-2:] != logits.shape[-2:]:
            target = F.interpolate(target, size=logits.shape[-2:], mode="nearest")
        ce = sigmoid_bce_loss(logits, target)
        dice = dice_loss(logits, target)
        total = self.weights.ce * ce + self.weights.dice * dice
        logs = {"ce": float(ce.detach()), "dice": float(dice.detach())}
        if self.weights.boundary > 0:
            tbl = self.boundary(logits, target, out["sentence"])
            total = total + self.weights.boundary * tbl
            logs["tbl"] = float(tbl.detach())
        return total, logs
