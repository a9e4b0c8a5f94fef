"""SkySense-VITA stage 1: image-level optical-SAR alignment, and the optical-text space it needs.

Paper (SkySense-VITA, CVPR 2026), Sec. "Image-level Alignment Pre-training": the SAR-optical domain
gap makes SAR hard to learn from, so SAR is aligned *indirectly*: the optical encoder E_opt, which
already lives in an optical-text space (CLIP-like), is frozen, and only the SAR encoder E_SAR is
trained with L_img = lambda_CL L_CL + lambda_CMA L_CMA on globally average-pooled features
(see :mod:`rslab.losses.contrastive`). SAR then inherits what the optical-text space can do
(retrieval, zero-shot text classification) without ever seeing a caption.

Default profile (no pretrained CLIP on disk): the optical encoder is a small
:class:`~rslab.models.encoders.ImageEncoder` first trained briefly against the *frozen* MiniLM text
encoder on synthetic captions and class prompts (locked-text tuning, :class:`OpticalTextModel`),
then frozen. The paper's setting -- a pretrained CLIP vision tower with its text tower -- needs only
an optical encoder returning GAP features in the text space; wiring an open_clip tower in is left
to the full profile (not done yet: it currently runs the same recipe with larger encoders).

Pieces:
- :class:`AlignmentConfig` -- encoder sizes and loss weights (tiny/small/base presets).
- :class:`OpticalTextModel` -- optical encoder + learnable temperature for locked-text tuning.
- :class:`SARAlignmentModel` -- frozen E_opt + trainable E_SAR; forward gives f_opt, f^a_SAR, f^b_SAR.
- the two short training runs live in :mod:`rslab.recipes.alignment` (models never import the trainer).
- :func:`embed_optical`, :func:`embed_sar`, :func:`embed_inputs` (:func:`global_embedding`), :func:`retrieval_scores`, :func:`zero_shot_accuracy`,
  :func:`pca_2d` -- evaluation.
- :func:`pairs_to_tensors`, :func:`balanced_scenes`, :func:`dominant_class`, :func:`scene_texts`, :func:`restyled_scenes`,
  :func:`tile_pairs`, :func:`one_hot_labels` -- data.
- :func:`save_encoder`, :func:`load_encoder` -- safetensors + JSON config, for later notebooks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rslab.io import write_atomically, write_text_atomically
from rslab.models.encoders import (
    DEFAULT_TEMPLATES,
    EncoderOutput,
    ImageEncoder,
    ImageEncoderConfig,
    freeze,
    preprocess_optical,
    preprocess_sar,
)


# --------------------------------------------------------------------------------------------
# Config and models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentConfig:
    """Encoders and L_img weights for stage-1 alignment.

    ``optical.out_dim`` and ``sar.out_dim`` must equal the text encoder's dim (384 for MiniLM):
    all three live in one space.
    """

    optical: ImageEncoderConfig = field(default_factory=lambda: ImageEncoderConfig.tiny(4))
    sar: ImageEncoderConfig = field(default_factory=lambda: ImageEncoderConfig.tiny(2))
    lambda_cl: float = 1.0
    lambda_cma: float = 1.0
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.sar.in_chans != 2:
            raise ValueError(f"the SAR encoder takes 2 channels (VV, VH), got in_chans={self.sar.in_chans}")
        if self.optical.out_dim != self.sar.out_dim:
            raise ValueError(
                f"optical.out_dim ({self.optical.out_dim}) != sar.out_dim ({self.sar.out_dim}); "
                "both must project into the same optical-text space."
            )

    @classmethod
    def tiny(cls, optical_chans: int = 4, **kw) -> "AlignmentConfig":
        return cls(ImageEncoderConfig.tiny(optical_chans), ImageEncoderConfig.tiny(2), **kw)

    @classmethod
    def small(cls, optical_chans: int = 4, **kw) -> "AlignmentConfig":
        return cls(ImageEncoderConfig.small(optical_chans), ImageEncoderConfig.small(2), **kw)

    @classmethod
    def base(cls, optical_chans: int = 4, **kw) -> "AlignmentConfig":
        return cls(ImageEncoderConfig.base(optical_chans), ImageEncoderConfig.base(2), **kw)


class OpticalTextModel(nn.Module):
    """Optical encoder + CLIP's learnable temperature, for locked-text tuning (LiT).

    The text side is a frozen :class:`~rslab.models.encoders.TextEncoder` whose embeddings are
    passed in precomputed; only the image tower (and the temperature) learn.
    """

    def __init__(self, cfg: ImageEncoderConfig, init_temperature: float = 0.07):
        super().__init__()
        self.encoder = ImageEncoder(cfg)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        # clamp as CLIP does (logit scale <= 100) so the loss cannot blow up
        return 1.0 / self.log_inv_temperature.clamp(max=math.log(100)).exp()

    def forward(self, optical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings (B, D), temperature): both from ``forward`` so a DDP-wrapped model works."""
        return self.encoder(preprocess_optical(optical)).embedding, self.temperature


class SARAlignmentModel(nn.Module):
    """Frozen optical encoder E_opt + trainable SAR encoder E_SAR (its own conv tokenizer).

    ``init_from_optical`` starts E_SAR as a copy of E_opt's blocks (see :meth:`_copy_optical_weights`).
    ``forward(optical_a, sar_a, sar_b=None)`` returns the GAP features
    ``{"f_opt", "f_sar_a", "f_sar_b"}`` that :class:`~rslab.losses.contrastive.ImageAlignmentLoss`
    consumes. SAR nodata (NaN) is masked out of the pooling, never fed to the network.
    """

    def __init__(self, optical_encoder: ImageEncoder, sar_cfg: ImageEncoderConfig | None = None,
                 init_from_optical: bool = False):
        super().__init__()
        if not isinstance(optical_encoder, ImageEncoder):
            raise ValueError(f"optical_encoder must be an ImageEncoder, got {type(optical_encoder).__name__}")
        sar_cfg = sar_cfg or ImageEncoderConfig.tiny(2, out_dim=optical_encoder.cfg.out_dim)
        if sar_cfg.in_chans != 2 or sar_cfg.out_dim != optical_encoder.cfg.out_dim:
            raise ValueError(
                f"sar_cfg needs in_chans=2 and out_dim={optical_encoder.cfg.out_dim} (the optical space), "
                f"got in_chans={sar_cfg.in_chans}, out_dim={sar_cfg.out_dim}"
            )
        self.optical = freeze(optical_encoder)
        self.sar = ImageEncoder(sar_cfg)
        if init_from_optical:
            self._copy_optical_weights()

    def _copy_optical_weights(self) -> None:
        """Start E_SAR from E_opt's weights except the tokenizer (a copy, trained on; E_opt stays frozen).

        The paper does not say how E_SAR is initialised. Starting from the optical encoder means SAR
        only has to learn a tokenizer and adapt the blocks, instead of a whole encoder from scratch.
        """
        if self.sar.cfg.embed_dim != self.optical.cfg.embed_dim or self.sar.cfg.depth != self.optical.cfg.depth:
            raise ValueError("init_from_optical needs the SAR encoder to have the optical encoder's embed_dim and depth, "
                             f"got {self.sar.cfg.embed_dim}/{self.sar.cfg.depth} vs "
                             f"{self.optical.cfg.embed_dim}/{self.optical.cfg.depth}")
        state = {k: v for k, v in self.optical.state_dict().items() if not k.startswith("tokenizer.")}
        missing, unexpected = self.sar.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("tokenizer.") for k in missing), (missing, unexpected)

    def train(self, mode: bool = True) -> "SARAlignmentModel":
        super().train(mode)
        self.optical.eval()  # frozen: BatchNorm statistics must not drift either
        return self

    def encode_sar(self, sar_db: torch.Tensor) -> EncoderOutput:
        x, valid = preprocess_sar(sar_db)
        return self.sar(x, valid=valid)

    @torch.no_grad()
    def encode_optical(self, optical: torch.Tensor) -> EncoderOutput:
        return self.optical(preprocess_optical(optical))

    def forward(
        self, optical_a: torch.Tensor | None, sar_a: torch.Tensor, sar_b: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        if optical_a is not None and optical_a.shape[-2:] != sar_a.shape[-2:]:
            raise ValueError(
                f"optical {tuple(optical_a.shape)} and SAR {tuple(sar_a.shape)} differ in size; pairs must be co-registered."
            )
        return {
            "f_opt": None if optical_a is None else self.encode_optical(optical_a).embedding,
            "f_sar_a": self.encode_sar(sar_a).embedding,
            "f_sar_b": None if sar_b is None else self.encode_sar(sar_b).embedding,
        }


# --------------------------------------------------------------------------------------------
# Data checks
# --------------------------------------------------------------------------------------------


def check_pairs(optical: torch.Tensor, sar_db: torch.Tensor, max_nodata: float = 0.5) -> torch.Tensor:
    """Validate co-registered batches; return a (N,) bool keep-mask of usable pairs.

    Raises ``ValueError`` on a shape or channel mismatch. Pairs whose SAR has more than
    ``max_nodata`` NaN pixels are flagged (False) so callers drop them rather than train on them;
    the remaining NaNs are masked inside the encoder.
    """
    if not isinstance(optical, torch.Tensor) or not isinstance(sar_db, torch.Tensor):
        raise ValueError("optical and sar must be torch tensors (N, C, H, W); use torch.from_numpy().")
    if optical.ndim != 4 or sar_db.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) batches, got optical {tuple(optical.shape)}, sar {tuple(sar_db.shape)}")
    if sar_db.shape[1] != 2:
        raise ValueError(f"SAR must have 2 channels (VV, VH) in dB, got {sar_db.shape[1]} (shape {tuple(sar_db.shape)})")
    if optical.shape[0] != sar_db.shape[0] or optical.shape[-2:] != sar_db.shape[-2:]:
        raise ValueError(
            f"optical {tuple(optical.shape)} and SAR {tuple(sar_db.shape)} are not co-registered pairs: "
            "they must share N, H and W."
        )
    if not torch.isfinite(optical).all():
        raise ValueError("optical contains NaN/inf; drop those pairs first (optical nodata is not supported).")
    nodata = (~torch.isfinite(sar_db)).any(1).float().mean((1, 2))
    return nodata <= max_nodata


def pairs_to_tensors(samples: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``Sample`` s into (N, C, H, W) optical and (N, 2, H, W) SAR float tensors, checked."""
    if not samples:
        raise ValueError("no samples given")
    missing = [i for i, s in enumerate(samples) if s.optical is None or s.sar is None]
    if missing:
        raise ValueError(f"samples {missing[:5]} lack an optical or SAR image; alignment needs co-registered pairs.")
    shapes = {(s.optical.shape, s.sar.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples differ in shape {sorted(shapes)[:3]}; crop or tile them to one size first.")
    optical = torch.from_numpy(np.stack([s.optical for s in samples])).float()
    sar = torch.from_numpy(np.stack([s.sar for s in samples])).float()
    check_pairs(optical, sar)
    return optical, sar


def dominant_class(labels: np.ndarray, tree, level: int) -> int:
    """Class id at ``level`` covering most labelled pixels of a leaf-label map (ignore excluded)."""
    mapped = np.asarray(tree.to_level(labels, level))
    mapped = mapped[mapped != 255]
    if mapped.size == 0:
        raise ValueError("label map has no labelled pixel")
    return int(np.bincount(mapped, minlength=tree.num_classes(level)).argmax())


def scene_texts(samples: Sequence, tree, level: int = 2, split: str = "train", layout_captions: int = 0,
                seed: int = 0, layout_repeat: int = 1) -> list[list[str]]:
    """Per scene, its texts for locked-text tuning: the caption, then every prompt template
    (:data:`~rslab.models.encoders.DEFAULT_TEMPLATES`) filled with every ``split`` synonym of the
    scene's dominant class at ``level``, then ``layout_captions`` paraphrases of its layout caption
    (:func:`~rslab.data.synthetic_text.make_layout_caption`: class shares and where each class lies;
    synonyms drawn with a generator seeded by ``seed``), each listed ``layout_repeat`` times: the
    layout then weighs more in the random draw of one text per step at no extra text-encoding cost
    (the text encoder caches by string)."""
    from rslab.data.synthetic_text import make_layout_caption

    if layout_captions < 0 or layout_repeat < 1:
        raise ValueError(f"need layout_captions >= 0 and layout_repeat >= 1, got {layout_captions}, {layout_repeat}")
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        names = tree.synonyms(tree.nodes(level)[dominant_class(s.labels, tree, level)], split)
        texts = [s.caption] + [t.format(n) for n in names for t in DEFAULT_TEMPLATES]
        texts += [make_layout_caption(s.labels, tree, rng, split) for _ in range(layout_captions)] * layout_repeat
        out.append(texts)
    return out


def balanced_scenes(world, class_names: Sequence[str], per_class: int, level: int = 2, start: int = 100_000,
                    max_tries: int = 50_000, **scene_kw) -> tuple[list, torch.Tensor]:
    """Scenes ``start, start+1, ...`` of a synthetic world, kept until each class of ``class_names``
    (names at ``level``) dominates ``per_class`` of them. Returns (samples, class index per sample).

    Use a ``start`` far from the training indices so the evaluation scenes are held out.
    """
    tree = world.tree
    ids = [tree.class_id(tree.find(n), level) for n in class_names]
    buckets: dict[int, list] = {c: [] for c in ids}
    for index in range(start, start + max_tries):
        sample = world.scene(index, **scene_kw)
        c = dominant_class(sample.labels, tree, level)
        if c in buckets and len(buckets[c]) < per_class:
            buckets[c].append(sample)
            if all(len(b) == per_class for b in buckets.values()):
                break
    else:
        short = {tree.names(level)[c]: len(b) for c, b in buckets.items()}
        raise ValueError(f"after {max_tries} scenes some classes dominate too few of them: {short}; lower per_class.")
    samples = [s for c in ids for s in buckets[c]]
    targets = torch.tensor([k for k, c in enumerate(ids) for _ in buckets[c]])
    return samples, targets


def restyled_scenes(world, samples: Sequence, offset: int | None = None) -> list:
    """The same ground in another regional style: each sample re-rendered by ``world`` (same
    layout and labels, other colours and SAR moisture shift), e.g. as a second acquisition.

    ``offset`` shifts the style index by a fixed amount (mod the number of styles); by default it
    cycles through 1 .. n_styles - 1 so every other style is used. Needs ``n_styles >= 2``.
    """
    n = world.config.n_styles
    if n < 2:
        raise ValueError(f"restyling needs a world with at least 2 styles, got n_styles={n}")
    if offset is not None and offset % n == 0:
        raise ValueError(f"offset {offset} maps every style to itself (n_styles={n})")
    out = []
    for i, s in enumerate(samples):
        if "index" not in s.meta or "style" not in s.meta:
            raise ValueError("samples must come from a SyntheticWorld (meta needs 'index' and 'style')")
        shift = offset if offset is not None else 1 + i % (n - 1)
        out.append(world.scene(s.meta["index"], style=(s.meta["style"] + shift) % n, size=s.labels.shape[-1]))
    return out


def tile_pairs(sample, tile: int, optical_bands: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Cut a large co-registered ``Sample`` into non-overlapping ``tile x tile`` pairs.

    Returns ``{"optical": (T, C, t, t), "sar": (T, 2, t, t), "labels": (T, t, t), "origin": (T, 2)}``
    (labels only when the sample has them). ``optical_bands`` selects bands (e.g. Sentinel-2
    B4, B3, B2, B8 = (3, 2, 1, 7) to match the RGB+NIR of the synthetic world).
    """
    if sample.optical is None or sample.sar is None:
        raise ValueError("tile_pairs needs a sample with both optical and SAR images.")
    h, w = sample.shape
    if tile < 8 or tile > min(h, w):
        raise ValueError(f"tile must be in [8, {min(h, w)}], got {tile}")
    optical = sample.optical if optical_bands is None else sample.optical[list(optical_bands)]
    out: dict[str, list] = {"optical": [], "sar": [], "labels": [], "origin": []}
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            out["optical"].append(optical[:, y : y + tile, x : x + tile])
            out["sar"].append(sample.sar[:, y : y + tile, x : x + tile])
            if sample.labels is not None:
                out["labels"].append(sample.labels[y : y + tile, x : x + tile])
            out["origin"].append((y, x))
    result = {k: torch.from_numpy(np.stack(v)) for k, v in out.items() if v}
    result["optical"], result["sar"] = result["optical"].float(), result["sar"].float()
    return result


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def global_embedding(output) -> torch.Tensor:
    """The global embedding of an encoder's output: ``output.embedding`` for an
    :class:`ImageEncoder`, the output itself for a module that returns the embedding."""
    return output.embedding if hasattr(output, "embedding") else output


@torch.no_grad()
def _embed_in_batches(encoder: nn.Module, images: torch.Tensor, batch_size: int, forward) -> torch.Tensor:
    """L2-normalised ``forward(encoder, batch)`` over ``images`` in batches, on the encoder's device."""
    encoder.eval()
    device = next(encoder.parameters()).device
    out = [forward(encoder, images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


def embed_optical(encoder: ImageEncoder, optical: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised global embeddings (N, D) of optical images in [0, 1]."""
    return _embed_in_batches(encoder, optical, batch_size, lambda e, x: e(preprocess_optical(x)).embedding)


def embed_sar(encoder: ImageEncoder, sar_db: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised global embeddings (N, D) of SAR images in dB (nodata masked out of the pooling)."""
    def forward(e, x):
        x, valid = preprocess_sar(x)
        return e(x, valid=valid).embedding

    return _embed_in_batches(encoder, sar_db, batch_size, forward)


def embed_inputs(encoder: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised global embeddings (N, D) of model-ready inputs (no preprocessing), e.g. the
    one-hot label maps of :func:`one_hot_labels` fed to a ceiling-diagnostic student."""
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (N, C, H, W), got shape {tuple(inputs.shape)}")
    return _embed_in_batches(encoder, inputs, batch_size, lambda e, x: global_embedding(e(x)))


def one_hot_labels(labels: torch.Tensor | np.ndarray, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(N, H, W) leaf-label maps -> (N, num_classes, H, W) float in {-1, 1} (``ignore_index``
    pixels are -1 everywhere): the exact layout as an image, for the ceiling diagnostic."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    if labels.ndim != 3:
        raise ValueError(f"labels must be (N, H, W), got shape {tuple(labels.shape)}")
    valid = labels != ignore_index
    if num_classes < 1 or (labels[valid] >= num_classes).any() or (labels[valid] < 0).any():
        raise ValueError(f"label values must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
    out = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2).float()
    out = out * valid.unsqueeze(1)
    return out * 2 - 1


def retrieval_scores(query: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Recall@K of query i retrieving gallery i (cosine similarity); uses :func:`rslab.metrics.recall_at_k`."""
    from rslab.metrics import recall_at_k

    if query.shape != gallery.shape:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be paired row by row")
    sim = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    return recall_at_k(sim, np.arange(len(query)), ks)


def zero_shot_predict(image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Class index with the highest cosine similarity between image and class-prompt embeddings."""
    if image_emb.ndim != 2 or class_emb.ndim != 2 or image_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(
            f"need (N, D) image and (C, D) class embeddings of the same D, got {tuple(image_emb.shape)}, {tuple(class_emb.shape)}"
        )
    return (F.normalize(image_emb, dim=-1) @ F.normalize(class_emb, dim=-1).T).argmax(1)


def zero_shot_accuracy(image_emb: torch.Tensor, class_emb: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean per-class recall over classes present) of zero-shot prediction."""
    pred = zero_shot_predict(image_emb, class_emb)
    targets = torch.as_tensor(targets)
    if targets.shape != pred.shape:
        raise ValueError(f"targets must be ({len(pred)},), got {tuple(targets.shape)}")
    acc = float((pred == targets).float().mean())
    recalls = [float((pred[targets == c] == c).float().mean()) for c in targets.unique().tolist()]
    return {"acc": acc, "balanced_acc": float(np.mean(recalls))}


def pca_2d(*groups: torch.Tensor) -> list[np.ndarray]:
    """Project several (N_i, D) embedding sets with ONE 2-D PCA fitted on all of them together."""
    if not groups:
        raise ValueError("pass at least one embedding set")
    x = torch.cat([g.float() for g in groups]).numpy()
    mean = x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    proj = (x - mean) @ vt[:2].T
    sizes = np.cumsum([0] + [len(g) for g in groups])
    return [proj[a:b] for a, b in zip(sizes[:-1], sizes[1:])]


# --------------------------------------------------------------------------------------------
# Saving / loading
# --------------------------------------------------------------------------------------------


def save_encoder(encoder: ImageEncoder, path: str | Path) -> Path:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (config), each atomically."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    write_atomically(weights, lambda tmp: save_file(state, str(tmp)))
    write_text_atomically(config, json.dumps(asdict(encoder.cfg), indent=2))
    return weights


def load_encoder(path: str | Path, map_location: str = "cpu") -> ImageEncoder:
    """Rebuild an :class:`ImageEncoder` saved by :func:`save_encoder` (path with or without suffix)."""
    from safetensors.torch import load_file

    path = Path(path).with_suffix("")
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for f in (weights, config):
        if not f.is_file():
            raise FileNotFoundError(
                f"{f} not found; run notebooks/01_sar_alignment.ipynb (it saves the aligned encoders "
                "to artifacts/01_sar_alignment/) or pass the right path."
            )
    encoder = ImageEncoder(ImageEncoderConfig(**json.loads(config.read_text())))
    encoder.load_state_dict(load_file(str(weights), device=map_location))
    return encoder.eval()
