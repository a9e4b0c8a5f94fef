"""SAR and optical images -> displayable RGB arrays (H, W, 3) float32 in [0, 1].

SAR is displayed in dB, clipped to :data:`rslab.data.sar.SAR_DB_RANGE` (the same range the
models see), so a grey level means the same backscatter in every figure of the suite.
"""

from __future__ import annotations

import numpy as np

from rslab.data.sar import SAR_DB_RANGE, sar_valid_mask

#: Colour of nodata (NaN) pixels. Cyan cannot occur in a grey single-channel image nor in the
#: VV/VH/ratio composite (R = 0 and G = 1 need VH far above VV, a negative ratio, so B = 0),
#: so nodata never looks like data.
NODATA_COLOR: tuple[float, float, float] = (0.0, 1.0, 1.0)

#: Display range of the VV/VH ratio (VV_dB - VH_dB) in the false-colour composite. Most land
#: sits near 5-10 dB; vegetation (strong VH volume scattering) lower, double bounce higher.
RATIO_DB_RANGE: tuple[float, float] = (0.0, 15.0)

#: In the composite only, VH is stretched over SAR_DB_RANGE shifted down by this many dB: the
#: cross-polarised return is typically ~7 dB below VV, and without the shift the green channel
#: stays dark and every scene looks purple. Single-channel views use SAR_DB_RANGE unchanged.
COMPOSITE_VH_SHIFT_DB: float = 7.0

SAR_DISPLAY_CHANNELS = ("VV", "VH", "rgb")


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def sar_to_display(
    sar_db: np.ndarray,
    channel: str = "VV",
    db_range: tuple[float, float] = SAR_DB_RANGE,
    nodata_color: tuple[float, float, float] = NODATA_COLOR,
) -> np.ndarray:
    """SAR (2, H, W) in dB (VV, VH) -> (H, W, 3) float32 RGB in [0, 1] for ``imshow``.

    ``channel="VV"`` or ``"VH"``: grey level = linear stretch of the clipped dB value.
    ``channel="rgb"``: the usual Sentinel-1 false colour R = VV, G = VH, B = VV/VH ratio
    (VV - VH in dB, from the clipped channels), so vegetation (volume scattering, high VH)
    looks green-yellow, water dark and built-up (double bounce, high VV and high ratio)
    magenta-white. VH is stretched over ``db_range`` shifted by :data:`COMPOSITE_VH_SHIFT_DB`,
    the ratio over :data:`RATIO_DB_RANGE`.
    NaN (nodata) pixels get ``nodata_color``.
    """
    if not isinstance(sar_db, np.ndarray):
        raise ValueError(f"sar_db must be a numpy array (2, H, W) in dB, got {type(sar_db).__name__}; "
                         "call .numpy() on tensors first.")
    if sar_db.ndim != 3 or sar_db.shape[0] != 2:
        raise ValueError(f"sar_db must have shape (2, H, W) with channels (VV, VH), got {sar_db.shape}.")
    if channel not in SAR_DISPLAY_CHANNELS:
        raise ValueError(f"channel must be one of {SAR_DISPLAY_CHANNELS}, got {channel!r}.")
    lo, hi = float(db_range[0]), float(db_range[1])
    if not hi > lo:
        raise ValueError(f"db_range must be (low, high) with high > low, got {db_range}.")

    valid = sar_valid_mask(sar_db)
    db = np.where(np.isfinite(sar_db), sar_db, lo).astype(np.float32)
    clipped = np.clip(db, lo, hi)
    if channel == "rgb":
        vv = clipped[0]
        vh = np.clip(db[1], lo - COMPOSITE_VH_SHIFT_DB, hi - COMPOSITE_VH_SHIFT_DB)
        out = np.stack(
            [
                _stretch(vv, lo, hi),
                _stretch(vh, lo - COMPOSITE_VH_SHIFT_DB, hi - COMPOSITE_VH_SHIFT_DB),
                _stretch(vv - vh, *RATIO_DB_RANGE),
            ],
            axis=-1,
        )
    else:
        grey = _stretch(clipped[0 if channel == "VV" else 1], lo, hi)
        out = np.repeat(grey[..., None], 3, axis=-1)
    out[~valid] = np.asarray(nodata_color, dtype=np.float32)
    return out.astype(np.float32)


def optical_to_display(optical: np.ndarray, percentile: tuple[float, float] | None = None) -> np.ndarray:
    """Optical (C, H, W) -> (H, W, 3) float32 RGB in [0, 1].

    C = 3 or 4 (RGB[+NIR]): the first three channels. C = 13 (Sentinel-2 B1..B12): bands B4, B3, B2.
    ``percentile=(2, 98)`` stretches each band between those percentiles (top-of-atmosphere
    reflectance is dim, ~0-0.3, and looks black without it); the default applies it only to
    13-band input and just clips otherwise.
    """
    if not isinstance(optical, np.ndarray) or optical.ndim != 3:
        raise ValueError(f"optical must be a numpy array (C, H, W), got "
                         f"{getattr(optical, 'shape', type(optical).__name__)}.")
    c = optical.shape[0]
    if c in (3, 4):
        rgb = optical[:3]
    elif c == 13:
        rgb = optical[[3, 2, 1]]
        percentile = percentile or (2.0, 98.0)
    elif c == 1:
        rgb = np.repeat(optical, 3, axis=0)
    else:
        raise ValueError(f"optical must have 1, 3, 4 (RGB+NIR) or 13 (Sentinel-2) channels, got {c}.")
    rgb = np.nan_to_num(rgb.astype(np.float32), nan=0.0)
    if percentile is not None:
        lo_p, hi_p = percentile
        if not 0 <= lo_p < hi_p <= 100:
            raise ValueError(f"percentile must be (low, high) with 0 <= low < high <= 100, got {percentile}.")
        lo = np.percentile(rgb, lo_p, axis=(1, 2), keepdims=True)
        hi = np.percentile(rgb, hi_p, axis=(1, 2), keepdims=True)
        rgb = (rgb - lo) / np.maximum(hi - lo, 1e-6)
    return np.clip(rgb, 0.0, 1.0).transpose(1, 2, 0).copy()
