"""ConInfer's two branches built from the suite's own models (notebook 05, default profile).

ConInfer (``rslab.models.coninfer``) refines any per-patch class prior with context features.
The paper takes the prior from a CLIP-style vision-language model (MaskCLIP*, Sec. 3.1,
Eqs. 1-4) and the context from DINOv3 tokens (Sec. 3.2). No such weights exist offline, so the
default profile uses what the earlier notebooks train:

* **text prior** (:func:`text_prior_maps`): the notebook-01 optical encoder lives in the MiniLM
  text space (locked-text tuning); its patch tokens, passed through the same projection ``head``
  that maps the pooled token into that space, are compared with MiniLM class-prompt embeddings
  (cosine), and ``softmax(cos / T)`` gives the per-patch prior (the dense reading of Eq. 4, as
  MaskCLIP reads CLIP's patch tokens). The aligned notebook-01 SAR encoder gives a SAR prior the
  same way: SAR classified by text it never saw.
* **context features** (:func:`backbone_context_maps`): chosen stages of the notebook-02 unified
  backbone (QSACL pre-trained), average-pooled onto the prior's patch grid; notebook 05 picks
  the stages on validation scenes (:func:`backbone_stage_maps` gives all four from one pass).
  Other candidates (:func:`build_contexts`): the notebook-01 optical encoder's own tokens and the
  per-pixel embedding of notebook 03's VITA (:func:`load_vita`, :func:`vita_context_maps`), which,
  unlike the other two, was trained with pixel labels of its (other) training scenes.

Loading (:func:`load_alignment_encoders`; :func:`rslab.models.backbone.load_backbone`) reads the files notebooks 01 and
02 save under ``artifacts/``; :func:`train_alignment_encoders` and :func:`pretrain_backbone`
re-run those notebooks' recipes on a small budget when the files are missing.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rslab.data.augment import SARViewAugment
from rslab.data.pairs import pairs_to_tensors, restyled_scenes
from rslab.data.sar import normalize_sar
from rslab.losses.contrastive import ImageAlignmentLoss
from rslab.models import vita as V
from rslab.models.alignment import OpticalTextModel, SARAlignmentModel, load_encoder, scene_texts
from rslab.models.backbone import UnifiedBackbone, build_backbone, load_backbone
from rslab.models.coninfer import check_image
from rslab.models.encoders import (
    ImageEncoder,
    ImageEncoderConfig,
    MiniLMTextEncoder,
    preprocess_optical,
    preprocess_sar,
)
from rslab.models.qsacl import ContrastiveSSL, QSACLConfig
from rslab.recipes.alignment import train_locked_text, train_sar_alignment
from rslab.recipes.qsacl import pretrain
from rslab.train import TrainConfig

__all__ = [
    "text_prior_maps",
    "backbone_context_maps",
    "backbone_stage_maps",
    "stage_key",
    "encoder_token_maps",
    "vit_token_maps",
    "to_grid",
    "load_alignment_encoders",
    "load_vita",
    "vita_context_maps",
    "available_contexts",
    "build_contexts",
    "train_alignment_encoders",
    "small_budget",
    "pretrain_backbone",
    "artifact_profile",
    "load_or_train",
]


def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    check_image(images, name, ndim=4, allow_nan=True)  # layout, sizes, inf, huge values; NaN: SAR nodata


@torch.no_grad()
def _grid_maps(model: torch.nn.Module, images: torch.Tensor, grid: tuple[int, int], batch_size: int,
               forward: Callable[[torch.Tensor], Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """``forward`` (a list of (b, C, h', w') maps per batch) over ``images`` in batches, ``model``
    in eval mode (its mode restored after); each map adaptive-average-pooled onto ``grid`` (or, if
    coarser, bilinearly upsampled). Returns one (B, C, h, w) float32 CPU tensor per map."""
    _check_images(images)
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (h, w) with h, w >= 1, got {grid}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[torch.Tensor]] = []
    try:
        for i in range(0, images.shape[0], batch_size):
            parts = []
            for f in forward(images[i:i + batch_size].to(device)):
                if f.shape[-2] >= grid[0] and f.shape[-1] >= grid[1]:
                    f = F.adaptive_avg_pool2d(f, grid)
                else:
                    f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                parts.append(f.float().cpu())
            out.append(parts)
    finally:
        model.train(was_training)
    return [torch.cat([chunk[j] for chunk in out]) for j in range(len(out[0]))]


@torch.no_grad()
def text_prior_maps(encoder: ImageEncoder, images: torch.Tensor, class_embeddings: torch.Tensor,
                    modality: str = "optical", temperature: float = 0.03, batch_size: int = 8
                    ) -> torch.Tensor:
    """Per-patch class probabilities from an encoder aligned with a text space.

    ``p_i = softmax_k(cos(head(t_i), e_k) / T)`` for every patch token ``t_i`` (Eq. 4 with
    ``1 / T`` as CLIP's logit scale; the public ConInfer code uses 100, i.e. T = 0.01).

    Args:
        encoder: an :class:`~rslab.models.encoders.ImageEncoder` whose ``head`` projects into the
            text space (notebook 01's optical or aligned SAR encoder).
        images: (B, C, H, W) optical reflectance in [0, 1] (``modality="optical"``) or SAR in dB
            (``modality="sar"``; NaN nodata is zeroed by :func:`preprocess_sar`).
        class_embeddings: (K, D) L2-normalised class-prompt embeddings, D = the head's output size.
        temperature: softmax temperature T > 0.
        batch_size: images per forward pass.
    Returns (B, K, h, w) float32 probabilities on the encoder's token grid (h = H / patch_size).
    """
    _check_images(images)
    if modality not in ("optical", "sar"):
        raise ValueError(f"modality must be 'optical' or 'sar', got {modality!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if class_embeddings.ndim != 2 or class_embeddings.shape[1] != encoder.cfg.out_dim:
        raise ValueError(f"class_embeddings must be (K, {encoder.cfg.out_dim}) (the encoder's text space), "
                         f"got {tuple(class_embeddings.shape)}")
    if class_embeddings.shape[0] < 2:
        raise ValueError("need at least 2 classes")
    encoder.eval()
    device = next(encoder.parameters()).device
    classes = F.normalize(class_embeddings.float(), dim=-1).to(device)
    out = []
    for i in range(0, images.shape[0], batch_size):
        chunk = images[i:i + batch_size].to(device)
        x = preprocess_optical(chunk) if modality == "optical" else preprocess_sar(chunk)[0]
        tokens, (h, w) = encoder.forward_tokens(x)
        cos = F.normalize(encoder.head(tokens), dim=-1) @ classes.T          # (b, N, K)
        probs = torch.softmax(cos / temperature, dim=-1)
        out.append(probs.reshape(-1, h, w, classes.shape[0]).permute(0, 3, 1, 2).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def backbone_stage_maps(backbone: UnifiedBackbone, images: torch.Tensor, modality: str,
                        grid: tuple[int, int], gsd: float | None = None, batch_size: int = 8
                        ) -> list[torch.Tensor]:
    """All four stage maps of the backbone, each resized onto ``grid``, from one forward pass.

    Each stage map is adaptive-average-pooled to ``grid`` (or, if coarser, bilinearly
    upsampled). Returns ``[(B, C_0, h, w), ..., (B, C_3, h, w)]`` float32 on the CPU, so a caller
    can compare stages (e.g. on validation scenes) without running the backbone once per stage.
    """
    return _grid_maps(backbone, images, grid, batch_size,
                      lambda x: backbone(x, modality=modality, gsd=gsd))


def backbone_context_maps(backbone: UnifiedBackbone, images: torch.Tensor, modality: str,
                          grid: tuple[int, int], stages: Sequence[int] = (0,), gsd: float | None = None,
                          batch_size: int = 8) -> torch.Tensor:
    """Context features: the chosen stages' feature maps, average-pooled onto ``grid``.

    Args:
        backbone: a :class:`~rslab.models.backbone.UnifiedBackbone` (notebook 02).
        images: (B, C, H, W) model-ready input of ``modality`` (optical in [0, 1]; SAR through
            :func:`rslab.data.sar.normalize_sar`).
        grid: (h, w) patch grid of the prior; each stage map is adaptive-average-pooled (or, if
            coarser, bilinearly upsampled) to it.
        stages: stage indices 0..3, concatenated along channels. Default stage 0: on validation
            scenes the deeper stages of the smoke-trained backbone did not cluster by class
            (notebook 05 picks the stages on validation scenes).
    Returns (B, sum C_s, h, w) float32.
    """
    if not stages or any(not 0 <= s <= 3 for s in stages):
        raise ValueError(f"stages must be a non-empty sequence of stage indices 0..3, got {stages}")
    maps = backbone_stage_maps(backbone, images, modality, grid, gsd=gsd, batch_size=batch_size)
    return torch.cat([maps[s] for s in stages], dim=1)


def stage_key(stages: Sequence[int]) -> str:
    """Name of a context built from backbone ``stages``, e.g. ``"backbone[0,3]"``."""
    return "backbone[" + ",".join(map(str, stages)) + "]"


@torch.no_grad()
def encoder_token_maps(encoder: ImageEncoder, optical: torch.Tensor) -> torch.Tensor:
    """The notebook-01 optical encoder's patch tokens as a (B, D, h, w) map (a context candidate),
    computed on the encoder's device, returned on the CPU."""
    _check_images(optical, "optical")
    encoder.eval()
    tokens, hw = encoder.forward_tokens(preprocess_optical(optical.to(next(encoder.parameters()).device)))
    return tokens.reshape(optical.shape[0], *hw, -1).permute(0, 3, 1, 2).float().cpu()


@torch.no_grad()
def vit_token_maps(vit, rgb: torch.Tensor, size: int = 448, batch_size: int = 8) -> torch.Tensor:
    """Patch tokens of a timm ViT (e.g. DINOv2, full profile) at ``size`` px as a (B, D, g, g) map.

    ``rgb`` (B, 3, H, W) in [0, 1] is resized to ``size``; prefix tokens (CLS, registers) are dropped.
    The ViT runs on its own device (the GPU when it was moved there) over ``batch_size`` images at a
    time; the map comes back on the CPU.
    """
    _check_images(rgb, "rgb")
    if rgb.shape[1] != 3:
        raise ValueError(f"rgb must have 3 channels, got {rgb.shape[1]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = size // vit.patch_embed.patch_size[0]
    device = next(vit.parameters()).device
    out = []
    for i in range(0, rgb.shape[0], batch_size):
        x = F.interpolate(rgb[i:i + batch_size].to(device), size=size, mode="bilinear", align_corners=False)
        tokens = vit.forward_features(x)
        out.append(tokens[:, tokens.shape[1] - g * g:].transpose(1, 2).reshape(len(tokens), -1, g, g).float().cpu())
    return torch.cat(out)


def to_grid(maps: dict[str, torch.Tensor], grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Bilinearly resize every (B, C, h, w) map that is not on ``grid`` (priors and contexts must share one grid)."""
    return {k: v if tuple(v.shape[2:]) == tuple(grid) else F.interpolate(v, size=grid, mode="bilinear",
                                                                          align_corners=False)
            for k, v in maps.items()}


def load_alignment_encoders(directory: str | Path) -> dict[str, ImageEncoder]:
    """Notebook 01's saved encoders: ``{"optical": E_opt, "sar": E_SAR}`` (eval mode, CPU).

    Raises ``FileNotFoundError`` (naming the notebook to run) when the files are missing.
    """
    directory = Path(directory)
    return {"optical": load_encoder(directory / "optical_encoder"), "sar": load_encoder(directory / "sar_encoder")}


def load_vita(directory: str | Path, backbone_dir: str | Path | None = None):
    """Notebook 03's saved VITA (``vita_config.json`` + ``vita_<preset>.safetensors``), eval mode, CPU.

    A VITA whose encoder was notebook 02's backbone (``encoder_source`` "qsacl" or "auto" that
    picked it) is rebuilt around :func:`rslab.models.backbone.load_backbone` of ``backbone_dir``
    (its weights are then overwritten by the saved fine-tuned ones). Raises ``FileNotFoundError``
    (naming the notebook to run) when the files are missing.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config = directory / "vita_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found; run notebooks/03_vita_sga.ipynb (it saves its model to "
                                "artifacts/03_vita_sga/) or pass the right folder.")
    raw = json.loads(config.read_text())
    weights = directory / f"vita_{raw.get('preset', 'tiny')}.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found; run notebooks/03_vita_sga.ipynb")
    names = {f.name for f in fields(V.VITAConfig)}
    kw = {k: v for k, v in raw.items() if k in names}
    if "encoder_widths" in kw:
        kw["encoder_widths"] = tuple(kw["encoder_widths"])
    if "in_chans" in kw:
        kw["in_chans"] = tuple((m, int(c)) for m, c in kw["in_chans"])
    state = load_file(str(weights))
    encoder = None
    if any(k.startswith("encoder.backbone.") for k in state):
        if backbone_dir is None:
            raise FileNotFoundError("this VITA was built on notebook 02's backbone; pass backbone_dir")
        encoder = V.BackboneAdapter(load_backbone(backbone_dir))
    model = V.VITA(V.VITAConfig(**kw), encoder=encoder)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def vita_context_maps(model, images: torch.Tensor, modality: str, grid: tuple[int, int],
                      batch_size: int = 8, level: int | None = None) -> torch.Tensor:
    """Features of notebook 03's VITA average-pooled (or, if coarser, bilinearly upsampled) onto
    ``grid``: (B, D, h, w) float32 on the CPU.

    ``level=None``: the per-pixel embedding (the pixel decoder's stride-4 mask features,
    D = ``cfg.dim``); ``level=0, 1, 2``: that level of VITA's image encoder (strides 4, 8, 16).
    ``images``: model-ready input of ``modality`` (optical reflectance in [0, 1]; SAR through
    :func:`rslab.data.sar.normalize_sar`), sides a multiple of 16.
    """
    if level is not None and level not in (0, 1, 2):
        raise ValueError(f"level must be None (mask features) or 0, 1, 2, got {level}")
    forward = ((lambda x: [model.features(x, modality)[1]]) if level is None
               else (lambda x: [model.encoder(x, modality)[level]]))
    return _grid_maps(model, images, grid, batch_size, forward)[0]


_PART_MODEL = {"backbone": "backbone", "text_tokens": "encoder", "vita": "vita", "vita_encoder": "vita"}


def available_contexts(keys: Sequence[str], *, backbone: UnifiedBackbone | None = None,
                       encoder: ImageEncoder | None = None, vita=None) -> list[str]:
    """The :func:`build_contexts` keys among ``keys`` whose every part has its model (not None)."""
    models = {"backbone": backbone, "encoder": encoder, "vita": vita}
    return [k for k in keys
            if all(models.get(_PART_MODEL.get(part.split("[")[0], "")) is not None for part in k.split("+"))]


def build_contexts(keys: Sequence[str], inputs: dict[str, torch.Tensor], grid: tuple[int, int], *,
                   backbone: UnifiedBackbone | None = None, encoder: ImageEncoder | None = None, vita=None,
                   modalities: Sequence[str] = ("optical", "sar"), gsd: float | None = None
                   ) -> dict[str, torch.Tensor]:
    """Context feature maps named by ``keys``; each key joins parts with ``"+"``:

    * ``"backbone[0,1]"``: those notebook-02 backbone stages of every modality in ``modalities``;
    * ``"text_tokens"``: the notebook-01 optical encoder's patch tokens (optical only; skipped
      when ``"optical"`` is not in ``modalities``);
    * ``"vita"``: notebook 03's VITA per-pixel embedding of every modality in ``modalities``;
    * ``"vita_encoder[0]"``: that level (0-2) of VITA's image encoder, every modality.

    ``inputs`` maps a modality to model-ready images (optical in [0, 1], SAR normalised); every
    part is computed once and concatenated along channels, on ``grid``. Returns ``{key: (B, D, h, w)}``.
    """
    if not keys:
        raise ValueError("keys must be non-empty")
    mods = [m for m in modalities if m in inputs]
    if not mods:
        raise ValueError(f"no input images for modalities {list(modalities)}; got {sorted(inputs)}")
    cache: dict[str, list[torch.Tensor]] = {}

    def part(name: str) -> list[torch.Tensor]:
        if name in cache:
            return cache[name]
        if name.startswith("backbone["):
            if backbone is None:
                raise ValueError(f"context {name!r} needs the notebook-02 backbone")
            stages = [int(t) for t in name[len("backbone["):-1].split(",")]
            if any(not 0 <= st <= 3 for st in stages):
                raise ValueError(f"context {name!r}: backbone stage indices must lie in 0..3")
            if "stages" not in cache:
                cache["stages"] = {m: backbone_stage_maps(backbone, inputs[m], m, grid, gsd=gsd) for m in mods}
            out = [cache["stages"][m][st] for m in mods for st in stages]
        elif name == "text_tokens":
            if encoder is None:
                raise ValueError("context 'text_tokens' needs the notebook-01 optical encoder")
            out = ([to_grid({"t": encoder_token_maps(encoder, inputs["optical"])}, grid)["t"]]
                   if "optical" in mods else [])
        elif name == "vita" or name.startswith("vita_encoder["):
            if vita is None:
                raise ValueError(f"context {name!r} needs notebook 03's VITA")
            levels = [None] if name == "vita" else [int(t) for t in name[len("vita_encoder["):-1].split(",")]
            out = [vita_context_maps(vita, inputs[m], m, grid, level=lv) for m in mods for lv in levels]
        else:
            raise ValueError(f"unknown context part {name!r}: use backbone[...], text_tokens, vita or "
                             "vita_encoder[...]")
        cache[name] = out
        return out

    result = {}
    for key in keys:
        maps = [m for name in key.split("+") for m in part(name)]
        if not maps:
            raise ValueError(f"context {key!r} has no part for modalities {mods}")
        result[key] = torch.cat(maps, 1)
    return result


def small_budget(max_steps: int, lr: float = 2e-3, seed: int = 0):
    """The :class:`~rslab.train.TrainConfig` of a short CPU run of the recipes below (warm-up of 10
    steps at most, cosine decay, no progress bar, on the CPU)."""
    return TrainConfig(max_steps=max_steps, lr=lr, warmup_steps=min(10, max_steps), seed=seed,
                       log_every=max(1, max_steps // 5), progress=False, cpu=True)


def train_alignment_encoders(world, align, lit=None, n_train: int = 256,
                             encoder_config: ImageEncoderConfig | None = None, text_encoder=None,
                             batch_size: int = 64, crop: int = 48, level: int = 2, view_weight: float = 1.0,
                             optical_encoder: ImageEncoder | None = None) -> dict[str, ImageEncoder]:
    """Notebook 01's recipe on a small budget: locked-text tuning of an optical encoder against
    frozen MiniLM (captions + class prompts), then indirect SAR alignment (L_CL + L_CMA).
    With ``optical_encoder`` (e.g. the shipped stand-in, ``rslab.weights.load("optical-text-standin")``)
    the locked-text step is skipped and that frozen encoder is the teacher.

    Args:
        world: a :class:`~rslab.data.synthetic.SyntheticWorld` (its scene size is the training size).
        align / lit: the :class:`~rslab.train.TrainConfig` budgets of the SAR alignment and of the
            locked-text tuning (e.g. :func:`small_budget`); ``lit`` is needed unless
            ``optical_encoder`` is given.
        n_train: training scenes ``0 .. n_train - 1``.
        encoder_config: the optical encoder's config (the SAR one copies it with 2 channels);
            default: notebook 01's smoke size (tiny preset, 64-d, 2 blocks).
        text_encoder: a :class:`~rslab.models.encoders.MiniLMTextEncoder` (built if None).
        level: tree level of the class prompts paired with each scene.
        view_weight: weight of notebook 01's image-image term (second view: the scene restyled).
    Returns ``{"optical": E_opt, "sar": E_SAR}`` in eval mode.
    """
    if n_train < batch_size:
        raise ValueError(f"n_train ({n_train}) must be >= batch_size ({batch_size})")
    if not isinstance(align, TrainConfig) or not (optical_encoder is not None or isinstance(lit, TrainConfig)):
        raise ValueError("align (and lit, unless optical_encoder is given) must be rslab.train.TrainConfig budgets, "
                         f"e.g. small_budget(60); got {type(align).__name__} and {type(lit).__name__}")
    if optical_encoder is not None and not isinstance(optical_encoder, ImageEncoder):
        raise ValueError(f"optical_encoder must be an ImageEncoder, got {type(optical_encoder).__name__}")
    size = world.config.size
    cfg = encoder_config or ImageEncoderConfig.tiny(4, img_size=size, out_dim=384, embed_dim=64, depth=2, num_heads=2)
    text_encoder = text_encoder or MiniLMTextEncoder()
    scenes = [world.scene(i) for i in range(n_train)]
    optical, sar = pairs_to_tensors(scenes)
    texts = scene_texts(scenes, world.tree, level)
    embeddings = [text_encoder.encode(t) for t in texts]

    if optical_encoder is None:
        torch.manual_seed(lit.seed)
        optical_model = OpticalTextModel(cfg)
        other = pairs_to_tensors(restyled_scenes(world, scenes))[0] if view_weight > 0 else None
        train_locked_text(optical_model, optical, embeddings, lit, texts=texts, batch_size=batch_size,
                          crop=min(crop, size), colour=0.1, view_weight=view_weight, optical_other=other)
        optical_encoder = optical_model.encoder.eval()
    torch.manual_seed(align.seed + 1)
    model = SARAlignmentModel(optical_encoder, replace(cfg, in_chans=2))
    train_sar_alignment(model, optical, sar, ImageAlignmentLoss(1.0, 1.0, 0.1), align,
                        batch_size=batch_size,
                        augment=SARViewAugment(crop=min(crop, size), looks=(2.0, 8.0), max_offset_db=1.0))
    return {"optical": optical_encoder, "sar": model.sar.eval()}


def pretrain_backbone(world, config, n_scenes: int = 64, preset: str = "tiny",
                      batch_size: int = 16) -> UnifiedBackbone:
    """Notebook 02's recipe on a small budget: QSACL pre-training of the unified backbone on
    unlabelled optical and SAR scenes (batches alternate); returns the EMA teacher's backbone.
    ``config``: the run's :class:`~rslab.train.TrainConfig`, e.g.
    ``rslab.recipes.qsacl.pretrain_config(30, seed=0)`` (AdamW at the paper's 2e-4)."""
    if not isinstance(config, TrainConfig):
        raise ValueError("config must be a rslab.train.TrainConfig (e.g. pretrain_config(30)), "
                         f"got {type(config).__name__}")
    if n_scenes < 2:
        raise ValueError(f"need n_scenes >= 2, got {n_scenes}")
    if world.config.size < 64:
        raise ValueError(f"pretrain_backbone needs scenes of at least 64 px (the global view), got {world.config.size}")
    scenes = [world.scene(i) for i in range(n_scenes)]
    optical = torch.tensor(np.stack([s.optical for s in scenes]), dtype=torch.float32)
    sar = normalize_sar(torch.tensor(np.stack([s.sar for s in scenes]), dtype=torch.float32))
    torch.manual_seed(config.seed)
    # notebook 02's smoke settings: global 64 px / local 32 px views, no colour jitter, fast EMA
    qcfg = QSACLConfig.tiny(global_size=64, local_size=32, num_local=1, intensity_jitter=0.0, momentum=(0.9, 0.99))
    student = ContrastiveSSL(build_backbone(preset), qcfg)
    trainer = pretrain(student, {"optical": optical, "sar": sar}, config,
                       batch_size=batch_size, gsd=world.config.gsd_m)
    return trainer.ema_model.backbone.eval()


def load_or_train(load, directory: str | Path, notebook: str, train=None, trained_note: str = ""):
    """``(model, origin)``: ``load(directory)`` when the earlier notebook's files are there, else
    ``train()`` (when given), else ``(None, "stand-in")``; ``origin`` says which, for the reader and
    results.json. A missing file is reported, never silently replaced."""
    try:
        model = load(directory)
        return model, f"loaded from {directory} (notebook {notebook}, profile {artifact_profile(directory)})"
    except FileNotFoundError as err:
        print(f"notebook {notebook} artifacts:", err)
    if train is None:
        return None, "stand-in"
    return train(), f"trained here ({trained_note})" if trained_note else "trained here"


def artifact_profile(directory: str | Path) -> str | None:
    """The profile (ci | smoke | full) of the notebook run that wrote ``directory/results.json``,
    or None when there is no readable results.json (weights from a ci run are barely trained)."""
    path = Path(directory) / "results.json"
    try:
        return str(json.loads(path.read_text()).get("profile"))
    except (OSError, ValueError):
        return None
