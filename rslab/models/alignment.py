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
- :func:`embed_optical`, :func:`embed_sar`, :func:`embed_inputs` (:func:`global_embedding`) -- embeddings
  for evaluation; the scores (``retrieval_scores``, ``zero_shot_accuracy``) are in :mod:`rslab.metrics`,
  the PCA of the embedding plots (``pca_2d``) in :mod:`rslab.viz`.
- :func:`scene_texts` (the texts of locked-text tuning, filled into the encoders' prompt templates),
  :func:`one_hot_labels` (label maps as an image, for the ceiling diagnostic) -- model inputs. The
  optical-SAR pairs themselves (checks, scene selection, restyling, tiling) are in :mod:`rslab.data.pairs`.
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
from safetensors.torch import load_file, save_file

from rslab.data.pairs import dominant_class
from rslab.data.synthetic_text import make_layout_caption
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
            raise ValueError("init_from_optical needs the SAR encoder to have the optical encoder's "
                             "embed_dim and depth, "
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
                f"optical {tuple(optical_a.shape)} and SAR {tuple(sar_a.shape)} differ in size; "
                "pairs must be co-registered."
            )
        return {
            "f_opt": None if optical_a is None else self.encode_optical(optical_a).embedding,
            "f_sar_a": self.encode_sar(sar_a).embedding,
            "f_sar_b": None if sar_b is None else self.encode_sar(sar_b).embedding,
        }


# --------------------------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------------------------


def scene_texts(samples: Sequence, tree, level: int = 2, split: str = "train", layout_captions: int = 0,
                seed: int = 0, layout_repeat: int = 1) -> list[list[str]]:
    """Per scene, its texts for locked-text tuning: the caption, then every prompt template
    (:data:`~rslab.models.encoders.DEFAULT_TEMPLATES`) filled with every ``split`` synonym of the
    scene's dominant class at ``level``, then ``layout_captions`` paraphrases of its layout caption
    (:func:`~rslab.data.synthetic_text.make_layout_caption`: class shares and where each class lies;
    synonyms drawn with a generator seeded by ``seed``), each listed ``layout_repeat`` times: the
    layout then weighs more in the random draw of one text per step at no extra text-encoding cost
    (the text encoder caches by string)."""
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


# --------------------------------------------------------------------------------------------
# Saving / loading
# --------------------------------------------------------------------------------------------


def save_encoder(encoder: ImageEncoder, path: str | Path) -> Path:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (config), each atomically."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    write_atomically(weights, lambda tmp: save_file(state, str(tmp)))
    write_text_atomically(config, json.dumps(asdict(encoder.cfg), indent=2))
    return weights


def load_encoder(path: str | Path, map_location: str = "cpu") -> ImageEncoder:
    """Rebuild an :class:`ImageEncoder` saved by :func:`save_encoder` (path with or without suffix)."""
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
