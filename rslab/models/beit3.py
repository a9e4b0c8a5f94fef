"""BEiT-3, the Union Encoder of RS2-SAM2 (Sec. 3.1 of the RS2-SAM2 paper; BEiT-3: Wang et al.,
"Image as a Foreign Language", CVPR 2023), written to load the official release as it is.

BEiT-3 is a Multiway Transformer: every block shares one self-attention over the concatenated
image and text tokens, while each modality has its own expert for everything else (the query,
key, value and output projections, the layer norms and the FFN): image tokens go through the
vision expert ``A``, text tokens through the language expert ``B``. Blocks are pre-norm with
Sub-LN (Magneto): an extra LayerNorm inside the attention (before the output projection) and
inside the FFN (before ``fc2``). Positions are learned, one table per modality, indexed from 2
(the fairseq convention); the image adds a ``[CLS]`` token.

Why an in-repo module rather than the ``torchscale`` package: torchscale 0.3.0 (the version the
release targets) pins ``timm==0.6.13`` and ``fairscale==0.4.0``, which conflict with this project's
``timm>=1.0``; and the encoder needs only the forward pass above (about 150 lines). The module
keeps torchscale's parameter names, so the release's state dict (``{"model": {"beit3.<name>":
tensor}}`` in ``beit3_{base,large}_patch16_224.pth``) loads with ``strict=True`` after dropping the
``beit3.`` prefix (:func:`beit3_state_dict`); heads stored beside it (``mlm_head``, ...) are not
part of the encoder and are ignored. timm's ``beit3_*`` models read the same files but keep the
vision path only; RS2-SAM2 needs the joint image-text encoding.

Checked against torchscale 0.3.0's ``BEiT3`` (installed aside, with its fairscale wrappers
stubbed): a 3-block model with randomised weights, the torchscale state dict loaded here with
``strict=True``, gave identical outputs (max abs difference 0.0) for image-only, text-only (with
padding) and joint inputs.

Text is tokenised with the release's sentencepiece model ``beit3.spm`` (XLM-R vocabulary, 64010
ids): :func:`beit3_tokenizer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from rslab.weights import KNOWN_FILES


@dataclass
class BEiT3Config:
    """Architecture of a BEiT-3 release (base: 768 wide, 12 blocks, 12 heads, FFN 3072; large:
    1024, 24, 16, 4096; both ViT patch 16 at 224 px and a 64010-token vocabulary)."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    vocab_size: int = 64010
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_text_positions: int = 1024
    layernorm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by heads {self.heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        for key in ("vocab_size", "depth", "mlp_dim", "max_text_positions"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2


class Multiway(nn.Module):
    """Two experts: ``A`` for the first ``split`` tokens (image), ``B`` for the rest (text).
    ``split=-1``: all tokens are image tokens; ``split=0``: all are text."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.A, self.B = a, b

    def forward(self, x: torch.Tensor, split: int) -> torch.Tensor:
        if split == -1:
            return self.A(x)
        if split == 0:
            return self.B(x)
        return torch.cat([self.A(x[:, :split]), self.B(x[:, split:])], dim=1)


def _ln(cfg: BEiT3Config, dim: int | None = None) -> Multiway:
    d = dim or cfg.embed_dim
    return Multiway(nn.LayerNorm(d, eps=cfg.layernorm_eps), nn.LayerNorm(d, eps=cfg.layernorm_eps))


def _linear(cfg: BEiT3Config) -> Multiway:
    return Multiway(nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.Linear(cfg.embed_dim, cfg.embed_dim))


class FeedForward(nn.Module):
    """fc1 -> GELU -> Sub-LN -> fc2."""

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.embed_dim)
        self.ffn_layernorm = nn.LayerNorm(cfg.mlp_dim, eps=cfg.layernorm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x).float()).type_as(x)
        return self.fc2(self.ffn_layernorm(h))


class MultiwayAttention(nn.Module):
    """Self-attention shared by both modalities, with per-modality projections and Sub-LN."""

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (_linear(cfg) for _ in range(4))
        self.inner_attn_ln = _ln(cfg)

    def forward(self, x: torch.Tensor, split: int, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        heads = lambda t: t.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x, split)), heads(self.k_proj(x, split)), heads(self.v_proj(x, split))
        logits = (q * (c // self.heads) ** -0.5) @ k.transpose(-1, -2)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(logits.float(), dim=-1).type_as(q)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(self.inner_attn_ln(out, split), split)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.self_attn = MultiwayAttention(cfg)
        self.self_attn_layer_norm = _ln(cfg)
        self.ffn = Multiway(FeedForward(cfg), FeedForward(cfg))
        self.final_layer_norm = _ln(cfg)

    def forward(self, x: torch.Tensor, split: int, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x, split), split, key_padding_mask)
        return x + self.ffn(self.final_layer_norm(x, split), split)


class VisionEmbedding(nn.Module):
    """Patch embedding (a strided conv) with a [CLS] token; ``mask_token`` is used in pre-training."""

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)


class Encoder(nn.Module):
    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        # +2: positions start at 2 (fairseq convention), +1: the [CLS] token
        self.embed_positions = Multiway(nn.Embedding(cfg.num_patches + 3, cfg.embed_dim),
                                        nn.Embedding(cfg.max_text_positions, cfg.embed_dim))
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.depth))
        self.layer_norm = _ln(cfg)


class BEiT3(nn.Module):
    """The BEiT-3 encoder of the official release (parameter names as in the release).

    ``forward(images=None, text_ids=None, text_padding_mask=None)`` -> dict with ``tokens``
    (B, L, C): image tokens first ([CLS] then patches), then text tokens; ``split`` (the number of
    image tokens, -1 for image only, 0 for text only); ``image_cls`` / ``text_cls`` the first
    token of each modality when present."""

    def __init__(self, cfg: BEiT3Config | None = None):
        super().__init__()
        self.cfg = cfg or BEiT3Config()
        self.text_embed = nn.Embedding(self.cfg.vocab_size, self.cfg.embed_dim)
        self.vision_embed = VisionEmbedding(self.cfg)
        self.encoder = Encoder(self.cfg)

    def forward(self, images: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
                text_padding_mask: torch.Tensor | None = None) -> dict[str, Any]:
        cfg = self.cfg
        if images is None and text_ids is None:
            raise ValueError("BEiT3 needs images, text_ids or both")
        parts, pads = [], []
        pos = self.encoder.embed_positions
        if images is not None:
            if images.ndim != 4 or images.shape[1] != cfg.in_chans or images.shape[-2:] != (cfg.img_size,) * 2:
                raise ValueError(f"images must be (B, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}) "
                                 f"(BEiT-3's pre-training size), got {tuple(images.shape)}")
            v = self.vision_embed(images)
            parts.append(v + pos.A.weight[2:2 + v.shape[1]])
            pads.append(torch.zeros(v.shape[:2], dtype=torch.bool, device=v.device))
        if text_ids is not None:
            if text_ids.ndim != 2 or text_ids.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"text_ids must be (B, L) integer token ids, "
                                 f"got {tuple(text_ids.shape)} {text_ids.dtype}")
            if text_ids.shape[1] + 2 > cfg.max_text_positions:
                raise ValueError(f"text of {text_ids.shape[1]} tokens exceeds {cfg.max_text_positions - 2} positions")
            t = self.text_embed(text_ids)
            parts.append(t + pos.B.weight[2:2 + t.shape[1]])
            if text_padding_mask is not None and text_padding_mask.shape != text_ids.shape:
                raise ValueError(f"text_padding_mask {tuple(text_padding_mask.shape)} "
                                 f"must match text_ids {tuple(text_ids.shape)}")
            pads.append(text_padding_mask.bool() if text_padding_mask is not None
                        else torch.zeros(text_ids.shape, dtype=torch.bool, device=text_ids.device))
        if images is not None and text_ids is not None and images.shape[0] != text_ids.shape[0]:
            raise ValueError(f"batch sizes differ: images {images.shape[0]}, text {text_ids.shape[0]}")
        split = -1 if text_ids is None else 0 if images is None else parts[0].shape[1]
        x = torch.cat(parts, dim=1)
        pad = torch.cat(pads, dim=1)
        x = x * (~pad).unsqueeze(-1).type_as(x)
        mask = pad if pad.any() else None
        for layer in self.encoder.layers:
            x = layer(x, split, mask)
        x = self.encoder.layer_norm(x, split)
        out: dict[str, Any] = {"tokens": x, "split": split}
        if images is not None:
            out["image_cls"] = x[:, 0]
        if text_ids is not None:
            out["text_cls"] = x[:, 0 if images is None else split]
        return out


def beit3_state_dict(checkpoint: Any) -> dict[str, torch.Tensor] | None:
    """The encoder's state dict from a release checkpoint (``{"model": {"beit3.*": ...}}``, also
    ``"module"``-wrapped or already un-prefixed); ``None`` when it is not a BEiT-3 checkpoint."""
    if isinstance(checkpoint, Mapping):
        for key in ("model", "module", "state_dict"):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping):
        return None
    sd = {k[len("beit3."):]: v for k, v in checkpoint.items() if k.startswith("beit3.")}
    if not sd and "text_embed.weight" in checkpoint:
        sd = {k: v for k, v in checkpoint.items() if not k.startswith(("mlm_head", "mim_head"))}
    return sd if "text_embed.weight" in sd and "vision_embed.proj.weight" in sd else None


class BEiT3Tokenizer:
    """The release's text tokenizer: the sentencepiece model ``beit3.spm`` with XLM-R's id layout
    (as transformers' XLMRobertaTokenizer reads it): ``<s>``=0, ``<pad>``=1, ``</s>``=2,
    ``<unk>``=3, every other sentencepiece id shifted by one (the fairseq offset), ``<mask>`` last.

    Called like a transformers tokenizer on a list of strings:
    ``tok(texts, add_special_tokens=True)["input_ids"]`` -> lists of ids, ``<s> ... </s>`` around
    each; ``pad_token_id`` for padding. Uses the ``sentencepiece`` package directly, so the text
    normalisation is exactly the model's own."""

    bos_token_id, pad_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3

    def __init__(self, spm_path: str | Path):
        try:
            import sentencepiece as spm
        except ImportError as exc:
            raise ImportError("reading beit3.spm needs the sentencepiece package: pip install sentencepiece") from exc
        path = Path(spm_path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: name it
            raise ValueError(f"{path}: not a sentencepiece model ({type(exc).__name__}: {exc})") from exc
        self.path = path
        self.mask_token_id = self.sp.get_piece_size() + 1

    def __len__(self) -> int:
        return self.sp.get_piece_size() + 2   # + <pad> (the fairseq offset) + <mask>

    def _to_id(self, spm_id: int) -> int:
        return self.unk_token_id if spm_id == self.sp.unk_id() else spm_id + 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        ids = [self._to_id(i) for i in self.sp.encode(text)]
        return [self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids

    def decode(self, ids: list[int]) -> str:
        special = {self.bos_token_id, self.pad_token_id, self.eos_token_id, self.mask_token_id}
        return self.sp.decode([i - 1 for i in ids if i not in special and i != self.unk_token_id])

    def __call__(self, texts: str | list[str], add_special_tokens: bool = True) -> dict[str, list]:
        single = isinstance(texts, str)
        ids = [self.encode(t, add_special_tokens) for t in ([texts] if single else list(texts))]
        out = {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}
        return {k: v[0] for k, v in out.items()} if single else out


def beit3_tokenizer(spm_path: str | Path) -> BEiT3Tokenizer:
    """:class:`BEiT3Tokenizer` on the release's ``beit3.spm`` (needs the ``sentencepiece`` package)."""
    path = Path(spm_path)
    if not path.is_file():
        raise FileNotFoundError(f"BEiT-3 sentencepiece model not found: {path}; download "
                                f"{KNOWN_FILES['beit3.spm']} there (beside the beit3_*_patch16_224.pth weights)")
    return BEiT3Tokenizer(path)
