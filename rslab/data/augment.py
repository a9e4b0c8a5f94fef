"""SAR augmentations and paired (optical + SAR) geometric augmentations, batched in torch.

All functions take SAR in dB, ``(2, H, W)`` or ``(B, 2, H, W)`` (VV, VH), NaN = nodata, and keep
NaN where it was: nodata is never invented or filled here; the encoder masks it
(:func:`rslab.models.encoders.preprocess_sar`). Clip range and normalisation live in
:mod:`rslab.data.sar` only; nothing here clips.

Randomness comes from torch's global generator (seed it with ``torch.manual_seed``), because
``torch.distributions.Gamma`` (the speckle draw) accepts no ``Generator``.

Radiometric:
- :func:`resample_speckle`: re-draw the speckle at another number of looks. The underlying
  backscatter is estimated by a local mean in linear power (the multi-look estimate, exact on
  homogeneous areas), then multiplied by fresh unit-mean Gamma(L, 1/L) speckle -- the standard
  fully-developed speckle model. Lower L = noisier.
- :func:`jitter_db_offset`: add a per-image calibration offset in dB.

Optical:
- :func:`colour_jitter`: a random gain and offset per image and band, as between two regions or
  two acquisition dates (the synthetic world's regional styles differ like this).

Geometric (applied identically to every co-registered tensor of a sample):
- :func:`paired_dihedral`: random flips and 90-degree rotations.
- :func:`paired_random_crop`: one random window per sample, shared across modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rslab.data.sar import db_to_linear, linear_to_db


def _as_batch(sar_db: torch.Tensor, name: str = "sar_db") -> tuple[torch.Tensor, bool]:
    if not isinstance(sar_db, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(sar_db).__name__}; use torch.from_numpy().")
    if sar_db.ndim == 3:
        sar_db = sar_db.unsqueeze(0)
        squeeze = True
    elif sar_db.ndim == 4:
        squeeze = False
    else:
        raise ValueError(f"{name} must be (2, H, W) or (B, 2, H, W), got shape {tuple(sar_db.shape)}")
    if sar_db.shape[1] != 2:
        raise ValueError(f"{name} must have 2 channels (VV, VH) in dB, got {sar_db.shape[1]} "
                         f"(shape {tuple(sar_db.shape)})")
    return sar_db.float(), squeeze


def _per_sample(value: float | tuple[float, float], batch: int, device) -> torch.Tensor:
    """A scalar, or uniform draws in [lo, hi] per sample."""
    if isinstance(value, (tuple, list)):
        lo, hi = value
        if hi < lo:
            raise ValueError(f"range must be (low, high), got {value}")
        return lo + (hi - lo) * torch.rand(batch, device=device)
    return torch.full((batch,), float(value), device=device)


def local_mean(x: torch.Tensor, window: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Box-filter mean over ``window x window`` (odd), reflect padding, ignoring invalid pixels."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd size >= 1, got {window}")
    if window == 1:
        return x
    pad = window // 2
    if valid is None:
        return F.avg_pool2d(F.pad(x, (pad,) * 4, mode="reflect"), window, stride=1)
    w = valid.to(x.dtype)
    num = F.avg_pool2d(F.pad(torch.where(valid, x, 0.0), (pad,) * 4, mode="reflect"), window, stride=1)
    den = F.avg_pool2d(F.pad(w, (pad,) * 4, mode="reflect"), window, stride=1)
    return num / den.clamp_min(1e-6)


def resample_speckle(
    sar_db: torch.Tensor, looks: float | tuple[float, float] = (2.0, 8.0), window: int = 5
) -> torch.Tensor:
    """Replace the speckle of ``sar_db`` by fresh speckle of ``looks`` looks (a number, or a
    (low, high) range drawn per image). Returns dB with the input's shape; NaN stays NaN."""
    x, squeeze = _as_batch(sar_db)
    if (min(looks) if isinstance(looks, (tuple, list)) else looks) <= 0:
        raise ValueError(f"looks must be > 0, got {looks}")
    valid = torch.isfinite(x)
    power = db_to_linear(torch.where(valid, x, -100.0))
    mean = local_mean(power, window, valid)
    L = _per_sample(looks, x.shape[0], x.device).view(-1, 1, 1, 1).expand_as(x)
    speckle = torch.distributions.Gamma(L, L).sample()  # unit mean, variance 1/L
    out = linear_to_db(mean * speckle)
    out = torch.where(valid, out, torch.nan)
    return out[0] if squeeze else out


def jitter_db_offset(sar_db: torch.Tensor, max_offset_db: float = 1.0, per_channel: bool = False) -> torch.Tensor:
    """Add a uniform offset in [-max, max] dB per image (and per channel if asked). NaN stays NaN."""
    if max_offset_db < 0:
        raise ValueError(f"max_offset_db must be >= 0, got {max_offset_db}")
    x, squeeze = _as_batch(sar_db)
    shape = (x.shape[0], 2 if per_channel else 1, 1, 1)
    out = x + (torch.rand(shape, device=x.device) * 2 - 1) * max_offset_db
    return out[0] if squeeze else out


def _check_paired(tensors: list[torch.Tensor]) -> tuple[int, tuple[int, int]]:
    if not tensors:
        raise ValueError("pass at least one tensor")
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.ndim not in (3, 4):
            raise ValueError(f"paired tensors must be (B, C, H, W) or (B, H, W), got {getattr(t, 'shape', type(t))}")
    sizes = {tuple(t.shape[-2:]) for t in tensors}
    batches = {t.shape[0] for t in tensors}
    if len(sizes) != 1 or len(batches) != 1:
        raise ValueError(
            f"co-registered tensors disagree in batch or size: {[tuple(t.shape) for t in tensors]}; "
            "optical, SAR and labels of a sample must share (H, W)."
        )
    return batches.pop(), sizes.pop()


def paired_dihedral(*tensors: torch.Tensor, flips: bool = True, rot90: bool = True) -> list[torch.Tensor]:
    """Apply the same random flip / 90-degree rotation per sample to every tensor (batched).

    Tensors are ``(B, C, H, W)`` or ``(B, H, W)`` (labels). Rotations need square images.
    """
    batch, (h, w) = _check_paired(list(tensors))
    if rot90 and h != w:
        raise ValueError(f"rot90 needs square images, got {h}x{w}; pass rot90=False.")
    k = torch.randint(0, 4, (batch,)) if rot90 else torch.zeros(batch, dtype=torch.long)
    flip = torch.rand(batch) < 0.5 if flips else torch.zeros(batch, dtype=torch.bool)
    out = []
    for t in tensors:
        rows = []
        for i in range(batch):
            r = t[i]
            if flip[i]:
                r = r.flip(-1)
            if k[i]:
                r = torch.rot90(r, int(k[i]), dims=(-2, -1))
            rows.append(r)
        out.append(torch.stack(rows))
    return out


def paired_random_crop(*tensors: torch.Tensor, size: int) -> list[torch.Tensor]:
    """One random ``size x size`` window per sample, the same for every tensor."""
    batch, (h, w) = _check_paired(list(tensors))
    if not 0 < size <= min(h, w):
        raise ValueError(f"crop size must be in (0, {min(h, w)}], got {size}")
    ys = torch.randint(0, h - size + 1, (batch,))
    xs = torch.randint(0, w - size + 1, (batch,))
    return [
        torch.stack([t[i, ..., y : y + size, x : x + size] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
        for t in tensors
    ]


def colour_jitter(optical: torch.Tensor, strength: float = 0.3) -> torch.Tensor:
    """Per image and band: ``x * gain + offset``, gain in [1 - s, 1 + s], offset in [-s/4, s/4],
    clipped to [0, 1]. Optical ``(B, C, H, W)`` in [0, 1]; ``strength`` s in [0, 1)."""
    if optical.ndim != 4:
        raise ValueError(f"optical must be (B, C, H, W), got shape {tuple(optical.shape)}")
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    if strength == 0:
        return optical
    b, c = optical.shape[:2]
    gain = 1.0 + strength * (2 * torch.rand(b, c, 1, 1, device=optical.device) - 1)
    offset = 0.25 * strength * (2 * torch.rand(b, c, 1, 1, device=optical.device) - 1)
    return (optical * gain + offset).clamp(0.0, 1.0)


@dataclass
class SARViewAugment:
    """Makes the inputs of one image-level alignment step (SkySense-VITA stage 1).

    ``__call__(optical, sar_db) -> (optical_a, sar_a, sar_b)``: view a shares one random crop and
    flip/rotation with the optical image (so L_CMA compares co-registered content); view b gets its
    own crop and flip/rotation. Both SAR views get fresh speckle at ``looks`` looks and a dB offset.

    Attributes:
        crop: crop size in pixels (a multiple of the encoder's patch size), or None for no crop.
        looks: range of looks for speckle re-sampling, or None to keep the original speckle.
        speckle_window: box size of the local-mean estimate used before re-drawing speckle.
        max_offset_db: calibration jitter in dB.
        flips, rot90: geometric augmentations.
    """

    crop: int | None = 48
    looks: tuple[float, float] | None = (3.0, 12.0)
    speckle_window: int = 3
    max_offset_db: float = 1.0
    flips: bool = True
    rot90: bool = True

    def radiometric(self, sar_db: torch.Tensor) -> torch.Tensor:
        if self.looks is not None:
            sar_db = resample_speckle(sar_db, self.looks, self.speckle_window)
        if self.max_offset_db > 0:
            sar_db = jitter_db_offset(sar_db, self.max_offset_db)
        return sar_db

    def geometric(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        out = list(tensors)
        if self.crop is not None:
            out = paired_random_crop(*out, size=self.crop)
        if self.flips or self.rot90:
            out = paired_dihedral(*out, flips=self.flips, rot90=self.rot90)
        return out

    def __call__(self, optical: torch.Tensor, sar_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if optical.ndim != 4 or sar_db.ndim != 4:
            raise ValueError(f"expected batches (B, C, H, W), got optical {tuple(optical.shape)}, "
                             f"sar {tuple(sar_db.shape)}")
        _check_paired([optical, sar_db])
        _as_batch(sar_db)
        optical_a, sar_a = self.geometric(optical, sar_db)
        (sar_b,) = self.geometric(sar_db)
        return optical_a, self.radiometric(sar_a), self.radiometric(sar_b)
