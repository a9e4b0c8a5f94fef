"""ConInfer on real imagery (notebook 05): the shipped real samples and the paper's benchmarks.

* :func:`real_sample_scores`: the LoveDA crops and the DeepGlobe scene of ``shared/real_samples``
  (when present). No CLIP weights exist offline, so the prior is a *weak* linear classifier on
  patch colour trained on part of the labels of the same data (LoveDA: crop 0; DeepGlobe: the
  top-left quarter), scored on the rest; the context features are multi-scale patch statistics.
  It checks that ConInfer runs on real scenes; nothing more.
* :func:`check_benchmarks` / :func:`benchmark_scores`: the paper's evaluation (full profile),
  training-free: MaskCLIP* on the dataset's class names (Sec. 3.1, Eqs. 1-4) gives the prior,
  DINOv2 tokens the context (Sec. 3.2), ConInfer (Sec. 3.4) refines it; dataset-level mIoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rslab.data.catalog import open_dataset, require_datasets
from rslab.data.readers import DEEPGLOBE_CLASSES, ISPRS_CLASSES, LOVEDA_CLASSES, MMSegFolder, read_deepglobe
from rslab.metrics import SegmentationMeter, pixel_miou
from rslab.models import coninfer as ci
from rslab.recipes import coninfer as rc
from rslab.recipes.coninfer_branches import flatten_patches
from rslab.recipes.coninfer_fit import fit_patch_classifier

__all__ = ["real_sample_scores", "loveda_scores", "deepglobe_scores", "BENCHMARK_CLASSES", "check_benchmarks",
           "benchmark_scores"]

#: The benchmarks notebook 05 reads (under ``data_root``, :mod:`rslab.data.catalog`) and their classes.
BENCHMARK_CLASSES = {"loveda": LOVEDA_CLASSES, "potsdam": ISPRS_CLASSES, "vaihingen": ISPRS_CLASSES,
                     "deepglobe": DEEPGLOBE_CLASSES}


def _colour(image: torch.Tensor, patch: int) -> torch.Tensor:
    return ci.patch_statistics(image, patch, scales=(1,))


def loveda_scores(folder: str | Path, config: ci.ConInferConfig, patch: int = 16, seed: int = 0) -> dict[str, float]:
    """Weak prior trained on LoveDA crop 0, ConInfer on the other crops (one pool): their mIoU,
    ``{"loveda_prior", "loveda_joint"}``; empty when the folder holds fewer than 2 crops."""
    crops = list(MMSegFolder(Path(folder), split=None, encoding="loveda")) if Path(folder).is_dir() else []
    if len(crops) < 2:
        return {}
    k = len(LOVEDA_CLASSES)
    prior_model = fit_patch_classifier(flatten_patches(_colour(crops[0].optical[:3], patch)[:3][None]),
                                       ci.patch_labels(crops[0].labels, patch, k).flatten(), k, seed=seed)
    prior = prior_model.map(torch.stack([_colour(s.optical[:3], patch)[:3] for s in crops[1:]]))
    features = torch.stack([ci.patch_statistics(s.optical[:3], patch) for s in crops[1:]])
    z, _ = ci.refine_maps(prior, features, config)
    labels = np.stack([s.labels for s in crops[1:]])
    return {"loveda_prior": pixel_miou(prior, labels, k)[0], "loveda_joint": pixel_miou(z, labels, k)[0]}


def deepglobe_scores(folder: str | Path, config: ci.ConInferConfig, patch: int = 16, seed: int = 0,
                     tile: int = 512) -> dict[str, float]:
    """Weak prior trained on the top-left quarter of DeepGlobe scene 6399, ConInfer on the whole
    scene in ``tile`` px tiles (one mixture), scored outside that quarter:
    ``{"deepglobe_prior", "deepglobe_joint"}``; empty when the scene is absent."""
    folder = Path(folder)
    if not (folder / "6399_sat.jpg").is_file():
        return {}
    s = read_deepglobe(folder / "6399_sat.jpg", folder / "6399_mask.png")
    k = len(DEEPGLOBE_CLASSES)
    img = torch.from_numpy(s.optical[:3])
    q = img.shape[1] // 2
    prior_model = fit_patch_classifier(flatten_patches(_colour(img[:, :q, :q], patch)[None]),
                                       ci.patch_labels(s.labels[:q, :q], patch, k).flatten(), k, seed=seed)
    scene = ci.refine_scene(lambda t: prior_model.map(torch.stack([_colour(x, patch) for x in t])),
                            lambda t: torch.stack([ci.patch_statistics(x, patch) for x in t]),
                            img, tile=tile, config=config, batch_tiles=4)
    held = s.labels.copy()
    held[:q, :q] = 255  # evaluate outside the training quarter
    return {"deepglobe_prior": pixel_miou(scene.prior_probs[None], held, k)[0],
            "deepglobe_joint": pixel_miou(scene.probs[None], held, k)[0]}


def real_sample_scores(root: str | Path, n_iter: int = 10, seed: int = 0, patch: int = 16) -> dict[str, float]:
    """:func:`loveda_scores` and :func:`deepglobe_scores` on the real samples under ``root``
    (``rslab.data.readers.real_samples_dir()``), ConInfer in its default (reference) mode with
    ``n_iter`` iterations and standardised features; the keys of what is present."""
    if n_iter < 1 or patch < 1:
        raise ValueError(f"n_iter and patch must be >= 1, got {n_iter} and {patch}")
    root = Path(root)
    config = ci.ConInferConfig(n_iter=n_iter, standardize=True)
    return {**loveda_scores(root / "loveda", config, patch, seed),
            **deepglobe_scores(root / "deepglobe_landcover", config, patch, seed)}


def check_benchmarks(benchmarks, prior_source: str, context_source: str, data_root=None) -> None:
    """Fail early, with one message, on a benchmark without a reader, on branches that are not the
    paper's (MaskCLIP* prior and a registry ViT context) or on a dataset missing under ``data_root``."""
    unknown = [b for b in benchmarks if b not in BENCHMARK_CLASSES]
    if unknown:
        raise ValueError(f"benchmarks: no reader for {unknown}; choose from {sorted(BENCHMARK_CLASSES)}")
    if benchmarks and (prior_source != "maskclip_star" or context_source in ("backbone", "standin")):
        raise ValueError("benchmarks need prior_source='maskclip_star' and a DINOv2 context_source "
                         "(the paper's branches)")
    if benchmarks:
        require_datasets(list(benchmarks), data_root)   # one error naming every missing dataset and its layout


def benchmark_scores(name: str, data_root, segmenter, vit, prior_temperature: float, config: ci.ConInferConfig,
                     n_images: int = 50, clip_input_size: int = 448, context_size: int = 448,
                     pool_images: int = 50) -> dict:
    """The paper's evaluation on benchmark ``name``: its first ``n_images`` evaluation images, the
    MaskCLIP* prior (``segmenter``, class names of :data:`BENCHMARK_CLASSES`, softmax at
    ``prior_temperature``) and ``vit`` tokens as context on the CLIP patch grid, ConInfer with
    ``config`` on pools of ``pool_images``; each prediction upsampled to its image's label size.

    Returns ``{"prior": mIoU, "joint": mIoU, "n_images": n}`` (dataset-level mIoU).
    """
    if name not in BENCHMARK_CLASSES:
        raise ValueError(f"benchmark {name!r}: no reader; choose from {sorted(BENCHMARK_CLASSES)}")
    reader = open_dataset(name, data_root, None if name == "deepglobe" else "val")
    items = [reader[i] for i in range(min(int(n_images), len(reader)))]
    names = [str(c) for c in BENCHMARK_CLASSES[name]]
    k = len(names)
    grid = (max(1, clip_input_size // 16), max(1, clip_input_size // 16))
    labels, contexts, priors = [], [], []
    for it in items:   # one image at a time: real images differ in size
        rgb = torch.from_numpy(np.ascontiguousarray(it.optical[:3])).float()[None].clamp(0, 1)
        logp = segmenter.class_probs(rgb, names).clamp_min(1e-12).log()
        maps = rc.to_grid({"p": logp, "c": rc.vit_token_maps(vit, rgb, size=context_size)}, grid)
        priors.append(torch.softmax(maps["p"] / prior_temperature, 1))
        contexts.append(maps["c"])
        labels.append(np.asarray(it.labels))
    prior = torch.cat(priors)
    joint, _ = ci.refine_maps(prior, torch.cat(contexts), config, pool_images=pool_images)
    meters = {"prior": SegmentationMeter(k), "joint": SegmentationMeter(k)}   # dataset-level mIoU
    for i, lab in enumerate(labels):   # each prediction upsampled to its image's own label size
        for key, probs in (("prior", prior), ("joint", joint)):
            up = F.interpolate(probs[i:i + 1].float(), size=lab.shape, mode="bilinear", align_corners=False)
            meters[key].update(up.argmax(1)[0].numpy(), lab)
    return {"prior": float(meters["prior"].compute()["miou"]), "joint": float(meters["joint"].compute()["miou"]),
            "n_images": len(items)}
