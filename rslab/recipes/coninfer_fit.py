"""ConInfer's loops: the stand-in patch classifiers and the choice of settings on validation scenes.

The method itself (the joint EM of Sec. 3.4, tiling, the stand-in descriptors and the
:class:`~rslab.models.coninfer.PatchClassifier` module) lives in :mod:`rslab.models.coninfer`;
this recipe holds what trains, selects or scores around it (notebook 05):

* :func:`fit_patch_classifier`: trains a :class:`PatchClassifier` (the default profile's weak
  prior, or an MLP whose hidden activations serve as context features) with AdamW.
* :func:`fit_temperature`: calibrates the prior's softmax temperature (Eq. 4's logit scale) by
  NLL on labelled validation patches.
* :func:`grid_search` / :func:`best_by_mode`: score every (context features, mode, consensus
  temperature T) on validation scenes and keep the best per mode. Neither choice is the paper's
  (it fixes both); notebook 05 says so.
* :func:`choose_on_validation`: notebook 05's whole validation protocol (calibrate the priors,
  search the grid, choose the context and mode, and the fallback without VITA).

The classifier trains on :class:`rslab.train.Trainer` in float32, through
:func:`rslab.train.fit_preserving_rng`, so fitting it leaves the caller's random draws unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from rslab.metrics import pixel_miou
from rslab.models import coninfer as ci
from rslab.models.coninfer import MODES, ConInferConfig, PatchClassifier, as_tensor, refine_maps
from rslab.train import TrainConfig, fit_preserving_rng

__all__ = ["fit_patch_classifier", "fit_temperature", "grid_search", "best_by_mode", "choose_on_validation",
           "ValidationChoice", "PRIOR_TEMPERATURES"]


def fit_patch_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, hidden: int = 0,
                         steps: int = 300, lr: float = 3e-3, batch: int = 1024, seed: int = 0,
                         ignore_index: int = 255) -> PatchClassifier:
    """Train a :class:`PatchClassifier` on (N, F) descriptors and (N,) labels: ``steps`` AdamW steps
    (constant ``lr``, weight decay 1e-4) on random minibatches of ``batch`` patches, on the engine
    (:func:`rslab.train.fit_preserving_rng`: seeded by ``seed``, the caller's generators untouched)."""
    x, y = as_tensor(x, "x").float(), as_tensor(y, "y").long()
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need x (N, F) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    keep = y != ignore_index
    x, y = x[keep], y[keep]
    if len(y) == 0:
        raise ValueError("no labelled patches to train on (all ignore_index)")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):   # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = PatchClassifier(x.shape[1], num_classes, hidden)
    model.mean.copy_(x.mean(0))
    # population std: one labelled patch gives std 0 (-> the floor), not the NaN of the unbiased form
    model.std.copy_(x.std(0, unbiased=False).clamp_min(1e-6))

    def batches(epoch: int):   # one epoch = an endless stream of random minibatches; the engine takes `steps`
        while True:
            idx = torch.randint(0, len(y), (min(batch, len(y)),), generator=gen)
            yield x[idx], y[idx]

    def loss_fn(m: PatchClassifier, xy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(m(xy[0]), xy[1])

    config = TrainConfig(max_steps=steps, lr=lr, weight_decay=1e-4, schedule="constant", mixed_precision="no",
                         seed=seed, log_every=steps, progress=False, cpu=x.device.type == "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    fit_preserving_rng(model, loss_fn, batches, config, optimizer=optimizer)
    return model.eval()


def fit_temperature(scores, labels, grid: Sequence[float] = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5),
                    ignore_index: int = 255) -> tuple[float, dict[float, float]]:
    """Calibrate a prior ``softmax(scores / T)`` (Eq. 4 with ``1 / T`` as the logit scale).

    Picks, from ``grid``, the ``T`` that minimises the mean negative log-likelihood of the true
    class over labelled validation patches (temperature scaling, Guo et al. 2017). ConInfer
    multiplies the prior into the consensus (Eq. 12), so an over-confident prior (T too small)
    leaves the context no room, and an under-confident one lets poor clusters overrule it.

    Args:
        scores: (N, K) per-patch class scores (cosines), or (B, K, h, w) maps.
        labels: (N,) class indices, or (B, h, w) patch labels; ``ignore_index`` is skipped.
    Returns ``(best T, {T: mean NLL})``.
    """
    s = as_tensor(scores, "scores").float()
    y = as_tensor(labels, "labels").long()
    if s.ndim == 4:
        if y.ndim != 3 or y.shape != (s.shape[0], *s.shape[2:]):
            raise ValueError(f"labels must be (B, h, w) = {(s.shape[0], *s.shape[2:])} for (B, K, h, w) scores, "
                             f"got {tuple(y.shape)}")
        s, y = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1]), y.reshape(-1)
    if s.ndim != 2 or y.shape != (s.shape[0],):
        raise ValueError(f"need scores (N, K) and labels (N,), got {tuple(s.shape)} and {tuple(y.shape)}")
    if not len(grid) or any(not t > 0 for t in grid):
        raise ValueError(f"grid must be a non-empty list of temperatures > 0, got {list(grid)}")
    keep = y != ignore_index
    if not keep.any():
        raise ValueError("no labelled patch to calibrate on (all ignore_index)")
    s, y = s[keep], y[keep]
    if (y < 0).any() or (y >= s.shape[1]).any():
        raise ValueError(f"labels must be in [0, {s.shape[1]}) or {ignore_index}")
    nll = {float(t): float(F.cross_entropy(s / t, y)) for t in grid}
    return min(nll, key=nll.get), nll


def grid_search(prior_maps: torch.Tensor, feature_sets: dict[str, torch.Tensor], labels, num_classes: int,
                modes: Sequence[str] = ("reference", "paper"), temperatures: Sequence[float] = (2, 5, 10, 20, 50),
                n_iter: int = 10, pool_images: int = 16, standardize: bool = True,
                top_k_init: int = 8) -> list[dict]:
    """Score every (context features, mode, consensus temperature T) on labelled scenes.

    Meant for **validation** scenes: pick the settings here, then run them once on the test
    scenes. The posterior sharpness of Eq. 11 grows with the feature dimension D (the
    log-likelihood is a sum over D dimensions), so the public code's T = 50 (DINOv3 ViT-L,
    D = 1024) is far too soft for 64-d features; T has to be chosen for the features at hand.

    Args:
        prior_maps: (B, K, h, w) prior probabilities of the validation scenes.
        feature_sets: name -> (B, D, h, w) candidate context features of the same scenes.
        labels: (B, H, W) pixel labels (:func:`rslab.metrics.pixel_miou`).
    Returns one dict per setting: features, mode, temperature, miou, prior_miou, gain.
    """
    if not feature_sets:
        raise ValueError("feature_sets is empty: pass at least one name -> (B, D, h, w) map")
    for name, f in feature_sets.items():
        if f.ndim != 4 or f.shape[0] != prior_maps.shape[0] or f.shape[2:] != prior_maps.shape[2:]:
            raise ValueError(f"feature set {name!r} {tuple(f.shape)} must share batch and grid with the prior "
                             f"{tuple(prior_maps.shape)}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {MODES}")
    base = pixel_miou(prior_maps, labels, num_classes)[0]
    rows = []
    for name, f in feature_sets.items():
        for mode in modes:
            for t in temperatures:
                cfg = ConInferConfig(mode=mode, n_iter=n_iter, temperature=float(t), top_k_init=top_k_init,
                                     standardize=standardize)
                z, _ = refine_maps(prior_maps, f, cfg, pool_images=pool_images)
                m = pixel_miou(z, labels, num_classes)[0]
                rows.append(dict(features=name, mode=mode, temperature=float(t), miou=m, prior_miou=base,
                                 gain=m - base))
    return rows


def best_by_mode(rows: list[dict]) -> dict[str, dict]:
    """The highest-mIoU row of :func:`grid_search` for each mode (first one on ties)."""
    if not rows:
        raise ValueError("no rows: run grid_search first")
    best: dict[str, dict] = {}
    for r in rows:
        if r["mode"] not in best or r["miou"] > best[r["mode"]]["miou"]:
            best[r["mode"]] = r
    return best


#: Softmax temperatures tried when a prior is calibrated on the validation scenes (:func:`fit_temperature`).
PRIOR_TEMPERATURES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


@dataclass
class ValidationChoice:
    """Everything notebook 05 chooses on its validation scenes (never on the test scenes).

    ``prior_temperatures``: per prior, its softmax temperature; ``rows``: :func:`grid_search`'s rows
    (prior mIoU included); ``tau_of``: per context, the best consensus temperature per mode;
    ``best``: the chosen row (context, mode, T); ``fallback``: the row chosen the same way among the
    candidates without VITA (None when that leaves no candidate or removes none).
    """

    prior_temperatures: dict[str, float]
    rows: list[dict]
    tau_of: dict[str, dict[str, float]]
    best: dict
    fallback: dict | None

    def prior(self, scores: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The prior ``name``: ``softmax(scores[name] / T_name)`` over classes (dim 1)."""
        if name not in self.prior_temperatures:
            raise ValueError(f"no calibrated temperature for prior {name!r}; have {sorted(self.prior_temperatures)}")
        return torch.softmax(scores[name] / self.prior_temperatures[name], dim=1)

    def table(self, contexts: Sequence[str], temperatures: Sequence[float]) -> str:
        """Validation mIoU (%) per context and mode (rows) and consensus temperature (columns)."""
        lines = [f"{'context':>24} {'mode':>10} " + " ".join(f"{'T ' + str(t):>7}" for t in temperatures)]
        for name in contexts:
            for mode in ("reference", "paper"):
                vals = [r["miou"] for r in self.rows if r["features"] == name and r["mode"] == mode]
                lines.append(f"{name:>24} {mode:>10} " + " ".join(f"{100 * v:7.1f}" for v in vals))
        return "\n".join(lines)


def choose_on_validation(scores: dict[str, torch.Tensor], contexts: dict[str, torch.Tensor], labels, num_classes: int,
                         patch: int, prior_source: str, candidates: Sequence[str], compared: Sequence[str] = (),
                         prior_temperature: float | None = None, joint_mode: str = "auto",
                         temperatures: Sequence[float] = (2, 5, 10, 20, 50), n_iter: int = 10,
                         pool_images: int = 16) -> ValidationChoice:
    """Notebook 05's protocol on labelled validation scenes: calibrate every prior's temperature
    (:func:`fit_temperature` by NLL, unless ``prior_temperature`` fixes it), score every context of
    ``candidates`` and ``compared`` with :func:`grid_search`, and choose the best candidate row
    (``joint_mode`` "auto": either mode; else that mode only). ``compared`` contexts get their own
    temperatures for the comparison but are never chosen.

    ``scores``: prior name -> (B, K, h, w) log-probabilities at T = 1; ``contexts``: name ->
    (B, D, h, w) features; ``labels``: (B, H, W) class ids at the evaluated level; ``patch``: the
    side of the patch grid's cells in pixels.
    """
    if prior_source not in scores:
        raise ValueError(f"prior_source {prior_source!r} is not among the priors built: {sorted(scores)}")
    missing = [k for k in [*candidates, *compared] if k not in contexts]
    if not candidates or missing:
        raise ValueError(f"need at least one candidate context, all present in contexts; missing: {missing}")
    if joint_mode not in ("auto", "reference", "paper"):
        raise ValueError(f"joint_mode must be 'auto', 'reference' or 'paper', got {joint_mode!r}")
    patch_labels = torch.stack([ci.patch_labels(lab, patch, num_classes) for lab in labels])
    prior_t = {name: float(prior_temperature) if prior_temperature
               else fit_temperature(sc, patch_labels, PRIOR_TEMPERATURES)[0] for name, sc in scores.items()}
    prior_maps = torch.softmax(scores[prior_source] / prior_t[prior_source], dim=1)
    names = {**dict.fromkeys(candidates), **dict.fromkeys(compared)}
    rows = grid_search(prior_maps, {k: contexts[k] for k in names}, labels, num_classes,
                       temperatures=temperatures, n_iter=n_iter, pool_images=pool_images)

    def choose(among: Sequence[str]) -> dict:
        return max([r for r in rows if r["features"] in among and (joint_mode == "auto" or r["mode"] == joint_mode)],
                   key=lambda r: r["miou"])

    tau_of = {name: {m: r["temperature"] for m, r in best_by_mode([r for r in rows if r["features"] == name]).items()}
              for name in names}
    no_vita = [k for k in candidates if "vita" not in k]
    fallback = choose(no_vita) if no_vita and len(no_vita) < len(candidates) else None
    return ValidationChoice(prior_t, rows, tau_of, choose(candidates), fallback)
