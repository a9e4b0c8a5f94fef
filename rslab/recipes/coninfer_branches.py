"""ConInfer's two branches on scenes of the synthetic world: every prior and every context of notebook 05.

ConInfer (:mod:`rslab.models.coninfer`) refines any per-patch class prior ``p_i`` (Sec. 3.1,
Eqs. 1-4) with context features ``x_i`` (Sec. 3.2). Notebook 05 builds several of each on one
patch grid and compares them; this module holds that construction:

* :func:`load_suite_models`: the models of notebooks 01 (optical / SAR encoders in a text
  space), 02 (the unified backbone) and 03 (VITA), loaded from ``artifacts/``, trained here on a
  small budget when missing, or replaced by the stand-ins (:class:`SuiteModels` says which).
* :func:`build_branches`: the two in-notebook stand-ins (a weak linear prior on patch colour
  trained on one regional style, a small MLP context encoder on patch statistics), the class
  prompt embeddings of the text prior and, in the full profile, MaskCLIP* and DINOv2 by registry
  name; returns a :class:`SceneBranches`.
* :class:`SceneBranches`: :meth:`~SceneBranches.maps` gives every prior (as log-probabilities at
  T = 1, for the calibration on validation scenes) and every context of a batch of scenes;
  :meth:`~SceneBranches.tile_prior` / :meth:`~SceneBranches.tile_features` are the same branches on
  the tiles of a large scene (Sec. 3.6, :func:`~rslab.models.coninfer.refine_scene`);
  :meth:`~SceneBranches.sar_branches` the SAR-only pair.

The per-scene descriptors of the stand-ins (:func:`scene_descriptors`, :func:`colour_descriptors`,
:func:`sar_mean_descriptors`) and their training targets (:func:`patch_targets`) live here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rslab import weights as W
from rslab.data.sar import normalize_sar
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.models import coninfer as ci
from rslab.models.backbone import load_backbone
from rslab.models.encoders import MiniLMTextEncoder
from rslab.models.maskclip import MaskClipConfig, MaskClipSegmenter
from rslab.recipes import coninfer as rc
from rslab.recipes.coninfer_fit import ValidationChoice, fit_patch_classifier
from rslab.recipes.qsacl import pretrain_config

__all__ = ["stack_scenes", "scene_descriptors", "colour_descriptors", "sar_mean_descriptors", "flatten_patches",
           "patch_targets", "SuiteModels", "load_suite_models", "SceneBranches", "build_branches",
           "SUITE_CONTEXT", "STANDIN_CONTEXT", "PRIOR_SOURCES"]

#: ``context_source`` values that are not a registry name: the suite's models, or the stand-in encoder.
SUITE_CONTEXT, STANDIN_CONTEXT = "backbone", "standin"
#: ``prior_source`` values: notebook 01's encoders read against class prompts, the weak stand-in, MaskCLIP* (full).
PRIOR_SOURCES = ("text", "weak", "maskclip_star")


def _check_scenes(scenes, name: str = "scenes") -> list:
    scenes = list(scenes)
    if not scenes or not all(hasattr(s, "optical") and hasattr(s, "sar") for s in scenes):
        raise ValueError(f"{name} must be a non-empty list of scenes with .optical and .sar "
                         "(rslab.data.synthetic.SyntheticWorld.scene)")
    return scenes


def stack_scenes(scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """``(optical, sar_db)``: the scenes' (B, C, H, W) optical reflectance and SAR in dB, float32."""
    scenes = _check_scenes(scenes)
    return (torch.from_numpy(np.stack([s.optical for s in scenes])).float(),
            torch.from_numpy(np.stack([s.sar for s in scenes])).float())


def _describe(scene, patch: int, sar_only: bool) -> torch.Tensor:
    sar = torch.from_numpy(normalize_sar(scene.sar).astype(np.float32))
    if sar_only:
        return ci.patch_statistics(sar, patch)
    return torch.cat([ci.patch_statistics(scene.optical, patch), ci.patch_statistics(sar, patch)])


def scene_descriptors(scenes, patch: int, sar_only: bool = False) -> torch.Tensor:
    """(B, F, h, w) multi-scale patch statistics (:func:`~rslab.models.coninfer.patch_statistics`)
    of each scene's optical and normalised SAR channels (SAR only with ``sar_only``): the input of
    the stand-in context encoder."""
    return torch.stack([_describe(s, patch, sar_only) for s in _check_scenes(scenes)])


def colour_descriptors(scenes, patch: int) -> torch.Tensor:
    """(B, C, h, w) mean optical colour of every patch: the input of the weak stand-in prior."""
    return torch.stack([ci.patch_statistics(s.optical, patch, scales=(1,))[: s.optical.shape[0]]
                        for s in _check_scenes(scenes)])


def sar_mean_descriptors(scenes, patch: int) -> torch.Tensor:
    """(B, 2, h, w) mean normalised VV / VH of every patch: the input of the weak SAR stand-in prior."""
    return torch.stack([ci.patch_statistics(normalize_sar(s.sar).astype(np.float32), patch, scales=(1,))[:2]
                        for s in _check_scenes(scenes)])


def flatten_patches(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B*h*w, C): one row per patch (the layout :func:`fit_patch_classifier` takes)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        raise ValueError(f"maps must be a (B, C, h, w) tensor, got {getattr(maps, 'shape', type(maps))}")
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def patch_targets(scenes, level_lut: np.ndarray, num_classes: int, patch: int) -> torch.Tensor:
    """(B*h*w,) majority class of every patch of every scene, at the level of ``level_lut``
    (``tree.level_lut(level)``: leaf id -> class id), in :func:`flatten_patches` order."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return torch.cat([ci.patch_labels(level_lut[s.labels], patch, num_classes).flatten()
                      for s in _check_scenes(scenes)])


# --------------------------------------------------------------------------------------------
# the suite's models (notebooks 01-03)
# --------------------------------------------------------------------------------------------
@dataclass
class SuiteModels:
    """The models of notebooks 01-03 that notebook 05 uses, and where each came from.

    ``prior_source`` / ``context_source`` are the requested sources, turned into ``"weak"`` /
    ``"standin"`` when the suite model behind them is missing; ``*_origin`` say loaded from where,
    trained here or stand-in (recorded in results.json).
    """

    prior_source: str
    context_source: str
    encoders: dict | None = None
    backbone: torch.nn.Module | None = None
    vita: torch.nn.Module | None = None
    text_encoder: object | None = None
    prior_origin: str = "stand-in"
    context_origin: str = "stand-in"
    vita_origin: str = "absent"

    @property
    def context_models(self) -> dict:
        """The keyword arguments of :func:`rslab.recipes.coninfer.build_contexts` (backbone, encoder, vita)."""
        return dict(backbone=self.backbone, encoder=self.encoders["optical"] if self.encoders is not None else None,
                    vita=self.vita)

    def summary(self) -> str:
        """Where VITA, the prior and the context came from, one line each (printed by notebook 05)."""
        return (f"VITA (notebook 03): {self.vita_origin}\nprior: {self.prior_source} ({self.prior_origin})\n"
                f"context: {self.context_source} ({self.context_origin})")


def _train_encoders(seed: int, align_steps: int, lit_steps: int, n_align_scenes: int, text_encoder,
                    optical_tower: str | None, weights_dir):
    return rc.train_alignment_encoders(
        SyntheticWorld(WorldConfig(size=64), seed=seed), rc.small_budget(align_steps, seed=seed),
        lit=rc.small_budget(lit_steps, seed=seed), n_train=n_align_scenes, text_encoder=text_encoder,
        optical_encoder=W.load(optical_tower, weights_dir) if optical_tower else None)


def _train_backbone(seed: int, backbone_steps: int, n_backbone_scenes: int):
    return rc.pretrain_backbone(SyntheticWorld(WorldConfig(size=128), seed=seed),
                                pretrain_config(backbone_steps, seed=seed), n_scenes=n_backbone_scenes)


def load_suite_models(prior_source: str, context_source: str, artifacts: str | Path, *, encoders_dir: str = "",
                      backbone_dir: str = "", vita_dir: str = "", train_missing: bool = True, seed: int = 0,
                      optical_tower: str | None = "optical-text-standin", weights_dir=None, lit_steps: int = 60,
                      align_steps: int = 60, n_align_scenes: int = 256, backbone_steps: int = 30,
                      n_backbone_scenes: int = 64) -> SuiteModels:
    """The suite's models for notebook 05: notebook 01's encoders (``prior_source="text"``),
    notebook 02's backbone and notebook 03's VITA (``context_source="backbone"``).

    Each is loaded from its folder (empty: ``<artifacts>/01_sar_alignment``, ``02_qsacl_pretraining``,
    ``03_vita_sga``); when missing and ``train_missing``, notebooks 01/02 are re-run here on the
    small budget given (:func:`~rslab.recipes.coninfer.train_alignment_encoders`,
    :func:`~rslab.recipes.coninfer.pretrain_backbone`); otherwise the source falls back to the
    stand-in (``"weak"`` prior, ``"standin"`` context). VITA is never trained here: without it its
    context candidates are skipped. Prints what it did.
    """
    if prior_source not in PRIOR_SOURCES:
        raise ValueError(f"prior_source must be one of {PRIOR_SOURCES}, got {prior_source!r}")
    if not isinstance(context_source, str) or not context_source:
        raise ValueError(f"context_source must be 'backbone', 'standin' or a registry name such as 'dinov2-vitb14', "
                         f"got {context_source!r}")
    artifacts = Path(artifacts)
    encoders_dir = encoders_dir or str(artifacts / "01_sar_alignment")
    backbone_dir = backbone_dir or str(artifacts / "02_qsacl_pretraining")
    vita_dir = vita_dir or str(artifacts / "03_vita_sga")
    suite = SuiteModels(prior_source, context_source)
    if prior_source == "text":
        suite.text_encoder = MiniLMTextEncoder()
        note = ((f"{optical_tower} (frozen) + " if optical_tower else f"{lit_steps} LiT + ")
                + f"{align_steps} alignment steps, {n_align_scenes} scenes")
        train = partial(_train_encoders, seed, align_steps, lit_steps, n_align_scenes, suite.text_encoder,
                        optical_tower, weights_dir)
        suite.encoders, suite.prior_origin = rc.load_or_train(
            rc.load_alignment_encoders, encoders_dir, "01", train=train if train_missing else None, trained_note=note)
        if suite.encoders is None:
            suite.prior_source = "weak"
    if context_source == SUITE_CONTEXT:
        train = partial(_train_backbone, seed, backbone_steps, n_backbone_scenes)
        suite.backbone, suite.context_origin = rc.load_or_train(
            load_backbone, backbone_dir, "02", train=train if train_missing else None,
            trained_note=f"{backbone_steps} QSACL steps")
        if suite.backbone is None:
            suite.context_source = STANDIN_CONTEXT
    if suite.context_source == SUITE_CONTEXT:
        try:
            suite.vita, suite.vita_origin = rc.load_or_train(partial(rc.load_vita, backbone_dir=backbone_dir),
                                                             vita_dir, "03")
        except (RuntimeError, ValueError, KeyError, TypeError) as err:   # saved by an incompatible notebook-03 version
            print("notebook 03 VITA could not be loaded:", err)
            suite.vita = None
        if suite.vita is None:
            suite.vita_origin = "absent"
            print("notebook 03 VITA absent: its context candidates are skipped (fall back to the other suite models)")
    return suite


# --------------------------------------------------------------------------------------------
# every prior and context on one patch grid
# --------------------------------------------------------------------------------------------
@dataclass
class SceneBranches:
    """Every prior and every context feature set of notebook 05, for scenes of one world.

    Built by :func:`build_branches`. ``grid``: the (h, w) patch grid of a scene; ``contexts_here``:
    the suite candidates whose models are present (:func:`rslab.recipes.coninfer.available_contexts`).
    """

    suite: SuiteModels
    patch: int
    grid: tuple[int, int]
    gsd: float
    prior_model: ci.PatchClassifier
    context_model: ci.PatchClassifier
    contexts_here: list[str]
    modalities: list[str]
    class_embeddings: torch.Tensor | None = None
    maskclip: object | None = None
    maskclip_names: list[str] = field(default_factory=list)
    dino: torch.nn.Module | None = None
    context_size: int = 448
    seed: int = 0
    stand_in: dict = field(default_factory=dict)   # the stand-ins' training data: scenes, lookup tables, classes

    @property
    def prior_source(self) -> str:
        """This run's prior (:attr:`SuiteModels.prior_source`)."""
        return self.suite.prior_source

    @property
    def context_source(self) -> str:
        """This run's context source (:attr:`SuiteModels.context_source`)."""
        return self.suite.context_source

    @property
    def registry_context(self) -> bool:
        """True when the context is a registry ViT (DINOv2, full profile), not the suite or the stand-in."""
        return self.context_source not in (SUITE_CONTEXT, STANDIN_CONTEXT)

    def maps(self, scenes, optical: torch.Tensor, sar_db: torch.Tensor
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(scores, contexts)`` of a batch of scenes, every map on :attr:`grid`.

        ``scores``: prior name -> (B, K, h, w) log-probabilities at T = 1 (the calibration on
        validation scenes sets each prior's temperature); ``"weak"`` always, ``"text"`` /
        ``"text_sar"`` with notebook 01's encoders, ``"maskclip_star"`` in the full profile.
        ``contexts``: name -> (B, D, h, w) features; ``"standin"`` always, the suite candidates and
        ``"text_tokens"`` when their models are present, the DINOv2 tokens in the full profile.
        ``optical`` / ``sar_db``: :func:`stack_scenes` of ``scenes``.
        """
        scenes = _check_scenes(scenes)
        if optical.shape[0] != len(scenes) or sar_db.shape[0] != len(scenes):
            raise ValueError(f"optical {tuple(optical.shape)} and sar_db {tuple(sar_db.shape)} must hold the "
                             f"{len(scenes)} scenes (stack_scenes(scenes))")
        encoders = self.suite.encoders
        scores = {"weak": self.prior_model.map(colour_descriptors(scenes, self.patch)).clamp_min(1e-12).log()}
        ctx = {STANDIN_CONTEXT: self.context_model.map(scene_descriptors(scenes, self.patch), what="features")}
        keys = list(self.contexts_here)
        if encoders is not None:
            for name, m, x in (("text", "optical", optical), ("text_sar", "sar", sar_db)):
                scores[name] = rc.text_prior_maps(encoders[m], x, self.class_embeddings, m,
                                                  temperature=1.0).clamp_min(1e-12).log()
            if "optical" in self.modalities:   # with the candidates: build_contexts runs the encoder once
                keys.insert(0, "text_tokens")
            else:
                ctx["text_tokens"] = rc.encoder_token_maps(encoders["optical"], optical)
        if keys:
            ctx.update(rc.build_contexts(keys, {"optical": optical, "sar": normalize_sar(sar_db)}, self.grid,
                                         **self.suite.context_models, modalities=self.modalities, gsd=self.gsd))
        if self.prior_source == "maskclip_star":
            scores["maskclip_star"] = torch.cat([self.maskclip.class_probs(optical[i:i + 8, :3], self.maskclip_names)
                                                 for i in range(0, len(optical), 8)]).clamp_min(1e-12).log()
        if self.registry_context:
            ctx[self.context_source] = rc.vit_token_maps(self.dino, optical[:, :3], size=self.context_size)
        return rc.to_grid(scores, self.grid), rc.to_grid(ctx, self.grid)

    # ---- the same branches on the tiles of a large scene (Sec. 3.6) ----
    def tile_prior(self, tiles: torch.Tensor, temperatures: dict[str, float], n_optical: int) -> torch.Tensor:
        """(T, K, h, w) prior probabilities of (T, C, tile, tile) tiles (optical channels first, then
        normalised SAR), at the calibrated ``temperatures`` (:class:`ValidationChoice`)."""
        if self.prior_source not in temperatures:
            raise ValueError(f"temperatures has no entry for the prior {self.prior_source!r}: {sorted(temperatures)}")
        tile_grid = (tiles.shape[-2] // self.patch, tiles.shape[-1] // self.patch)
        if self.prior_source == "text":
            return rc.text_prior_maps(self.suite.encoders["optical"], tiles[:, :n_optical], self.class_embeddings,
                                      "optical", temperatures["text"])
        if self.prior_source == "maskclip_star":   # MaskCLIP* per tile, on the tile's patch grid, at its calibrated T
            logp = self.maskclip.class_probs(tiles[:, :3], self.maskclip_names).clamp_min(1e-12).log()
            return torch.softmax(rc.to_grid({"p": logp}, tile_grid)["p"] / temperatures["maskclip_star"], 1)
        colour = torch.stack([ci.patch_statistics(t[:n_optical], self.patch, scales=(1,))[:n_optical] for t in tiles])
        return torch.softmax(self.prior_model.map(colour).clamp_min(1e-12).log() / temperatures["weak"], 1)

    def tile_features(self, tiles: torch.Tensor, context_key: str, n_optical: int) -> torch.Tensor:
        """(T, D, h, w) context features ``context_key`` of (T, C, tile, tile) tiles."""
        tile_grid = (tiles.shape[-2] // self.patch, tiles.shape[-1] // self.patch)
        if self.registry_context:   # DINOv2 tokens of each tile
            return rc.to_grid({"c": rc.vit_token_maps(self.dino, tiles[:, :3], size=self.context_size)},
                              tile_grid)["c"]
        if context_key in self.contexts_here:
            parts = {"optical": tiles[:, :n_optical], "sar": tiles[:, n_optical:]}   # SAR already normalised
            return rc.build_contexts([context_key], parts, tile_grid, **self.suite.context_models,
                                     modalities=self.modalities, gsd=self.gsd)[context_key]
        stats = torch.stack([torch.cat([ci.patch_statistics(t[:n_optical], self.patch),
                                        ci.patch_statistics(t[n_optical:], self.patch)]) for t in tiles])
        return self.context_model.map(stats, what="features")

    def refine_large_scene(self, scene, tile: int, config: ci.ConInferConfig, temperatures: dict[str, float],
                           context_key: str, batch_tiles: int = 4) -> ci.SceneResult:
        """ConInfer on a large scene (Fig. 2): both branches per ``tile``, one mixture over every tile's
        patches, stitched back (:func:`rslab.models.coninfer.refine_scene`)."""
        if tile % self.patch:
            raise ValueError(f"tile={tile} must be a multiple of patch={self.patch}")
        image = torch.cat([torch.from_numpy(scene.optical),
                           torch.from_numpy(normalize_sar(scene.sar).astype(np.float32))])
        n_opt = scene.optical.shape[0]
        return ci.refine_scene(partial(self.tile_prior, temperatures=temperatures, n_optical=n_opt),
                               partial(self.tile_features, context_key=context_key, n_optical=n_opt),
                               image, tile=tile, config=config, batch_tiles=batch_tiles)

    # ---- SAR only ----
    def sar_branches(self, scenes, sar_db: torch.Tensor, scores: dict[str, torch.Tensor], choice: ValidationChoice,
                     context_key: str) -> tuple[torch.Tensor, str, torch.Tensor, str]:
        """``(prior, prior_source, features, context_source)`` of ``scenes`` from SAR alone.

        The prior: notebook 01's aligned SAR encoder read against the class prompts (``"text_sar"``
        of ``scores``, at its calibrated temperature), else a weak linear classifier on the mean
        VV/VH. The context: the SAR path of ``context_key`` when it is a suite context, else the
        stand-in encoder trained on SAR statistics (both stand-ins on the scenes and labels of the
        optical ones). ``scenes`` / ``sar_db``: the scenes and their :func:`stack_scenes` SAR.
        """
        if len(_check_scenes(scenes)) != sar_db.shape[0]:
            raise ValueError(f"sar_db {tuple(sar_db.shape)} must hold the {len(scenes)} scenes (stack_scenes)")
        s = self.stand_in
        if self.suite.encoders is not None:
            prior, prior_source = choice.prior(scores, "text_sar"), "text_sar"
        else:
            model = fit_patch_classifier(flatten_patches(sar_mean_descriptors(s["prior_scenes"], self.patch)),
                                         patch_targets(s["prior_scenes"], s["level_lut"], s["num_classes"], self.patch),
                                         s["num_classes"], steps=200, seed=self.seed)
            prior, prior_source = model.map(sar_mean_descriptors(scenes, self.patch)), "weak"
        if context_key in self.contexts_here and context_key != "text_tokens":
            feats = rc.build_contexts([context_key], {"sar": normalize_sar(sar_db)}, self.grid,
                                      **self.suite.context_models, modalities=["sar"], gsd=self.gsd)[context_key]
            return prior, prior_source, feats, "sar:" + context_key
        model = fit_patch_classifier(
            flatten_patches(scene_descriptors(s["context_scenes"], self.patch, sar_only=True)),
            patch_targets(s["context_scenes"], s["leaf_lut"], s["num_leaves"], self.patch),
            s["num_leaves"], hidden=64, steps=300, seed=self.seed)
        return prior, prior_source, model.map(scene_descriptors(scenes, self.patch, sar_only=True),
                                              what="features"), STANDIN_CONTEXT


def build_branches(world, level: int, patch: int, suite: SuiteModels, prior_scenes: Sequence, context_scenes: Sequence,
                   *, context_options: Sequence[str], context_modalities: Sequence[str] = ("optical", "sar"),
                   seed: int = 0, device="cpu", clip_name: str = "clip-vit-b16-openai", clip_input_size: int = 448,
                   context_size: int = 448, weights_dir=None, allow_download: bool = False) -> SceneBranches:
    """Everything :class:`SceneBranches` needs, in notebook 05's order.

    Trains the two stand-ins: the weak prior (a linear classifier on patch colour, ``prior_scenes``
    of one style, labels at ``level``, 200 steps) and the stand-in context encoder (an MLP with 64
    hidden units on patch statistics, ``context_scenes``, leaf labels, 300 steps); embeds the class
    prompts of the text prior (training synonyms); loads MaskCLIP* (``clip_name``) and the DINOv2
    context (``suite.context_source`` as a registry name) when the full profile asks for them; moves
    the suite's models to ``device``.
    """
    if patch < 1 or world.config.size % patch:
        raise ValueError(f"patch={patch} must be >= 1 and divide the scene size {world.config.size}")
    tree = world.tree
    class_names = tree.names(level)
    k, n_leaves = len(class_names), tree.num_classes()
    lut, leaf_lut = tree.level_lut(level), tree.level_lut(tree.depth)
    prior_scenes, context_scenes = _check_scenes(prior_scenes, "prior_scenes"), _check_scenes(context_scenes,
                                                                                                "context_scenes")
    prior_model = fit_patch_classifier(flatten_patches(colour_descriptors(prior_scenes, patch)),
                                       patch_targets(prior_scenes, lut, k, patch), k, steps=200, seed=seed)
    context_model = fit_patch_classifier(flatten_patches(scene_descriptors(context_scenes, patch)),
                                         patch_targets(context_scenes, leaf_lut, n_leaves, patch),
                                         n_leaves, hidden=64, steps=300, seed=seed)
    class_emb = None
    if suite.encoders is not None:
        class_emb = suite.text_encoder.prompt_embeddings([tree.synonyms(n, "train") for n in class_names])
    # official foundation models by registry name (rslab.weights): one error lists every missing file
    registry_context = suite.context_source not in (SUITE_CONTEXT, STANDIN_CONTEXT)
    official = [n for n, used in ((clip_name, suite.prior_source == "maskclip_star"),
                                  (suite.context_source, registry_context)) if used]
    if official:
        print("official weights:", {n: str(p) for n, p in W.require(official, weights_dir, allow_download).items()})
    maskclip_names = [", ".join([n] + tree.synonyms(n)) for n in class_names]
    seg = dino = None
    if suite.prior_source == "maskclip_star":
        clip = W.load(clip_name, weights_dir, device=device)   # OpenAI ViT-B/16 with QuickGELU, as trained
        seg = MaskClipSegmenter(clip, config=MaskClipConfig(input_size=clip_input_size))
    if registry_context:   # a DINOv2 registry entry (full profile)
        dino = W.load(suite.context_source, weights_dir, device=device, num_classes=0, dynamic_img_size=True)
    for m in (suite.encoders or {}).values():    # the suite models run where the foundation models do
        m.to(device)
    for m in (suite.backbone, suite.vita):
        if m is not None:
            m.to(device)
    side = world.config.size // patch
    return SceneBranches(suite=suite, patch=patch, grid=(side, side), gsd=world.config.gsd_m,
                         prior_model=prior_model, context_model=context_model,
                         contexts_here=rc.available_contexts(context_options, **suite.context_models),
                         modalities=list(context_modalities), class_embeddings=class_emb, maskclip=seg,
                         maskclip_names=maskclip_names, dino=dino, context_size=context_size, seed=seed,
                         stand_in=dict(prior_scenes=prior_scenes, context_scenes=context_scenes, level_lut=lut,
                                       num_classes=k, leaf_lut=leaf_lut, num_leaves=n_leaves))
