"""SAR conventions, stated once for the whole suite.

SAR images are stored and passed around in decibels (dB), channels ``(VV, VH)``.
Models never see raw dB: :func:`normalize_sar` clips to :data:`SAR_DB_RANGE`
and maps linearly to ``[-1, 1]``. NaN is the nodata value of real products
(Sen1Floods11); :func:`sar_valid_mask` finds it so callers can mask it out
instead of training on it. ``-inf`` dB (zero power) is nodata too; ``+inf`` is refused.
Files are checked when read (:func:`rslab.data.readers.checks.sar_to_db`: linear power is
converted to dB with a warning, implausible dB ranges are refused).
"""

from __future__ import annotations

import numpy as np
import torch

#: Clip range in dB for both channels. Sentinel-1 GRD backscatter over land and
#: water lies almost entirely in this range; brighter double-bounce returns saturate.
SAR_DB_RANGE: tuple[float, float] = (-30.0, 5.0)
SAR_CHANNELS: tuple[str, str] = ("VV", "VH")


def _check_sar(x, name: str = "sar") -> None:
    if x.ndim < 3 or x.shape[-3] != 2:
        raise ValueError(
            f"{name} must have 2 channels (VV, VH) at dim -3, got shape {tuple(x.shape)}; "
            "pass SAR in dB as (2, H, W) or (B, 2, H, W)."
        )


def sar_valid_mask(sar_db):
    """Boolean mask (..., H, W), True where both channels are finite."""
    _check_sar(sar_db)
    if isinstance(sar_db, torch.Tensor):
        return torch.isfinite(sar_db).all(dim=-3)
    return np.isfinite(sar_db).all(axis=-3)


def normalize_sar(sar_db, db_range: tuple[float, float] = SAR_DB_RANGE, nodata_value: float = 0.0):
    """dB -> [-1, 1] after clipping to ``db_range``; NaN and ``-inf`` (nodata) become ``nodata_value``.

    Works on numpy arrays and torch tensors, shape (2, H, W) or (B, 2, H, W). ``+inf`` is
    refused (clipping would turn it into the brightest valid backscatter).
    """
    _check_sar(sar_db)
    lo, hi = db_range
    if not hi > lo:
        raise ValueError(f"db_range must be (low, high) with high > low, got {db_range}")
    is_torch = isinstance(sar_db, torch.Tensor)
    sar_db = sar_db if is_torch else np.asarray(sar_db)
    # a tensor on the `meta` device has shapes but no values to check (device-placement tests use it)
    has_values = not (is_torch and sar_db.device.type == "meta")
    n_posinf = int((torch.isposinf if is_torch else np.isposinf)(sar_db).sum()) if has_values else 0
    if n_posinf:
        raise ValueError(f"sar has {n_posinf} +inf value(s); not a backscatter in dB. "
                         "Set them to NaN (nodata) or fix the source.")
    if is_torch:
        sar_db = sar_db.masked_fill(torch.isneginf(sar_db), float("nan"))
        out = (sar_db.clamp(lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
        return torch.nan_to_num(out, nan=nodata_value)
    if np.isneginf(sar_db).any():
        sar_db = np.where(np.isneginf(sar_db), np.nan, sar_db)
    out = (np.clip(sar_db, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
    return np.nan_to_num(out, nan=nodata_value).astype(np.float32)


def db_to_linear(sar_db):
    return 10.0 ** (sar_db / 10.0)


def _nanmin(x) -> float:
    """Smallest non-NaN value (0.0 for empty or all-NaN input)."""
    if isinstance(x, torch.Tensor):
        v = x[~torch.isnan(x)] if x.is_floating_point() else x
        return float(v.min()) if v.numel() else 0.0
    a = np.asarray(x)
    if a.dtype.kind == "f":
        a = a[~np.isnan(a)]
    return float(a.min()) if a.size else 0.0


def linear_to_db(intensity, eps: float = 1e-6):
    """Linear power -> dB, ``10 log10(max(intensity, eps))``; NaN stays NaN.

    Power is never negative: values below -1e-3 mean the input is already in dB and are refused
    (tiny negative values from interpolation round-off are clamped to ``eps`` like zeros).
    """
    low = _nanmin(intensity)
    if low < -1e-3:
        raise ValueError(f"linear_to_db: intensity has negative values (min {low:g}); linear power is >= 0. "
                         "Is the input already in dB?")
    if isinstance(intensity, torch.Tensor):
        return 10.0 * torch.log10(intensity.clamp_min(eps))
    return 10.0 * np.log10(np.maximum(intensity, eps))
