"""ConInfer: context-aware inference for training-free open-vocabulary segmentation.

ConInfer (Chen et al., 2026, arXiv 2603.29271) refines any per-patch class prior ``p`` (from a
vision-language model, Sec. 3.1, Eqs. 1-4) with scene context: a Gaussian mixture over the
patch features of a vision foundation model (DINOv2/v3, Sec. 3.2, Eqs. 5-6), fitted *jointly*
with a per-patch consensus distribution ``z`` (Sec. 3.3, Eqs. 7-8):

    min_{z, mu, Sigma}  1/N sum_i  KL(z_i || p_i) + KL(z_i || q_i(mu, Sigma))        (Eq. 8)

where ``q_i`` is the mixture posterior of patch ``i`` (Eq. 6; uniform mixture weights). Sec. 3.4
optimises it by alternation: initialise the mixture from the prior (Eqs. 9-10), then repeat
E-step (posterior q, Eq. 11, :func:`e_step`) -> consensus update of z (Eq. 12,
:func:`consensus`) -> M-step with z as the responsibilities (Eqs. 13-14, :func:`m_step`). Sec. 3.6:
the final per-patch prediction is ``z``.

Modes (``ConInferConfig.mode``):

* ``"reference"``: what the public implementation (github.com/Dog-Yang/ConInfer, ``gmm.py``)
  computes: uniform weights; ONE diagonal variance shared by all components (so the log-det
  term cancels in every posterior); means renormalised to unit length after each M-step (the
  features are unit-normalised DINO tokens); tempered posterior ``q ∝ exp(loglik / T)``
  with ``T = 50``; consensus ``z ∝ p * exp(loglik / T) = p * q`` (the TransCLIP-style update);
  initial means from the ``top_k_init = 8`` highest-prior patches per class, weighted by the
  prior; initial variance ``1 / D``. It runs ``n_iter + 1`` z-updates around ``n_iter``
  M-steps, exactly like the public loop.
* ``"paper"``: Eq. 8 as written. The z-step is the exact minimiser of Eq. 7 for fixed q:
  setting the gradient of ``KL(z||p) + KL(z||q)`` (with the simplex constraint) to zero
  gives ``z ∝ sqrt(p * q)`` (the normalised geometric mean), not ``p * q``. Per-component
  diagonal covariances (Eq. 14) with their log-determinants, means not renormalised, and the
  untempered posterior of Eq. 6 (``T = 1`` by default; set ``temperature`` to temper it). In
  high-dimensional feature spaces the untempered posterior is nearly one-hot, so the prior acts
  mostly through the initialisation and on ambiguous patches; the public code's ``T = 50``
  keeps it in play everywhere (see ``tests/test_coninfer.py`` for the measured effect).
* ``"decoupled"``: the "isolated procedure" Sec. 3.3 argues against (Tab. 4 ablation): the
  mixture is initialised from the prior, then fitted by ordinary EM on its own posterior
  (z plays no part), and only at the end z is formed once from ``p`` and ``q``.
* ``"context_only"``: the same prior-initialised mixture fitted by ordinary EM; the output is
  the mixture posterior ``q`` itself (context alone, the prior only names the clusters).

Options in every mode (defaults = the public code): ``mixture_weights="estimated"`` re-estimates
Eq. 5's weights instead of fixing them uniform (a deviation from the paper's footnote);
``init="prior"`` initialises the means from all patches weighted by the prior (Eq. 9 read
literally) instead of the top-8 patches per class.

Everything runs in torch float32 on the features' device (CPU or GPU), in log space, with a
variance floor, and with no Python loop over patches: squared distances come from matrix
products ``||x||^2_w - 2 x (w*mu)^T + ||mu||^2_w`` evaluated in chunks of patches, so peak
memory is O(chunk * K) beyond the inputs. ``straightforward_reference`` keeps the public
code's broadcasting ``(x - mu)^2`` form as the test oracle and benchmark baseline.

Choosing the settings lives in :mod:`rslab.recipes.coninfer_fit` (``fit_temperature``,
``grid_search``, ``best_by_mode``, and ``fit_patch_classifier`` for the stand-in branches): the prior's
softmax temperature is calibrated by NLL on labelled validation patches, and the consensus
temperature ``T`` is chosen on validation scenes. ``T`` must follow the feature dimension D
(the log-likelihood sums over D dimensions): the public ``T = 50`` is set for D = 1024 DINOv3
tokens and is far too soft for 64-d features. Neither choice is the paper's (it fixes both);
notebook 05 says so.

Large scenes (Sec. 3, Fig. 2; Sec. 3.6): ``tile_scene`` cuts a scene into tiles,
``refine_scene`` pools every tile's patches into one mixture, and ``stitch_tiles`` maps the
per-patch result back to its tile and upsamples it to full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("reference", "paper", "decoupled", "context_only")


# --------------------------------------------------------------------------------------------
# configuration and result
# --------------------------------------------------------------------------------------------
@dataclass
class ConInferConfig:
    """Settings of the joint estimation (Sec. 3.4). Defaults follow the public code / Sec. 4.2.

    Attributes:
        mode: ``"reference"`` | ``"paper"`` | ``"decoupled"`` | ``"context_only"`` (module doc).
        n_iter: number of M-steps (Sec. 4.2: 10). The loop makes ``n_iter + 1`` z-updates.
        temperature: ``T`` in ``q ∝ exp(loglik / T)``; ``None`` = 50 (public code) in every mode
            but ``"paper"``, where it is 1 (the untempered posterior of Eq. 6).
        top_k_init: patches per class used to initialise the means (Eq. 9; public code: 8).
        var_floor: lower bound on every variance entry (keeps log-likelihoods finite).
        init_var: initial variance; ``None`` = ``1 / D`` in the shared-variance modes (public
            code) and the prior-weighted pooled variance in ``"paper"`` mode.
        prior_floor: prior probabilities are clamped to at least this before taking logs.
        chunk_size: patches per chunk in the distance computations (bounds peak memory).
        device: run on this device; ``None`` = the features' device.
        standardize: z-score every feature dimension over the pool, then unit-normalise every
            patch (:func:`standardize_features`) before the EM; one pool = one ``coninfer`` call.
        mixture_weights: ``"uniform"`` (the paper's footnote to Eq. 8 and the public code: pi_k =
            1/K, fixed) or ``"estimated"`` (a deviation: Eq. 5's pi_k initialised from the mean
            prior and re-estimated as the mean of the responsibilities in every M-step). Uniform
            weights split a class that covers most of the pool (notebook 05, level 1).
        init: ``"top_k"`` (public code: each mean from the ``top_k_init`` highest-prior
            patches, :func:`init_means`) or ``"prior"`` (Eq. 9 with the prior as the initial
            responsibilities of *all* patches: the prior-weighted mean).
    """

    mode: str = "reference"
    n_iter: int = 10
    temperature: float | None = None
    top_k_init: int = 8
    var_floor: float = 1e-6
    init_var: float | None = None
    prior_floor: float = 1e-12
    chunk_size: int = 4096
    device: str | None = None
    standardize: bool = False
    mixture_weights: str = "uniform"
    init: str = "top_k"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if int(self.n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {self.n_iter}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 or None, got {self.temperature}")
        if int(self.top_k_init) < 1:
            raise ValueError(f"top_k_init must be >= 1, got {self.top_k_init}")
        if not self.var_floor > 0:
            raise ValueError(f"var_floor must be > 0, got {self.var_floor}")
        if self.init_var is not None and not self.init_var > 0:
            raise ValueError(f"init_var must be > 0 or None, got {self.init_var}")
        if self.mixture_weights not in ("uniform", "estimated"):
            raise ValueError(f"mixture_weights must be 'uniform' or 'estimated', got {self.mixture_weights!r}")
        if self.init not in ("top_k", "prior"):
            raise ValueError(f"init must be 'top_k' or 'prior', got {self.init!r}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")

    # properties derived from the mode (one place that says what each mode means)
    @property
    def tau(self) -> float:
        """The temperature actually used (see ``temperature``)."""
        if self.temperature is not None:
            return float(self.temperature)
        return 1.0 if self.mode == "paper" else 50.0

    @property
    def shared_variance(self) -> bool:
        return self.mode != "paper"

    @property
    def normalize_means(self) -> bool:
        return self.mode != "paper"

    @property
    def joint(self) -> bool:
        """z drives the M-step (Eq. 8, joint) rather than the mixture's own posterior."""
        return self.mode in ("reference", "paper")

    @classmethod
    def tiny(cls) -> "ConInferConfig":
        """Few iterations, for tests and the ci profile."""
        return cls(n_iter=3)

    @classmethod
    def small(cls) -> "ConInferConfig":
        return cls(n_iter=5)

    @classmethod
    def base(cls) -> "ConInferConfig":
        """The paper's setting (Sec. 4.2): 10 iterations, T = 50, 8 initial patches."""
        return cls()


@dataclass
class ConInferResult:
    """Output of :func:`coninfer`.

    Attributes:
        z: (N, K) the calibrated prediction (Sec. 3.6); for ``context_only`` the posterior q.
        posterior: (N, K) the final (tempered) mixture posterior q (Eq. 11).
        means: (K, D) fitted means.
        variances: (D,) shared variance (reference-type modes) or (K, D) per component.
        objective: Eq. 8 value (mean over patches of KL(z||p) + KL(z||q)) after each z-update.
        changed: fraction of patches whose argmax changed at each z-update (first entry: vs prior).
        labels_history: argmax of the output after each z-update, (n_iter + 1) tensors of (N,).
    """

    z: torch.Tensor
    posterior: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    objective: list[float] = field(default_factory=list)
    changed: list[float] = field(default_factory=list)
    labels_history: list[torch.Tensor] = field(default_factory=list)

    @property
    def labels(self) -> torch.Tensor:
        return self.z.argmax(dim=1)


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def as_tensor(x, name: str) -> torch.Tensor:
    """A numpy array (made contiguous, shared memory) or a tensor as a tensor; anything else is refused."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


#: Largest magnitude accepted in images and features: squares of larger float32 values overflow.
MAX_ABS_VALUE = 1e15


def check_image(image, name: str = "image", ndim: int = 3, allow_nan: bool = False) -> torch.Tensor:
    """Validate a channels-first image tensor/array ((C, H, W) or (B, C, H, W)) and return it as a tensor.

    Refused, with the argument named: wrong number of dimensions, channels-last layout
    ((H, W, C) with C < 8 where H, W >= 8), empty sizes, NaN/inf and values beyond
    :data:`MAX_ABS_VALUE`. ``allow_nan=True`` lets NaN through (for callers that document their
    nodata handling, e.g. SAR nodata in the encoders' preprocessing); +-inf is still refused.
    """
    x = as_tensor(image, name)
    layout = "(C, H, W)" if ndim == 3 else "(B, C, H, W)"
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(x.shape)}")
    _check_layout(tuple(x.shape), name)
    _check_values(x, name, allow_nan)
    return x


def _check_layout(shape: tuple[int, ...], name: str) -> None:
    """Refuse an empty or channels-last ((H, W, C) with C < 8 where H, W >= 8) (C, H, W) / (B, C, H, W) shape."""
    layout = "(C, H, W)" if len(shape) == 3 else "(B, C, H, W)"
    if 0 in shape:
        raise ValueError(f"{name} is empty: shape {shape} {layout}")
    c, h, w = shape[-3:]
    if w < 8 <= c and h >= 8:
        order = "(2, 0, 1)" if len(shape) == 3 else "(0, 3, 1, 2)"
        raise ValueError(f"{name} of shape {shape} looks channels-last (H, W, C = {w}); pass {layout} "
                         f"channels-first, e.g. image.permute{order} (numpy: image.transpose{order})")


def _check_tiling(tile, stride) -> int:
    """``stride`` (default ``tile``) after checking ``1 <= stride <= tile``, both integers."""
    stride = tile if stride is None else stride
    if not isinstance(tile, (int, np.integer)) or not isinstance(stride, (int, np.integer)):
        raise ValueError(f"tile and stride must be integers, got tile={tile!r}, stride={stride!r}")
    if tile < 1 or stride < 1 or stride > tile:
        raise ValueError(f"need 1 <= stride <= tile, got tile={tile}, stride={stride}")
    return stride


def _check_values(x: torch.Tensor, name: str, allow_nan: bool = False) -> None:
    if allow_nan and x.is_floating_point():
        x = torch.nan_to_num(x, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    if x.is_floating_point() or x.is_complex():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            n_bad = int((~finite).sum())
            raise ValueError(f"{name} has {n_bad} NaN/inf value(s) of {x.numel()}; fill or mask them first "
                             "(e.g. torch.nan_to_num with an explicit nodata value)")
    if x.numel() and float(x.abs().max()) > MAX_ABS_VALUE:
        raise ValueError(f"{name} has values up to {float(x.abs().max()):.3g}, beyond {MAX_ABS_VALUE:g}; "
                         "rescale it (squared values would overflow float32)")


def _check_branch_output(out, name: str, batch: int, channels_min: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ValueError(f"{name} must return a (B, C, h, w) tensor, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.shape[0] != batch:
        raise ValueError(f"{name} returned {out.shape[0]} maps for a batch of {batch} tiles")
    if out.shape[1] < channels_min:
        what = "classes (K >= 2)" if channels_min == 2 else "feature dimensions (D >= 1)"
        raise ValueError(f"{name} returned {out.shape[1]} channels; need {what}")
    if 0 in out.shape[2:]:
        raise ValueError(f"{name} returned an empty {tuple(out.shape[2:])} patch grid")
    _check_values(out, f"{name} output")
    return out


def validate_inputs(prior, features, top_k_init: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a prior (N, K) and features (N, D); return float tensors (prior row-normalised).

    Documented handling: a prior row may be unnormalised scores >= 0 (it is divided by its sum);
    single zero entries are allowed (clamped to ``prior_floor`` later). Raises ``ValueError`` on
    K < 2, rows that sum to zero, negative or non-finite values, mismatched N, or a pool with
    fewer patches than ``top_k_init``.
    """
    prior = as_tensor(prior, "prior")
    features = as_tensor(features, "features")
    if prior.ndim != 2:
        raise ValueError(f"prior must be (N, K) probabilities, got shape {tuple(prior.shape)}")
    if features.ndim != 2:
        raise ValueError(
            f"features must be (N, D), got shape {tuple(features.shape)}; flatten (B, D, h, w) "
            "maps with features.permute(0, 2, 3, 1).reshape(-1, D)")
    n, k = prior.shape
    if k < 2:
        raise ValueError(f"prior has K={k} class; ConInfer needs K >= 2 (with one class every "
                         "patch is that class; add a background class)")
    if n == 0:
        raise ValueError("prior and features are empty (N = 0 patches); pass at least one patch")
    if features.shape[1] == 0:
        raise ValueError("features have dimension D = 0; pass at least one feature per patch")
    if features.shape[0] != n:
        raise ValueError(f"prior has N={n} patches but features have N={features.shape[0]}; "
                         "both must describe the same patches in the same order")
    if n < top_k_init:
        raise ValueError(f"the pool has {n} patches but the initialisation needs top_k_init="
                         f"{top_k_init} per class; pool more images/tiles or lower top_k_init")
    prior = prior.float()
    features = features.float()
    bad = ~torch.isfinite(prior).all(dim=1)
    if bad.any():
        raise ValueError(f"prior has {int(bad.sum())} rows with NaN/inf (first: row "
                         f"{int(bad.nonzero()[0])}); fix or drop those patches first")
    if (prior < 0).any():
        raise ValueError("prior has negative entries; pass probabilities (e.g. softmax of "
                         "logits, see prior_from_logits)")
    sums = prior.sum(dim=1)
    if (sums <= 0).any():
        raise ValueError(f"prior has {int((sums <= 0).sum())} all-zero rows (first: row "
                         f"{int((sums <= 0).nonzero()[0])}); a patch needs some prior mass")
    # amax/amin propagate NaN and keep +-inf: O(N) extra memory, not an (N, D) mask
    bad = ~(torch.isfinite(features.amax(dim=1)) & torch.isfinite(features.amin(dim=1)))
    if bad.any():
        raise ValueError(f"features have {int(bad.sum())} rows with NaN/inf; fix them first")
    if float(features.abs().max()) > MAX_ABS_VALUE:
        raise ValueError(f"features reach {float(features.abs().max()):.3g} in magnitude, beyond "
                         f"{MAX_ABS_VALUE:g}; rescale them (squared distances would overflow float32)")
    return prior / sums[:, None], features


def prior_from_logits(logits, scale: float = 100.0) -> torch.Tensor:
    """Eq. 4: per-patch class distribution ``softmax(scale * cosine)``; the public code uses 100."""
    logits = as_tensor(logits, "logits").float()
    return torch.softmax(scale * logits, dim=-1)


# --------------------------------------------------------------------------------------------
# the fast building blocks (matrix-product distances, log space)
# --------------------------------------------------------------------------------------------
def gaussian_loglik(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                    chunk_size: int = 16384, include_logdet: bool = False) -> torch.Tensor:
    """Eqs. 5-6's components: diagonal-Gaussian log-likelihoods ``l_ik = -1/2 sum_d (x_id - mu_kd)^2 / var_d`` (N, K).

    ``variances`` is (D,) (shared by all components, as in the public code) or (K, D). The squared
    distance is expanded into matrix products, ``x^2 @ w - 2 x @ (w mu)^T + (w mu^2).sum``, in
    chunks of ``chunk_size`` patches, so no (N, K, D) tensor is formed. The constant
    ``-D/2 log 2π`` is dropped (it cancels in every posterior and KL); with ``include_logdet`` the
    ``-1/2 sum_d log var_kd`` term is added (needed when components have their own variances).
    """
    inv = 1.0 / variances
    if inv.ndim == 1:
        inv_k = inv.expand_as(means)                       # (K, D)
    else:
        inv_k = inv
    weighted_means = means * inv_k                         # (K, D)
    mu_sq = (means * weighted_means).sum(dim=1)            # (K,)
    out = torch.empty(x.shape[0], means.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):        # loop over chunks, not patches
        xc = x[start:start + chunk_size]
        if inv.ndim == 1:
            x_sq = (xc * xc) @ inv                         # (n,)
            d2 = x_sq[:, None] - 2.0 * (xc @ weighted_means.T) + mu_sq[None, :]
        else:
            d2 = (xc * xc) @ inv_k.T - 2.0 * (xc @ weighted_means.T) + mu_sq[None, :]
        out[start:start + chunk_size] = -0.5 * d2.clamp_min(0.0)
    if include_logdet:
        logdet = variances.log().sum(dim=-1)
        out = out - 0.5 * (logdet if logdet.ndim else logdet.expand(means.shape[0]))[None, :]
    return out


def _weighted_stats(x: torch.Tensor, resp: torch.Tensor, chunk_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sufficient statistics: n_k = sum_i r_ik, S = r^T x (K, D), Q = r^T x^2 (K, D)."""
    k, d = resp.shape[1], x.shape[1]
    s = torch.zeros(k, d, dtype=x.dtype, device=x.device)
    q = torch.zeros(k, d, dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        xc, rc = x[start:start + chunk_size], resp[start:start + chunk_size]
        s += rc.T @ xc
        q += rc.T @ (xc * xc)
    return resp.sum(dim=0), s, q


def m_step(x: torch.Tensor, resp: torch.Tensor, shared_variance: bool, normalize_means: bool,
           var_floor: float, chunk_size: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 13-14: means and diagonal variances from soft responsibilities ``resp`` (N, K).

    Means are the responsibility-weighted averages (renormalised to unit length in the public
    code's setting). The variance is taken around those (possibly renormalised) means:
    ``var_kd = (Q_kd - 2 mu_kd S_kd + n_k mu_kd^2) / n_k``, or pooled over components and divided
    by N when shared, as the public code does. Floored at ``var_floor``.
    """
    n_k, s, q = _weighted_stats(x, resp, chunk_size)
    n_safe = n_k.clamp_min(1e-12)[:, None]
    means = s / n_safe
    if normalize_means:
        means = F.normalize(means, dim=1, eps=1e-12)
    scatter = q - 2.0 * means * s + n_k[:, None] * means * means   # (K, D) = sum_i r_ik (x_i - mu_k)^2
    if shared_variance:
        variances = scatter.sum(dim=0) / resp.sum()
    else:
        variances = scatter / n_safe
    return means, variances.clamp_min(var_floor)


def init_means(x: torch.Tensor, prior: torch.Tensor, top_k: int, normalize: bool) -> torch.Tensor:
    """Eq. 9: each component's mean from its ``top_k`` highest-prior patches, weighted by the prior.

    The public code averages ``p_ik x_i`` over the top-8 patches and renormalises to unit length
    (so only the direction of ``sum p_ik x_i`` matters); without renormalisation this is the
    prior-weighted mean ``sum p_ik x_i / sum p_ik`` over the same patches.
    """
    top_p, top_idx = torch.topk(prior, k=top_k, dim=0)          # (top_k, K) each
    gathered = x[top_idx.reshape(-1)].reshape(top_k, prior.shape[1], x.shape[1])  # (top_k, K, D)
    weighted = (gathered * top_p[..., None]).sum(dim=0)        # (K, D)
    if normalize:
        return F.normalize(weighted, dim=1, eps=1e-12)
    return weighted / top_p.sum(dim=0).clamp_min(1e-12)[:, None]


def init_variances(x: torch.Tensor, prior: torch.Tensor, shared: bool, init_var: float | None,
                   var_floor: float, chunk_size: int = 16384) -> torch.Tensor:
    """Eq. 10: the initial diagonal variances, (D,) when ``shared`` else (K, D), floored at ``var_floor``.

    Shared (the public code): ``init_var`` or ``1 / D`` everywhere. Per component (``"paper"``
    mode): ``init_var`` everywhere, or the variance pooled over all patches with the prior as the
    responsibilities (Eq. 10 with Eq. 9's weights), the same for every component; the means
    keep their Eq. 9 initialisation (:func:`init_means`).
    """
    if x.ndim != 2 or prior.ndim != 2 or x.shape[0] != prior.shape[0]:
        raise ValueError(f"need x (N, D) and prior (N, K) over the same patches, got {tuple(x.shape)} and "
                         f"{tuple(prior.shape)}")
    k, d = prior.shape[1], x.shape[1]
    if shared:
        var0 = init_var if init_var is not None else 1.0 / d
        variances = torch.full((d,), float(var0), device=x.device)
    elif init_var is not None:
        variances = torch.full((k, d), float(init_var), device=x.device)
    else:
        _, pooled = m_step(x, prior, True, False, var_floor, chunk_size)
        variances = pooled.expand(k, d).clone()
    return variances.clamp_min(var_floor)


def tempered_log_posterior(loglik: torch.Tensor, temperature: float,
                           log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eqs. 6 and 11 with temperature: ``log q = log softmax(loglik / T + log pi)``; uniform weights
    (the paper's footnote, the public code) when ``log_weights`` is None."""
    s = loglik / temperature
    if log_weights is not None:
        s = s + log_weights[None, :]
    return torch.log_softmax(s, dim=1)


def e_step(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, temperature: float,
           log_weights: torch.Tensor | None = None, include_logdet: bool = False,
           chunk_size: int = 16384) -> torch.Tensor:
    """Eq. 11, the E-step: the (tempered) mixture posterior ``log q_ik`` of every patch, (N, K).

    ``log q = log softmax(l / T + log pi)`` with ``l`` the diagonal-Gaussian log-likelihoods of
    :func:`gaussian_loglik` (Eq. 6's components) and ``pi`` uniform when ``log_weights`` is None.
    ``include_logdet`` adds each component's ``-1/2 sum_d log var_kd`` (needed when the components
    have their own (K, D) variances, the ``"paper"`` mode). The M-step is :func:`m_step`.
    """
    if x.ndim != 2 or means.ndim != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"need x (N, D) and means (K, D) with the same D, got {tuple(x.shape)} and "
                         f"{tuple(means.shape)}")
    if variances.shape not in ((means.shape[1],), tuple(means.shape)):
        raise ValueError(f"variances must be (D,) or (K, D) = {tuple(means.shape)}, got {tuple(variances.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    loglik = gaussian_loglik(x, means, variances, chunk_size, include_logdet=include_logdet)
    return tempered_log_posterior(loglik, temperature, log_weights)


def mixture_log_weights(resp: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """Eq. 5's mixture weights re-estimated from responsibilities: ``log pi_k = log mean_i r_ik``
    (floored, renormalised). The paper fixes pi uniform (footnote to Eq. 8); this is an option."""
    pi = resp.mean(dim=0).clamp_min(floor)
    return (pi / pi.sum()).log()


def consensus(log_prior: torch.Tensor, log_q: torch.Tensor, rule: str) -> torch.Tensor:
    """Eq. 12, in log space. ``"product"``: z ∝ p q (public code); ``"geometric"``: z ∝ sqrt(p q),
    the exact minimiser of KL(z||p) + KL(z||q) over the simplex (Eq. 7)."""
    s = log_prior + log_q
    if rule == "geometric":
        s = 0.5 * s
    return torch.softmax(s, dim=1)


def objective(z: torch.Tensor, log_prior: torch.Tensor, log_q: torch.Tensor) -> float:
    """Eq. 8: mean over patches of KL(z_i || p_i) + KL(z_i || q_i) (0 log 0 = 0)."""
    z_log_z = torch.xlogy(z, z)
    kl_p = (z_log_z - z * log_prior).sum(dim=1)
    kl_q = (z_log_z - z * log_q).sum(dim=1)
    return float((kl_p + kl_q).mean())


# --------------------------------------------------------------------------------------------
# the joint estimation
# --------------------------------------------------------------------------------------------
def coninfer(prior, features, config: ConInferConfig | None = None) -> ConInferResult:
    """Refine a per-patch class prior with a Gaussian mixture over context features (Sec. 3.4).

    Args:
        prior: (N, K) class probabilities per patch (Eq. 4), any source; rows are renormalised.
        features: (N, D) context features of the same patches (e.g. DINO tokens, Eq. 5). The
            public code unit-normalises DINO tokens; do so when using the ``"reference"`` mode.
        config: :class:`ConInferConfig` (default: the reference mode, 10 iterations, T = 50).

    Returns:
        :class:`ConInferResult` with z (N, K), posterior, means, variances, the per-iteration
        objective (Eq. 8) and argmax history.
    """
    cfg = config or ConInferConfig()
    prior, x = validate_inputs(prior, features, cfg.top_k_init)
    if cfg.standardize:
        x = standardize_features(x)
    device = torch.device(cfg.device) if cfg.device else x.device
    prior, x = prior.to(device), x.to(device)
    log_prior = prior.clamp_min(cfg.prior_floor).log()
    rule = "geometric" if cfg.mode == "paper" else "product"

    with torch.no_grad():
        if cfg.init == "prior":                                                  # Eq. 9 over all patches
            means, _ = m_step(x, prior, True, cfg.normalize_means, cfg.var_floor, cfg.chunk_size)
        else:                                                                    # public code: top-k
            means = init_means(x, prior, cfg.top_k_init, cfg.normalize_means)
        variances = init_variances(x, prior, cfg.shared_variance, cfg.init_var, cfg.var_floor,  # Eq. 10
                                   cfg.chunk_size)

        log_weights = mixture_log_weights(prior) if cfg.mixture_weights == "estimated" else None
        result = ConInferResult(z=prior, posterior=prior, means=means, variances=variances)
        previous = prior.argmax(dim=1)
        for it in range(int(cfg.n_iter) + 1):
            log_q = e_step(x, means, variances, cfg.tau, log_weights,                   # Eq. 11
                           include_logdet=not cfg.shared_variance, chunk_size=cfg.chunk_size)
            q = log_q.exp()
            if cfg.mode == "context_only":
                z = q
            elif cfg.joint or it == cfg.n_iter:
                z = consensus(log_prior, log_q, rule)                            # Eq. 12
            else:                                                                # decoupled: no z yet
                z = q
            result.objective.append(objective(z, log_prior, log_q))
            labels = z.argmax(dim=1)
            result.changed.append(float((labels != previous).float().mean()))
            result.labels_history.append(labels)
            previous = labels
            if it == cfg.n_iter:
                break
            resp = z if cfg.joint else q                                          # Eqs. 13-14
            means, variances = m_step(x, resp, cfg.shared_variance, cfg.normalize_means,
                                      cfg.var_floor, cfg.chunk_size)
            if log_weights is not None:                                           # Eq. 5's pi_k
                log_weights = mixture_log_weights(resp)
        result.z, result.posterior, result.means, result.variances = z, q, means, variances
    if not bool(torch.isfinite(z).all()):
        raise ValueError("ConInfer produced non-finite probabilities (features too large or degenerate); "
                         "standardise the features (config.standardize=True) or rescale them")
    return result


# --------------------------------------------------------------------------------------------
# the straightforward implementation (benchmark baseline and test oracle)
# --------------------------------------------------------------------------------------------
def straightforward_reference(prior, features, n_iter: int = 10, temperature: float = 50.0,
                              top_k_init: int = 8, chunk_size: int = 2500) -> torch.Tensor:
    """The public code's algorithm written the straightforward way: returns z (N, K).

    Same mathematics as ``coninfer(..., ConInferConfig(mode="reference"))`` but the squared
    distances are formed by broadcasting ``(x - mu)^2`` into an (chunk, K, D) tensor per chunk
    of 2,500 patches (as ``gmm.py`` does for both the E-step and the variance update), the
    initialisation loops over classes, and the posterior is exponentiated outside log space.
    Kept only as an oracle for tests and as the baseline in ``benchmarks/bench_coninfer.py``.
    """
    prior, x = validate_inputs(prior, features, top_k_init)
    n, k = prior.shape
    d = x.shape[1]
    with torch.no_grad():
        mu = torch.zeros(k, d, dtype=x.dtype, device=x.device)
        for c in range(k):
            vals, idx = torch.topk(prior[:, c], k=top_k_init)
            mu[c] = (x[idx] * vals[:, None]).mean(dim=0)
        mu = mu / mu.norm(dim=1, keepdim=True)
        var = torch.full((d,), 1.0 / d, dtype=x.dtype, device=x.device)

        def loglik() -> torch.Tensor:
            out = torch.empty(n, k, dtype=x.dtype, device=x.device)
            for s in range(0, n, chunk_size):
                diff2 = (x[s:s + chunk_size, None, :] - mu[None, :, :]) ** 2     # (c, K, D)
                out[s:s + chunk_size] = -0.5 * (diff2 / var[None, None, :]).sum(dim=2)
            return out

        z = prior
        for it in range(n_iter + 1):
            ll = loglik()
            ll = ll - ll.max(dim=1, keepdim=True).values
            unnorm = prior * torch.exp(ll / temperature)
            z = unnorm / unnorm.sum(dim=1, keepdim=True)
            if it == n_iter:
                break
            mu = (z.T @ x) / z.sum(dim=0)[:, None]
            mu = mu / mu.norm(dim=1, keepdim=True)
            acc = torch.zeros(d, dtype=x.dtype, device=x.device)
            for s in range(0, n, chunk_size):
                diff2 = (x[s:s + chunk_size, None, :] - mu[None, :, :]) ** 2
                acc += torch.einsum("nk,nkd->d", z[s:s + chunk_size], diff2)
            var = acc / z.sum()
    return z


# --------------------------------------------------------------------------------------------
# pools of images, tiles, large scenes
# --------------------------------------------------------------------------------------------
def flatten_maps(prob_maps: torch.Tensor, feature_maps: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) priors and (B, D, h, w) features -> (B*h*w, K) and (B*h*w, D)."""
    if prob_maps.ndim != 4 or feature_maps.ndim != 4:
        raise ValueError(f"expected (B, K, h, w) and (B, D, h, w) maps, got "
                         f"{tuple(prob_maps.shape)} and {tuple(feature_maps.shape)}")
    if prob_maps.shape[0] != feature_maps.shape[0] or prob_maps.shape[2:] != feature_maps.shape[2:]:
        raise ValueError(f"prior maps {tuple(prob_maps.shape)} and feature maps "
                         f"{tuple(feature_maps.shape)} must share batch and patch grid; resize "
                         "one grid to the other (F.interpolate) first")
    k, d = prob_maps.shape[1], feature_maps.shape[1]
    return (prob_maps.permute(0, 2, 3, 1).reshape(-1, k),
            feature_maps.permute(0, 2, 3, 1).reshape(-1, d))


def refine_maps(prob_maps: torch.Tensor, feature_maps: torch.Tensor,
                config: ConInferConfig | None = None, pool_images: int = 50
                ) -> tuple[torch.Tensor, list[ConInferResult]]:
    """Run ConInfer on pools of ``pool_images`` images (Sec. 4.2: every 50 images).

    Returns refined (B, K, h, w) probabilities and the per-pool results.
    """
    if pool_images < 1:
        raise ValueError(f"pool_images must be >= 1, got {pool_images}")
    flatten_maps(prob_maps[:1], feature_maps[:1])  # shape checks before any work
    b, k, h, w = prob_maps.shape
    out, results = [], []
    for start in range(0, b, pool_images):
        p, f = flatten_maps(prob_maps[start:start + pool_images],
                            feature_maps[start:start + pool_images])
        res = coninfer(p, f, config)
        results.append(res)
        out.append(res.z.reshape(-1, h, w, k).permute(0, 3, 1, 2).to(prob_maps.device))
    return torch.cat(out), results


def tile_positions(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, size)``; the last tile is shifted back to end at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def tile_scene(image: torch.Tensor, tile: int, stride: int | None = None
               ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Cut a (C, H, W) scene into (T, C, tile, tile) tiles and their (y, x) offsets.

    ``stride`` defaults to ``tile`` (non-overlapping, as in the paper's Fig. 2). Scenes smaller
    than a tile are zero-padded at the bottom/right; the last row/column of tiles is shifted to
    end exactly at the border, so every pixel is covered.
    """
    image = check_image(image, "image")
    stride = _check_tiling(tile, stride)
    _, h, w = image.shape
    if h < tile or w < tile:
        image = F.pad(image, (0, max(0, tile - w), 0, max(0, tile - h)))
    ys = tile_positions(image.shape[1], tile, stride)
    xs = tile_positions(image.shape[2], tile, stride)
    positions = [(y, x) for y in ys for x in xs]
    tiles = torch.stack([image[:, y:y + tile, x:x + tile] for y, x in positions])
    return tiles, positions


def stitch_tiles(tile_maps: torch.Tensor, positions: Sequence[tuple[int, int]],
                 scene_hw: tuple[int, int], tile: int) -> torch.Tensor:
    """Sec. 3.6: upsample per-tile (T, K, h, w) patch maps to ``tile`` px and place them back.

    Overlapping tiles are averaged. Returns (K, H, W) float32. Memory: one (K, H, W) accumulator
    plus one upsampled tile at a time.
    """
    if tile_maps.ndim != 4 or tile_maps.shape[0] != len(positions):
        raise ValueError(f"tile_maps must be (T, K, h, w) with T = len(positions) = "
                         f"{len(positions)}, got {tuple(tile_maps.shape)}")
    if len(scene_hw) != 2 or min(scene_hw) < 1 or tile < 1:
        raise ValueError(f"scene_hw must be (H, W) >= 1 and tile >= 1, got {scene_hw} and {tile}")
    _check_values(tile_maps, "tile_maps")
    h, w = scene_hw
    return _stitch_rows(tile_maps, positions, 0, max(h, tile), max(w, tile), tile)[:, :h, :w]


def _stitch_rows(tile_maps: torch.Tensor, positions: Sequence[tuple[int, int]], y0: int, y1: int,
                 width: int, tile: int) -> torch.Tensor:
    """Rows ``[y0, y1)`` of the stitched (K, H, W) map (see :func:`stitch_tiles`), ``width`` columns."""
    acc = torch.zeros(tile_maps.shape[1], y1 - y0, width, dtype=torch.float32)
    count = torch.zeros(1, y1 - y0, width, dtype=torch.float32)
    for t, (y, x) in enumerate(positions):
        a, b = max(y, y0), min(y + tile, y1)
        if a >= b:
            continue
        up = F.interpolate(tile_maps[t:t + 1].float().cpu(), size=(tile, tile), mode="bilinear",
                           align_corners=False)[0]
        acc[:, a - y0:b - y0, x:x + tile] += up[:, a - y:b - y]
        count[:, a - y0:b - y0, x:x + tile] += 1
    return acc / count.clamp_min(1)


@dataclass
class SceneResult:
    """Output of :func:`refine_scene`: full-resolution (K, H, W) maps and the mixture fit."""

    probs: torch.Tensor
    prior_probs: torch.Tensor
    result: ConInferResult
    positions: list[tuple[int, int]]

    @property
    def labels(self) -> torch.Tensor:
        return self.probs.argmax(dim=0)

    @property
    def prior_labels(self) -> torch.Tensor:
        return self.prior_probs.argmax(dim=0)


def _run_branches(prior_fn: Callable[[torch.Tensor], torch.Tensor],
                 feature_fn: Callable[[torch.Tensor], torch.Tensor],
                 batch: torch.Tensor, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both branches on a (B, C, tile, tile) batch -> checked float32 CPU maps on one patch grid.

    The prior must be (B, K >= 2, h, w) with ``tile`` a multiple of h and w; features (B, D >= 1,
    h', w') are resized to (h, w) bilinearly when their grid differs; both must be finite.
    """
    p = _check_branch_output(prior_fn(batch), "prior_fn", batch.shape[0], 2)
    f = _check_branch_output(feature_fn(batch), "feature_fn", batch.shape[0], 1)
    if tile % p.shape[2] or tile % p.shape[3]:
        raise ValueError(f"tile={tile} is not a multiple of the patch grid: prior_fn gave a "
                         f"{p.shape[2]}x{p.shape[3]} grid per tile; choose a tile that is a multiple "
                         "of the patch size so patches map back to whole pixels")
    if f.shape[2:] != p.shape[2:]:
        f = F.interpolate(f, size=p.shape[2:], mode="bilinear", align_corners=False)
    return p.float().cpu(), f.float().cpu()


def refine_scene(prior_fn: Callable[[torch.Tensor], torch.Tensor],
                 feature_fn: Callable[[torch.Tensor], torch.Tensor],
                 image: torch.Tensor, tile: int = 448, stride: int | None = None,
                 config: ConInferConfig | None = None, batch_tiles: int = 8) -> SceneResult:
    """Tiled large-scene inference (Fig. 2): tile, run both branches, one mixture, stitch.

    Args:
        prior_fn: (B, C, tile, tile) -> (B, K, h, w) class probabilities per patch.
        feature_fn: (B, C, tile, tile) -> (B, D, h, w) context features on the same grid (or
            a grid that is resized to the prior's with bilinear interpolation).
        image: (C, H, W) scene.
        tile, stride: tiling (stride defaults to tile: non-overlapping, as in the paper).
        config: :class:`ConInferConfig`.
        batch_tiles: tiles per forward pass of the two branches (bounds peak memory).

    All patches of all tiles form ONE pool, so the mixture sees the whole scene's context.
    """
    if batch_tiles < 1:
        raise ValueError(f"batch_tiles must be >= 1, got {batch_tiles}")
    tiles, positions = tile_scene(image, tile, stride)
    priors, feats = [], []
    with torch.no_grad():
        for s in range(0, tiles.shape[0], batch_tiles):
            p, f = _run_branches(prior_fn, feature_fn, tiles[s:s + batch_tiles], tile)
            priors.append(p)
            feats.append(f)
    prior_maps, feature_maps = torch.cat(priors), torch.cat(feats)
    t, k, h, w = prior_maps.shape
    p_flat, f_flat = flatten_maps(prior_maps, feature_maps)
    res = coninfer(p_flat, f_flat, config)
    z_maps = res.z.cpu().reshape(t, h, w, k).permute(0, 3, 1, 2)
    hw = tuple(image.shape[1:])
    return SceneResult(probs=stitch_tiles(z_maps, positions, hw, tile),
                       prior_probs=stitch_tiles(prior_maps, positions, hw, tile),
                       result=res, positions=positions)


# --------------------------------------------------------------------------------------------
# light-weight branches for the default (offline, CPU) profile and the evaluation
# --------------------------------------------------------------------------------------------
def patch_statistics(image, patch: int = 8, scales: Sequence[int] = (1, 3, 7)) -> torch.Tensor:
    """Hand-made per-patch descriptors of a (C, H, W) image -> (2 C len(scales), H/p, W/p).

    Per channel: the patch mean and standard deviation, and both averaged over s x s
    neighbourhoods of patches for each ``s`` in ``scales`` beyond 1 (context at several
    ranges). Cheap inputs for the default profile's stand-in branches.
    """
    x = check_image(image, "image").float()
    if patch < 1 or x.shape[1] < patch or x.shape[2] < patch:
        raise ValueError(f"patch={patch} must be >= 1 and fit the image {tuple(x.shape[1:])}")
    x = x[None]
    mean = F.avg_pool2d(x, patch)
    std = (F.avg_pool2d(x * x, patch) - mean * mean).clamp_min(0).sqrt()
    parts = [mean, std]
    for s in scales:
        if s > 1:
            parts += [F.avg_pool2d(t, s, stride=1, padding=s // 2, count_include_pad=False)
                      for t in (mean, std)]
    return torch.cat(parts, dim=1)[0]


def patch_labels(labels, patch: int, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Majority class of each patch of an (H, W) label map (ignored pixels do not vote; a patch
    with no valid pixel gets ``ignore_index``)."""
    lab = as_tensor(labels, "labels")
    if lab.is_floating_point():
        raise ValueError(f"labels must be integer class ids, got dtype {lab.dtype}")
    lab = lab.long()
    if lab.ndim != 2 or 0 in lab.shape:
        raise ValueError(f"labels must be a non-empty (H, W) map, got shape {tuple(lab.shape)}")
    valid = lab != ignore_index
    if (lab[valid] >= num_classes).any() or (lab[valid] < 0).any():
        raise ValueError(f"labels must be in [0, {num_classes}) or {ignore_index}")
    onehot = F.one_hot(torch.where(valid, lab, 0), num_classes).permute(2, 0, 1).float()
    onehot = onehot * valid[None]
    votes = F.avg_pool2d(onehot[None], patch)[0]
    out = votes.argmax(0)
    return torch.where(votes.sum(0) > 0, out, torch.full_like(out, ignore_index))


class PatchClassifier(torch.nn.Module):
    """Standardise -> (optional GELU MLP) -> linear head, on per-patch descriptors.

    With ``hidden = 0`` it is a linear classifier (the default profile's weak prior); with
    ``hidden > 0`` its hidden activations (:meth:`features`) serve as context features.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if hidden > 0:
            self.body = torch.nn.Sequential(torch.nn.Linear(in_dim, 2 * hidden), torch.nn.GELU(),
                                            torch.nn.Linear(2 * hidden, hidden), torch.nn.GELU())
            self.head = torch.nn.Linear(hidden, num_classes)
        else:
            self.body = torch.nn.Identity()
            self.head = torch.nn.Linear(in_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def map(self, descriptors: torch.Tensor, what: str = "probs") -> torch.Tensor:
        """(B, F, h, w) descriptors -> (B, K, h, w) probabilities or (B, D, h, w) features."""
        if what not in ("probs", "features"):
            raise ValueError(f"what must be 'probs' or 'features', got {what!r}")
        if descriptors.ndim != 4:
            raise ValueError(f"descriptors must be (B, F, h, w), got shape {tuple(descriptors.shape)}")
        b, f, h, w = descriptors.shape
        flat = descriptors.permute(0, 2, 3, 1).reshape(-1, f)
        out = torch.softmax(self(flat), dim=-1) if what == "probs" else self.features(flat)
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def standardize_features(features: torch.Tensor) -> torch.Tensor:
    """z-score each dimension over the pool, then unit-normalise each patch (DINO tokens are
    unit-normalised in the public code; the reference mode's unit-norm means assume it)."""
    f = features.float()
    f = (f - f.mean(0)) / f.std(0).clamp_min(1e-6)
    return F.normalize(f, dim=1)
