"""Rendering a layout: optical RGB(+NIR) reflectance and Sentinel-1-like SAR (VV, VH) in dB.

Optical: per-class (and per-object) reflectance from the regional style, multiplicative texture
(pixel grain, tree crowns, crop rows), a linear illumination gradient, building shadows cast
away from the sun, and sensor noise. NIR is high over vegetation and low over water.

SAR: per-class mean backscatter sigma0 in dB (dark specular water, volume scattering in
vegetation with a high VH/VV ratio, bright vehicles), plus double bounce (a bright line on the
building wall facing the sensor, which looks from the west, i.e. from the left of the image) and
radar shadow on the far side (length h * tan(incidence)). The noise-free sigma0 is converted to
linear intensity, a thermal noise floor is added, and it is multiplied by fully developed speckle:
Gamma(shape = L looks, scale = 1 / L), mean 1, so the coefficient of variation of intensity over
a homogeneous area is 1 / sqrt(L) (Goodman's multi-look speckle model). Then back to dB.
Layover is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rslab.data.sar import linear_to_db
from rslab.data.synthetic_layout import (
    BARE,
    BROADLEAF,
    CAR,
    CONIFER,
    CROPLAND,
    GRASSLAND,
    INDUSTRIAL,
    LAKE,
    RESIDENTIAL,
    RIVER,
    ROAD,
    TRUCK,
    Layout,
)

N_LEAVES = 12

# ----------------------------------------------------------------------------- styles
# Each regional style gives every class a reflectance (R, G, B, NIR). Classes with a palette
# draw one named colour per object (roofs, cars, crops), the names feed referring expressions.
_STYLES = [
    dict(
        name="temperate",
        region=(10.0, 48.5),  # (lon, lat) of the region used for georeferencing
        residential=[("red", (0.58, 0.22, 0.17, 0.30)), ("grey", (0.36, 0.36, 0.38, 0.28)),
                     ("brown", (0.42, 0.29, 0.20, 0.30))],
        industrial=[("light grey", (0.70, 0.71, 0.73, 0.45)), ("white", (0.86, 0.86, 0.85, 0.55)),
                    ("blue", (0.28, 0.38, 0.58, 0.30))],
        cropland=[("green", (0.20, 0.42, 0.12, 0.52)), ("yellow", (0.72, 0.64, 0.30, 0.40)),
                  ("brown", (0.40, 0.30, 0.20, 0.32))],
        forest=(0.10, 0.26, 0.09, 0.46), grass=(0.30, 0.50, 0.20, 0.50), water=(0.05, 0.12, 0.17, 0.03),
        road=(0.36, 0.36, 0.37, 0.26), bare=(0.46, 0.36, 0.26, 0.38),
    ),
    dict(
        name="arid",
        region=(-6.5, 31.5),
        residential=[("beige", (0.78, 0.69, 0.54, 0.55)), ("white", (0.90, 0.89, 0.86, 0.66)),
                     ("ochre", (0.72, 0.50, 0.28, 0.52))],
        industrial=[("white", (0.88, 0.88, 0.86, 0.60)), ("light grey", (0.66, 0.66, 0.64, 0.50)),
                    ("rust", (0.55, 0.32, 0.20, 0.42))],
        cropland=[("olive", (0.36, 0.40, 0.18, 0.40)), ("straw", (0.80, 0.70, 0.45, 0.52)),
                  ("green", (0.26, 0.45, 0.16, 0.50))],
        forest=(0.24, 0.28, 0.14, 0.32), grass=(0.55, 0.52, 0.34, 0.42), water=(0.10, 0.30, 0.30, 0.04),
        road=(0.56, 0.51, 0.43, 0.45), bare=(0.80, 0.64, 0.44, 0.58),
    ),
    dict(
        name="tropical",
        region=(104.0, 12.0),
        residential=[("blue", (0.22, 0.38, 0.66, 0.30)), ("red", (0.62, 0.20, 0.18, 0.30)),
                     ("turquoise", (0.20, 0.55, 0.55, 0.32))],
        industrial=[("blue", (0.24, 0.36, 0.62, 0.28)), ("white", (0.84, 0.85, 0.86, 0.55)),
                    ("rust", (0.52, 0.28, 0.16, 0.36))],
        cropland=[("bright green", (0.22, 0.55, 0.14, 0.58)), ("flooded", (0.18, 0.30, 0.26, 0.18)),
                  ("yellow", (0.62, 0.60, 0.26, 0.44))],
        forest=(0.04, 0.22, 0.06, 0.52), grass=(0.22, 0.48, 0.14, 0.55), water=(0.32, 0.26, 0.15, 0.06),
        road=(0.42, 0.34, 0.28, 0.32), bare=(0.62, 0.32, 0.20, 0.42),
    ),
    dict(
        name="boreal",
        region=(18.5, 62.0),
        residential=[("black", (0.14, 0.14, 0.16, 0.18)), ("dark red", (0.40, 0.12, 0.12, 0.24)),
                     ("green", (0.22, 0.36, 0.26, 0.25))],
        industrial=[("grey", (0.50, 0.51, 0.53, 0.38)), ("white", (0.80, 0.81, 0.82, 0.52)),
                    ("dark grey", (0.28, 0.28, 0.30, 0.24))],
        cropland=[("green", (0.18, 0.36, 0.14, 0.48)), ("brown", (0.34, 0.27, 0.19, 0.28)),
                  ("pale yellow", (0.62, 0.60, 0.42, 0.40))],
        forest=(0.06, 0.15, 0.10, 0.34), grass=(0.24, 0.40, 0.20, 0.44), water=(0.03, 0.06, 0.10, 0.02),
        road=(0.30, 0.30, 0.31, 0.22), bare=(0.40, 0.37, 0.33, 0.36),
    ),
]
_VEHICLE_COLOURS = [("white", (0.88, 0.88, 0.88, 0.55)), ("black", (0.08, 0.08, 0.09, 0.12)),
                    ("red", (0.70, 0.10, 0.10, 0.30)), ("blue", (0.12, 0.22, 0.62, 0.22)),
                    ("silver", (0.66, 0.67, 0.70, 0.45)), ("yellow", (0.85, 0.75, 0.12, 0.50))]
_PALETTE_KEY = {RESIDENTIAL: "residential", INDUSTRIAL: "industrial", CROPLAND: "cropland"}


@dataclass
class Style:
    name: str
    region: tuple[float, float]
    base: np.ndarray  # (12, 4) class reflectance
    palettes: dict  # leaf id -> list of (colour name, (4,) reflectance)
    sar_shift_db: float  # soil-moisture shift of the natural classes (dry styles are darker)


def make_styles(n_styles: int, world_seed: int) -> list[Style]:
    """``n_styles`` regional styles: the four designed ones, then perturbed copies of them."""
    out = []
    for k in range(n_styles):
        d = _STYLES[k % len(_STYLES)]
        rng = np.random.default_rng([world_seed, 7919, k])
        jitter = 1.0 if k < len(_STYLES) else rng.uniform(0.8, 1.2, size=(1, 4))
        base = np.zeros((N_LEAVES, 4), np.float32)
        base[[RESIDENTIAL, INDUSTRIAL, CROPLAND]] = [np.mean([c for _, c in d[key]], 0)
                                                     for key in ("residential", "industrial", "cropland")]
        base[BROADLEAF] = d["forest"]
        base[CONIFER] = np.asarray(d["forest"]) * (0.72, 0.85, 0.95, 0.8)
        base[GRASSLAND] = d["grass"]
        base[[RIVER, LAKE]] = d["water"]
        base[LAKE] *= 0.9
        base[ROAD] = d["road"]
        base[BARE] = d["bare"]
        base[[CAR, TRUCK]] = (0.6, 0.6, 0.6, 0.4)
        palettes = {cls: [(n, np.clip(np.asarray(c, np.float32) * jitter, 0, 1)) for n, c in d[key]]
                    for cls, key in _PALETTE_KEY.items()}
        palettes[CAR] = palettes[TRUCK] = [(n, np.asarray(c, np.float32)) for n, c in _VEHICLE_COLOURS]
        name = d["name"] if k < len(_STYLES) else f"{d['name']}-{k // len(_STYLES)}"
        out.append(Style(name, d["region"], np.clip(base * jitter, 0, 1).astype(np.float32), palettes,
                         sar_shift_db={"arid": -2.0, "tropical": 1.0}.get(d["name"], 0.0)))
    return out


@dataclass
class Appearance:
    """Per-object appearance drawn for one rendering: colour names feed the referring text."""

    inst_colour: np.ndarray  # (n+1, 4) reflectance, NaN rows = use the class colour
    inst_colour_name: list[str]  # "" when the object has no named colour


def draw_appearance(layout: Layout, style: Style, rng: np.random.Generator) -> Appearance:
    n = len(layout.inst_class)
    colour = np.full((n, 4), np.nan, np.float32)
    names = [""] * n
    for i in range(1, n):
        pal = style.palettes.get(int(layout.inst_class[i]))
        if pal is None:
            continue
        name, c = pal[int(rng.integers(len(pal)))]
        colour[i] = c * rng.uniform(0.92, 1.08, size=4)
        names[i] = name
    return Appearance(colour, names)


# ----------------------------------------------------------------------------- optical
# texture amplitudes per leaf: (pixel grain, mid-frequency crowns/patches, crop rows)
_GRAIN = np.array([0.03, 0.02, 0.05, 0.02, 0.02, 0.03, 0.03, 0.06, 0.06, 0.04, 0.07, 0.08], np.float32)
_MID = np.array([0.0, 0.0, 0.03, 0.0, 0.0, 0.05, 0.04, 0.38, 0.30, 0.05, 0.12, 0.12], np.float32)
_ROWS = np.zeros(N_LEAVES, np.float32)
_ROWS[CROPLAND] = 0.12


def _building_ids(layout: Layout) -> np.ndarray:
    return np.flatnonzero(np.isin(layout.inst_class, (RESIDENTIAL, INDUSTRIAL)))


def render_optical(layout: Layout, style: Style, app: Appearance, rng: np.random.Generator,
                   nir: bool = True) -> np.ndarray:
    labels, inst = layout.labels, layout.instances
    H, W = labels.shape
    # one gather from a combined table: rows 0..11 class colours, rows 12+i object i's own colour
    has = ~np.isnan(app.inst_colour[:, 0])
    table = np.concatenate([style.base, np.nan_to_num(app.inst_colour)], 0).T.copy()  # (4, 12 + n)
    material = np.where(has[inst], inst + N_LEAVES, labels) if has.any() else labels
    base = np.take(table, material, axis=1)  # (4, H, W)

    # uniform noise (variance 1) is 4x cheaper to draw than Gaussian and looks the same here
    grain = (rng.random((H, W), dtype=np.float32) - np.float32(0.5)) * np.float32(3.464)
    mid = layout.canopy
    rows = np.sin(np.where(layout.parcel_stripe_along_u[layout.parcel_id], layout.u, layout.v)
                  * (2 * np.pi / layout.parcel_stripe_period[layout.parcel_id]))
    tex = 1.0 + _GRAIN[labels] * grain + _MID[labels] * mid + _ROWS[labels] * rows

    # illumination: a gentle linear gradient (sun angle, haze) across the scene
    gy, gx = (float(g) for g in rng.uniform(-0.12, 0.12, size=2))
    illum = (1.0 + gy * np.linspace(-1, 1, H, dtype=np.float32)[:, None]
             + gx * np.linspace(-1, 1, W, dtype=np.float32)[None, :]) * np.float32(rng.uniform(0.9, 1.1))

    # shadows: each building's footprint shifted away from the sun by ~0.8 px per metre of height
    shade = np.ones((H, W), np.float32)
    sun = rng.uniform(0, 2 * np.pi)
    sy, sx = np.sin(sun), np.cos(sun)
    for b in _building_ids(layout):
        y0, y1, x0, x1 = layout.inst_rect[b]
        length = 0.8 * layout.inst_height[b]
        for frac in (0.5, 1.0):
            dy, dx = int(round(sy * length * frac)), int(round(sx * length * frac))
            ya, yb, xa, xb = max(0, y0 + dy), min(H, y1 + dy), max(0, x0 + dx), min(W, x1 + dx)
            if ya < yb and xa < xb:
                shade[ya:yb, xa:xb] = 0.45
    building = (labels == RESIDENTIAL) | (labels == INDUSTRIAL)
    np.copyto(shade, np.float32(1.0), where=building)

    tex *= illum
    tex *= shade
    img = base if nir else base[:3]
    img *= tex[None]
    noise = np.empty((H, W), np.float32)
    for band in img:  # per band: sensor noise without a full (C, H, W) temporary
        rng.random(dtype=np.float32, out=noise)
        noise -= np.float32(0.5)
        noise *= np.float32(0.008 * 3.464)
        band += noise
    np.clip(img, 0.0, 1.0, out=img)
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------- SAR
# Mean sigma0 (dB) per leaf, (VV, VH): C-band values typical of Sentinel-1 IW at ~35 deg.
SAR_MEAN_DB = np.array([
    [-6.0, -14.0],  # residential building (roof; walls add double bounce)
    [-4.0, -13.0],  # industrial building (metal roofs)
    [-15.0, -25.0],  # road: smooth asphalt, mostly specular
    [0.0, -8.0],  # car: metal, bright
    [1.0, -7.0],  # truck
    [-22.0, -31.0],  # river: specular water, dark
    [-23.0, -32.0],  # lake: calmer, darker
    [-7.0, -11.0],  # broadleaf forest: volume scattering, high VH/VV
    [-7.5, -11.5],  # conifer forest
    [-9.5, -14.5],  # cropland
    [-10.5, -16.0],  # grassland
    [-12.0, -21.0],  # bare soil: surface scattering, low VH/VV
], np.float32).T.copy()  # (2, 12)
_SAR_TEXTURE_DB = np.array([1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.6, 1.4, 0.6, 0.6, 0.8], np.float32)
_NATURAL = np.zeros(N_LEAVES, np.float32)
_NATURAL[[CROPLAND, GRASSLAND, BARE, BROADLEAF, CONIFER]] = 1.0
DOUBLE_BOUNCE_DB = (11.0, 5.0)  # added at the sensor-facing wall, (VV, VH): co-pol dominated
NOISE_FLOOR_DB = -31.0  # thermal noise equivalent sigma0
INCIDENCE_DEG = 35.0


def apply_speckle(intensity: np.ndarray, n_looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply linear intensity by L-look speckle: Gamma(shape=L, scale=1/L), mean 1, CV 1/sqrt(L)."""
    if not n_looks > 0:
        raise ValueError(f"n_looks must be > 0, got {n_looks}")
    if float(n_looks).is_integer() and n_looks <= 8:
        # exact and ~2x faster than standard_gamma: a sum of L unit exponentials is Gamma(L, 1),
        # i.e. -log of a product of L uniforms on (0, 1] (at most 4 per product: no underflow)
        L = int(n_looks)
        speckle = np.zeros(intensity.shape, np.float32)
        prod = np.empty(intensity.shape, np.float32)
        u = np.empty(intensity.shape, np.float32)
        for start in range(0, L, 4):
            rng.random(dtype=np.float32, out=prod)
            np.subtract(np.float32(1.0), prod, out=prod)  # uniform on (0, 1]
            for _ in range(min(4, L - start) - 1):
                rng.random(dtype=np.float32, out=u)
                np.subtract(np.float32(1.0), u, out=u)
                prod *= u
            speckle -= np.log(prod, out=prod)
    else:
        speckle = rng.standard_gamma(np.float32(n_looks), size=intensity.shape, dtype=np.float32)
    speckle *= np.float32(1.0 / n_looks)
    return intensity * speckle


def render_sar(layout: Layout, style: Style, rng: np.random.Generator, n_looks: float,
               gsd_m: float = 1.0) -> np.ndarray:
    labels, inst = layout.labels, layout.instances
    H, W = labels.shape
    n = len(layout.inst_class)
    inst_offset = rng.normal(0.0, 1.2, size=n).astype(np.float32)  # per-object roughness/moisture
    inst_offset[0] = 0.0
    inst_offset[layout.inst_class == LAKE] *= 0.3
    texture = layout.canopy  # the same crowns and furrows that texture the optical image
    db = np.take(SAR_MEAN_DB, labels, axis=1)  # (2, H, W)
    db += (inst_offset[inst] + _SAR_TEXTURE_DB[labels] * texture + style.sar_shift_db * _NATURAL[labels])[None]

    # Double bounce and radar shadow; the sensor looks east from the west (left) side.
    shadow_factor = np.tan(np.deg2rad(INCIDENCE_DEG)) / gsd_m
    vv_boost, vh_boost = DOUBLE_BOUNCE_DB
    building = (labels == RESIDENTIAL) | (labels == INDUSTRIAL)
    shadow = np.zeros((H, W), bool)
    for b in _building_ids(layout):
        y0, y1, x0, x1 = layout.inst_rect[b]
        wall = slice(x0, min(x1, x0 + 2))
        db[0, y0:y1, wall] += vv_boost
        db[1, y0:y1, wall] += vh_boost
        length = int(round(layout.inst_height[b] * shadow_factor))
        if length > 0 and x1 < W:
            shadow[y0:y1, x1 : min(W, x1 + length)] = True
    shadow &= ~building
    np.copyto(db, np.float32(NOISE_FLOOR_DB - 10.0), where=shadow[None])  # no return: only the noise floor remains

    intensity = np.exp(db * np.float32(np.log(10.0) / 10.0))  # 10^(dB/10), exp is faster than power
    intensity += np.float32(10.0 ** (NOISE_FLOOR_DB / 10.0))
    return linear_to_db(apply_speckle(intensity, n_looks, rng)).astype(np.float32, copy=False)
