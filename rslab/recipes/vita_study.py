"""The SkySense-VITA study of notebook 03 around :mod:`rslab.recipes.vita`: its data, its model
factory, the runs that retrain the model (other seeds, the ablations), the one-shot transfer to
real LoveDA tiles and the flat metric keys of its ``results.json``.

- :func:`vita_data`: training pool, held-out targets and prompts for ``"synthetic"`` or ``"loveda"``.
- :func:`text_encoder_for`: the frozen text encoder (offline MiniLM, or a registry CLIP text tower).
- :func:`build_vita`: a seeded :class:`~rslab.models.vita.VITA` with the conv encoder or notebook 02's
  QSACL backbone; ``functools.partial`` it once and pass it to the runs below.
- :func:`train_fresh`, :func:`name_transfer_over_seeds`, :func:`run_ablations` (paper Sec. 4.4's
  ablations: naive fusion, w/o decoupled training, w/o SGA).
- :func:`prepare_real`, :func:`oneshot_transfer`, :func:`loveda_oneshot`.
- :func:`save_vita`, :func:`flat_metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from rslab.data.catalog import open_dataset
from rslab.data.episodes import ScenePool
from rslab.data.readers import MMSegFolder
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.data.tree import load_tree
from rslab.io import write_atomically, write_text_atomically
from rslab.metrics import mean_iou
from rslab.models import vita as V
from rslab.models.backbone import BACKBONE_WEIGHTS_FILE, load_backbone
from rslab.models.encoders import MiniLMTextEncoder
from rslab.recipes import vita as R
from rslab.recipes.alignment import clip_from_registry

__all__ = ["ABLATIONS", "ENCODER_SOURCES", "QSACL_WEIGHTS", "VITAData", "build_vita", "flat_metrics", "loveda_oneshot",
           "name_transfer_over_seeds", "oneshot_transfer", "prepare_real", "run_ablations", "save_vita",
           "text_encoder_for", "train_fresh", "vita_data"]

#: The ablation runs of notebook 03: name -> (VITAConfig overrides, VITARecipe overrides).
ABLATIONS: dict[str, tuple[dict, dict]] = {
    "reference": ({}, {}),
    "naive_fusion": ({"fusion": "naive"}, {}),
    "fused_only": ({}, {"train_modes": ("F",)}),
    "fine_only": ({}, {"level_mode": "fine"}),
    "hard_switch": ({}, {"level_mode": "hard"}),
}
ENCODER_SOURCES = ("conv", "qsacl", "auto")
QSACL_WEIGHTS = BACKBONE_WEIGHTS_FILE  # the file notebook 02 saves its backbone as (save_backbone)


class VITAData(NamedTuple):
    """What a VITA study trains and evaluates on: the class ``tree``, the training ``train_pool``,
    held-out ``eval_targets`` and the ``eval_prompts`` prompting them, the ``modalities`` evaluated
    and the model's ``in_chans`` (``None``: the preset's, i.e. the synthetic world's)."""

    tree: object
    train_pool: object
    eval_targets: object
    eval_prompts: object
    modalities: tuple[str, ...]
    in_chans: tuple | None


def vita_data(dataset: str, *, size: int, n_train: int, n_eval: int, seed: int = 0, data_root=None) -> VITAData:
    """The pools of notebook 03.

    ``"synthetic"``: scenes ``0..n_train-1`` of the world of ``seed`` for training, ``n_eval`` unseen
    scenes as targets and ``n_eval`` other unseen scenes for their prompts (optical and SAR).
    ``"loveda"``: LoveDA's train split (at most ``n_train`` scenes) for training, its val split halved
    into targets and prompts (at most ``n_eval`` each), optical only, read from ``data_root``."""
    if dataset == "synthetic":
        world = SyntheticWorld(WorldConfig(size=size), seed=seed)
        return VITAData(world.tree, ScenePool(world, range(n_train)),
                        ScenePool(world, range(100_000, 100_000 + n_eval)),   # never seen in training
                        ScenePool(world, range(200_000, 200_000 + n_eval)),   # prompts for them, also unseen
                        ("optical", "sar"), None)
    if dataset == "loveda":
        tree = load_tree("loveda")
        train_reader, val_reader = open_dataset(dataset, data_root, "train"), open_dataset(dataset, data_root, "val")
        n_val = min(n_eval, len(val_reader) // 2)
        train_pool = R.CatalogScenePool(train_reader, tree, size, range(min(n_train, len(train_reader))))
        return VITAData(tree, train_pool, R.CatalogScenePool(val_reader, tree, size, range(n_val)),
                        R.CatalogScenePool(val_reader, tree, size, range(n_val, 2 * n_val)),
                        ("optical",),  # LoveDA has no SAR
                        (("optical", train_pool.channels), ("sar", 2)))
    raise ValueError(f"dataset must be 'synthetic' or 'loveda', got {dataset!r}")


def text_encoder_for(text_weights: str | None = None, weights_dir=None, device="cpu"):
    """The frozen text encoder: the offline MiniLM (``text_weights=None``) or the text tower of the
    registry's CLIP entry ``text_weights`` (e.g. ``"clip-vit-b16-openai"``) read from ``weights_dir``."""
    if text_weights is None:
        return MiniLMTextEncoder()
    if not isinstance(text_weights, str):
        raise ValueError(f"text_weights must be None or a registry name such as 'clip-vit-b16-openai', "
                         f"got {text_weights!r}")
    return clip_from_registry(text_weights, weights_dir, device)[1]


def build_vita(preset: str, text_dim: int, *, seed: int, encoder_source: str = "conv", qsacl_dir=None,
               in_chans: tuple | None = None, **overrides) -> V.VITA:
    """A fresh VITA of ``VITAConfig.<preset>`` whose text width is ``text_dim`` (the text encoder's:
    MiniLM 384, while the base preset assumes CLIP's 512), initialised after ``torch.manual_seed(seed)``.

    ``encoder_source``: ``"conv"`` (the conv pyramid, trained with the heads), ``"qsacl"`` (notebook
    02's backbone in ``qsacl_dir``, through :class:`~rslab.models.vita.BackboneAdapter`) or ``"auto"``
    (qsacl when its file is there). ``in_chans`` / ``overrides``: further ``VITAConfig`` fields."""
    if encoder_source not in ENCODER_SOURCES:
        raise ValueError(f"encoder_source must be 'conv', 'qsacl' or 'auto', got {encoder_source!r}")
    if not hasattr(V.VITAConfig, preset):
        raise ValueError(f"preset must name a VITAConfig preset (tiny, small, base), got {preset!r}")
    torch.manual_seed(seed)
    cfg = getattr(V.VITAConfig, preset)(**{"text_dim": text_dim, **({"in_chans": in_chans} if in_chans else {}),
                                           **overrides})
    source = encoder_source
    if source == "auto":
        source = "qsacl" if qsacl_dir is not None and (Path(qsacl_dir) / QSACL_WEIGHTS).is_file() else "conv"
    if source == "qsacl" and qsacl_dir is None:
        raise ValueError("encoder_source='qsacl' needs qsacl_dir, the folder of notebook 02's backbone")
    encoder = V.BackboneAdapter(load_backbone(qsacl_dir)) if source == "qsacl" else None
    return V.VITA(cfg, encoder=encoder)


def train_fresh(build_model: Callable[..., V.VITA], pool, text_encoder, recipe: R.VITARecipe, *,
                model_overrides: dict | None = None, device: str | None = None) -> V.VITA:
    """A new model from ``build_model(**model_overrides)`` trained quietly with ``recipe`` (history
    logged every fifth of the steps); the retraining behind the seed spread and the ablations."""
    if not callable(build_model):
        raise ValueError("build_model must be callable, e.g. functools.partial(build_vita, preset, dim, seed=0)")
    model = build_model(**(model_overrides or {}))
    R.train(model, pool, text_encoder, recipe, progress=False, log_every=max(1, recipe.max_steps // 5), device=device)
    return model


def name_transfer_over_seeds(build_model: Callable[..., V.VITA], pool, targets, prompts, text_encoder,
                             recipe: R.VITARecipe, seeds: Sequence[int], *, level: int, eval_seed: int = 0,
                             device: str | None = None) -> list[dict]:
    """:func:`rslab.recipes.vita.text_name_transfer` of models retrained with each of ``seeds`` (model
    initialisation and recipe seed), every one evaluated on the same episodes (``eval_seed``)."""
    out = []
    for s in seeds:
        model = train_fresh(build_model, pool, text_encoder, dataclasses.replace(recipe, seed=s),
                            model_overrides={"seed": s}, device=device)
        out.append(R.text_name_transfer(model, targets, prompts, text_encoder, level=level, seed=eval_seed))
    return out


def run_ablations(build_model: Callable[..., V.VITA], pool, targets, prompts, text_encoder, recipe: R.VITARecipe,
                  *, steps: int, level: int, runs: dict | None = None, device: str | None = None) -> dict:
    """The ablation study (paper Sec. 4.4): every run of ``runs`` (default :data:`ABLATIONS`) is the
    main ``recipe`` cut to ``steps`` with its overrides, on a fresh model with its config overrides,
    evaluated (optical, every tree level, seed ``recipe.seed``). Prints one line per run (``level``:
    the level shown in full). Returns ``{name: {level: {mode: miou}}}``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (the ablation budget), got {steps}")
    depth = targets.tree.depth
    if not 1 <= level <= depth:
        raise ValueError(f"level must be in 1..{depth} (the tree's levels), got {level}")
    out = {}
    for name, (model_overrides, recipe_overrides) in (ABLATIONS if runs is None else runs).items():
        t0 = time.time()
        rec = dataclasses.replace(recipe, max_steps=steps, **recipe_overrides)  # the main recipe, shorter
        model = train_fresh(build_model, pool, text_encoder, rec, model_overrides=model_overrides, device=device)
        out[name] = {lv: R.evaluate(model, targets, prompts, text_encoder, modality="optical", level=lv,
                                    seed=recipe.seed) for lv in range(1, depth + 1)}
        r = out[name][level]
        print(f"{name:12s} level {level}: V {r['V']:.3f}  T {r['T']:.3f}  F {r['F']:.3f}   "
              f"F per level: {[round(out[name][lv]['F'], 3) for lv in range(1, depth + 1)]}   "
              f"({time.time() - t0:.0f} s)")
    return out


def prepare_real(sample, optical_chans: int, side: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A real RGB sample as model input ``(1, C, side, side)`` (bilinear) and labels ``(side, side)``
    (nearest). With ``optical_chans == 4`` (the synthetic world's RGB+NIR model) the green band stands
    in for NIR (vegetation is bright in both); an RGB-trained model (3) takes RGB."""
    if optical_chans not in (3, 4):
        raise ValueError(f"optical_chans must be 3 (RGB) or 4 (RGB+NIR), got {optical_chans}")
    if sample.optical is None or sample.labels is None or sample.optical.shape[0] < 3:
        raise ValueError("sample needs an RGB optical image and labels (e.g. an MMSegFolder item)")
    rgb = torch.from_numpy(sample.optical[:3]).float()
    x = (torch.cat([rgb, rgb[1:2]]) if optical_chans == 4 else rgb)[None]
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    lab = torch.nn.functional.interpolate(torch.from_numpy(sample.labels)[None, None].float(), size=(side, side),
                                          mode="nearest")[0, 0].long()
    return x, lab


def _display(x: torch.Tensor) -> np.ndarray:
    return x[0, :3].permute(1, 2, 0).clamp(0, 1).numpy()


def oneshot_transfer(model: V.VITA, text_encoder, samples: Sequence, tree, *, side: int = 256,
                     name: str = "real"):
    """One-shot in-context segmentation of real images: ``samples[0]`` with its labels is the visual
    prompt of every class (text prompts: ``tree``'s leaf names), applied to ``samples[1:]`` in V, T
    and F modes; classes absent from the prompt image are not scored. Prints the mIoUs (``name``: the
    dataset's, for the line).

    Returns ``({mode: mean mIoU over the targets}, row)`` where ``row`` is the last target's fused
    prediction as a :func:`rslab.viz.show_gallery` row."""
    if len(samples) < 2:
        raise ValueError(f"samples needs a prompt image and at least one target, got {len(samples)}")
    optical_chans = dict(model.cfg.in_chans)["optical"]
    prompt_x, prompt_lab = prepare_real(samples[0], optical_chans, side)
    k = tree.num_classes(tree.depth)
    prompt_masks = torch.stack([prompt_lab == c for c in range(k)])[None]
    prompted = prompt_masks[0].flatten(1).any(1)  # classes absent from the prompt are not scored
    scores: dict[str, list] = {}
    for i in range(1, len(samples)):
        tx, tlab = prepare_real(samples[i], optical_chans, side)
        lab = R.ignore_unprompted(tlab, prompted)[None]
        for mode in V.MODES:
            pred = R.segment(model, text_encoder, tx, "optical", prompt_x, prompt_masks, tree.names(), mode)
            scores.setdefault(mode, []).append(mean_iou(pred, lab, k))
    miou = {m: float(np.mean(v)) for m, v in scores.items()}
    print(f"{name} one-shot (prompt image 0 -> images 1..{len(samples) - 1}) mIoU:",
          {m: round(v, 3) for m, v in miou.items()})
    row = {"image": _display(tx), "prompt": f"{name} image 0 + class names", "prompt_image": _display(prompt_x),
           "prompt_mask": prompt_lab.numpy(), "pred": pred[0].numpy(), "gt": lab[0].numpy()}
    return miou, row


def loveda_oneshot(model: V.VITA, text_encoder, root, *, side: int = 256):
    """:func:`oneshot_transfer` on the LoveDA tiles under ``root / "loveda"`` (the real samples; tree
    ``load_tree("loveda")``). Returns ``({}, None)``, saying so, when ``root`` is None or has none."""
    if root is None or not (Path(root) / "loveda").is_dir():
        print("LoveDA samples not found (real_samples_dir() is None or has no loveda/): skipping the real-data test.")
        return {}, None
    return oneshot_transfer(model, text_encoder, list(MMSegFolder(Path(root) / "loveda", encoding="loveda")),
                            load_tree("loveda"), side=side, name="LoveDA")


def save_vita(model: V.VITA, out, preset: str, encoder_source: str) -> tuple[Path, Path]:
    """Write ``vita_<preset>.safetensors`` (the state dict, on the CPU) and ``vita_config.json`` (the
    preset, the encoder source and every ``VITAConfig`` field) into folder ``out``; returns both paths."""
    from safetensors.torch import save_file

    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"out must be an existing folder (the run's artifacts), got {out}")
    weights, config = out / f"vita_{preset}.safetensors", out / "vita_config.json"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomically(weights, lambda tmp: save_file(state, str(tmp)))
    write_text_atomically(config, json.dumps({"preset": preset, "encoder_source": encoder_source,
                                              **dataclasses.asdict(model.cfg)}, indent=2))
    return weights, config


def flat_metrics(table: dict, unseen: dict, prompt_quality: dict, ablation: dict, real: dict) -> dict:
    """The per-level result keys of notebook 03, in order: ``miou_<modality>_<mode>_l<level>`` from
    ``table[(modality, level)][mode]``, ``miou_text_unseen_synonyms_l<level>``,
    ``miou_visual_prompt_<kind>``, ``ablation_<name>_<mode>_l<level>`` and ``loveda_oneshot_miou_<mode>``."""
    metrics = {}
    for (modality, level), r in table.items():
        for mode, v in r.items():
            metrics[f"miou_{modality}_{mode}_l{level}"] = v
    for level, v in unseen.items():
        metrics[f"miou_text_unseen_synonyms_l{level}"] = v
    for kind, v in prompt_quality.items():
        metrics[f"miou_visual_prompt_{kind}"] = v
    for name, per_level in ablation.items():
        for level, r in per_level.items():
            for mode, v in r.items():
                metrics[f"ablation_{name}_{mode}_l{level}"] = v
    for mode, v in real.items():
        metrics[f"loveda_oneshot_miou_{mode}"] = v
    return metrics
