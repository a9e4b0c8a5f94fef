"""The synthetic optical + SAR world: procedural, co-registered, labelled scenes in milliseconds.

No dataset can be downloaded in the default tutorial, so the notebooks train on scenes rendered
here. Each scene has:

- a layout with spatial structure (:mod:`rslab.data.synthetic_layout`): field parcels, forests,
  a meandering river, lakes, settlements with road grids, residential houses and industrial halls,
  vehicles on the roads; leaf labels of the ``synthetic`` semantic tree (depth 3) and instance ids;
- a regional style (``meta["style"]``): the same class looks different per region (roof and crop
  colours, water tint, vegetation hue), the intra-class variance visual prompts exist for;
- optical RGB+NIR reflectance and SAR VV/VH in dB with L-look Gamma speckle
  (:mod:`rslab.data.synthetic_render`);
- a caption and referring expressions with masks (:mod:`rslab.data.synthetic_text`);
- deterministic georeference bounds in EPSG:4326 within the style's region.

Determinism: ``SyntheticWorld(config, seed).scene(index)`` depends only on (seed, index, config and
the keyword overrides). Independent random streams are used for layout, style/scene type,
appearance, SAR and text, so that re-rendering a scene with another ``style`` keeps its labels,
and another ``n_looks`` changes only the speckle.

Command line: ``python -m rslab.data.synthetic --out data_samples --n 4`` writes PNG previews
and ``.npz`` files (read them back with :func:`load_sample_npz`).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rslab.data.sample import IGNORE_INDEX, ReferringExpression, Sample
from rslab.data.sar import normalize_sar
from rslab.data.synthetic_layout import LEAF_NAMES, SCENE_TYPES, make_layout
from rslab.data.synthetic_render import apply_speckle, draw_appearance, make_styles, render_optical, render_sar
from rslab.data.synthetic_text import make_caption, make_referring
from rslab.data.tree import SemanticTree, load_tree

__all__ = ["WorldConfig", "SyntheticWorld", "apply_speckle", "save_sample_npz", "load_sample_npz", "preview_image"]

_METRES_PER_DEG = 111_320.0
# random-stream tags: one independent generator per stage of a scene
_LAYOUT, _CHOICE, _OPTICAL, _SAR, _TEXT, _GEO = range(6)


@dataclass
class WorldConfig:
    """Settings of a synthetic world.

    size: scene side in pixels; nir: add a 4th (NIR) optical channel; n_looks: SAR looks L
    (speckle CV = 1/sqrt(L)); n_styles: regional styles (4 designed ones, more are perturbed
    copies); gsd_m: ground sampling distance in metres (georeference, radar shadow length);
    scene_type_probs: probabilities of ("rural", "suburban", "urban") scenes; max_referring:
    referring expressions per scene; text_split: "train" or "heldout" synonyms in text.
    """

    size: int = 256
    nir: bool = True
    n_looks: float = 4.0
    n_styles: int = 4
    gsd_m: float = 1.0
    scene_type_probs: tuple[float, float, float] = (0.35, 0.35, 0.30)
    max_referring: int = 8
    text_split: str = "train"

    def __post_init__(self):
        if not isinstance(self.size, (int, np.integer)) or self.size < 64:
            raise ValueError(f"size must be an int >= 64 pixels, got {self.size!r}.")
        if not self.n_looks > 0:
            raise ValueError(f"n_looks must be > 0 (1 = single-look, 4 = typical GRD), got {self.n_looks!r}.")
        if not isinstance(self.n_styles, (int, np.integer)) or self.n_styles < 1:
            raise ValueError(f"n_styles must be an int >= 1, got {self.n_styles!r}.")
        if not self.gsd_m > 0:
            raise ValueError(f"gsd_m must be > 0 metres, got {self.gsd_m!r}.")
        probs = np.asarray(self.scene_type_probs, float)
        if probs.shape != (3,) or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"scene_type_probs must be 3 non-negative weights (rural, suburban, urban), "
                             f"got {self.scene_type_probs!r}.")
        if self.text_split not in ("train", "heldout"):
            raise ValueError(f"text_split must be 'train' or 'heldout', got {self.text_split!r}.")
        if self.max_referring < 0:
            raise ValueError(f"max_referring must be >= 0, got {self.max_referring!r}.")


class SyntheticWorld:
    """A deterministic generator of co-registered optical/SAR scenes with labels and text.

    >>> world = SyntheticWorld(WorldConfig(size=128), seed=0)
    >>> s = world.scene(3)
    >>> s.optical.shape, s.sar.shape, s.labels.shape
    ((4, 128, 128), (2, 128, 128), (128, 128))
    """

    tree_name = "synthetic"

    def __init__(self, config: WorldConfig | None = None, seed: int = 0):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        self.config = config if config is not None else WorldConfig()
        if not isinstance(self.config, WorldConfig):
            raise ValueError(f"config must be a WorldConfig, got {type(self.config).__name__}.")
        self.seed = int(seed)
        self.tree: SemanticTree = load_tree(self.tree_name)
        names = tuple(leaf.name for leaf in self.tree.leaves)
        if names != LEAF_NAMES:  # the renderer hard-codes the leaf ids of synthetic.yaml
            raise ValueError(f"synthetic.yaml leaves {names} no longer match the renderer's {LEAF_NAMES}; "
                             "update both together.")
        self.styles = make_styles(self.config.n_styles, self.seed)

    # ------------------------------------------------------------------ helpers
    @property
    def style_names(self) -> list[str]:
        return [s.name for s in self.styles]

    @property
    def num_classes(self) -> int:
        return self.tree.num_classes()

    def _rng(self, index: int, stream: int, tag: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index, stream, tag])

    def bounds(self, index: int, size: int | None = None, style: int | None = None,
               tag: int = 0) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees: a scene centred near its style's region."""
        size = self.config.size if size is None else size
        if style is None:
            style = self._choose(index, tag)[1]
        lon0, lat0 = self.styles[style].region
        rng = self._rng(index, _GEO, tag)
        lat = lat0 + rng.uniform(-3, 3)
        lon = lon0 + rng.uniform(-4, 4)
        half_lat = size * self.config.gsd_m / 2 / _METRES_PER_DEG
        half_lon = half_lat / math.cos(math.radians(lat))
        return (lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)

    def _choose(self, index: int, tag: int) -> tuple[str, int]:
        rng = self._rng(index, _CHOICE, tag)
        p = np.asarray(self.config.scene_type_probs, float)
        scene_type = ("rural", "suburban", "urban")[int(rng.choice(3, p=p / p.sum()))]
        return scene_type, int(rng.integers(self.config.n_styles))

    # ------------------------------------------------------------------ scenes
    def scene(self, index: int, style: int | None = None, size: int | None = None, n_looks: float | None = None,
              scene_type: str | None = None, text_split: str | None = None, _tag: int = 0) -> Sample:
        """Scene number ``index`` (any non-negative int). Overrides keep everything else fixed:
        another ``style`` re-renders the same layout; another ``n_looks`` changes only speckle."""
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be a non-negative int, got {index!r}.")
        cfg = self.config
        size = cfg.size if size is None else size
        if not isinstance(size, (int, np.integer)) or size < 64:
            raise ValueError(f"size must be an int >= 64, got {size!r}.")
        n_looks = cfg.n_looks if n_looks is None else n_looks
        if not n_looks > 0:
            raise ValueError(f"n_looks must be > 0, got {n_looks!r}.")
        text_split = cfg.text_split if text_split is None else text_split
        if text_split not in ("train", "heldout"):
            raise ValueError(f"text_split must be 'train' or 'heldout', got {text_split!r}.")
        chosen_type, chosen_style = self._choose(index, _tag)
        scene_type = chosen_type if scene_type is None else scene_type
        if scene_type not in SCENE_TYPES:
            raise ValueError(f"scene_type must be one of {SCENE_TYPES}, got {scene_type!r}.")
        style = chosen_style if style is None else style
        if not isinstance(style, (int, np.integer)) or not 0 <= style < cfg.n_styles:
            raise ValueError(f"style must be an int in 0..{cfg.n_styles - 1}, got {style!r}.")
        st = self.styles[style]

        layout = make_layout(self._rng(index, _LAYOUT, _tag), int(size), scene_type)
        rng_opt = self._rng(index, _OPTICAL, _tag)
        app = draw_appearance(layout, st, rng_opt)
        optical = render_optical(layout, st, app, rng_opt, nir=cfg.nir)
        sar = render_sar(layout, st, self._rng(index, _SAR, _tag), float(n_looks), cfg.gsd_m)
        rng_txt = self._rng(index, _TEXT, _tag)
        caption = make_caption(layout, self.tree, rng_txt, text_split)
        referring = make_referring(layout, app, self.tree, rng_txt, text_split, cfg.max_referring)
        meta = dict(
            source="synthetic", seed=self.seed, index=int(index), style=int(style), style_name=st.name,
            scene_type=scene_type, n_looks=float(n_looks), gsd_m=cfg.gsd_m, tree=self.tree_name,
            text_split=text_split, large=bool(_tag), sar_look_direction="east",
            instance_class=layout.inst_class.copy(),  # leaf id per instance id (row 0: none)
            instance_colour=list(app.inst_colour_name),
        )
        return Sample(
            optical=optical, sar=sar, labels=layout.labels.astype(np.int64), instances=layout.instances,
            caption=caption, referring=referring, bounds=self.bounds(index, size, style, _tag), meta=meta,
        )

    def large_scene(self, size: int = 2048, index: int = 0, style: int | None = None,
                    n_looks: float | None = None) -> Sample:
        """A large mixed scene (several settlements, river, lakes, fields) for tiled inference.

        Memory: about 50 bytes per pixel in the returned arrays (~200 MB at 2048 px) plus
        transient work arrays of similar size. Drawn from random streams separate from ``scene``.
        """
        if not isinstance(size, (int, np.integer)) or size < 256:
            raise ValueError(f"large_scene size must be an int >= 256, got {size!r}; use scene() for small ones.")
        return self.scene(index, style=style, size=int(size), n_looks=n_looks, scene_type="mixed", _tag=1)

    def scenes(self, n: int, start: int = 0, **overrides) -> Iterator[Sample]:
        """Scenes ``start .. start + n - 1``."""
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}.")
        for i in range(start, start + n):
            yield self.scene(i, **overrides)

    def __repr__(self) -> str:
        return f"SyntheticWorld(seed={self.seed}, {self.config})"


# ----------------------------------------------------------------------------- sample IO
def save_sample_npz(sample: Sample, path: str | Path, half: bool = True) -> Path:
    """Save a Sample to ``.npz`` (images as float16 when ``half``, to keep files small)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dt = np.float16 if half else np.float32
    arrays = dict(optical=sample.optical.astype(dt), sar=sample.sar.astype(dt), labels=sample.labels.astype(np.uint8),
                  instances=sample.instances.astype(np.int32), caption=np.array(sample.caption),
                  bounds=np.asarray(sample.bounds, np.float64),
                  ref_text=np.array([r.text for r in sample.referring] or [""])[: len(sample.referring)],
                  ref_class=np.array([r.target_class for r in sample.referring] or [""])[: len(sample.referring)],
                  ref_instance=np.array([r.instance_id for r in sample.referring], np.int32),
                  meta_json=np.array(_meta_json(sample.meta)))
    np.savez_compressed(path, **arrays)
    return path


def _meta_json(meta: dict) -> str:
    return json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()})


def load_sample_npz(path: str | Path) -> Sample:
    """Read a file written by :func:`save_sample_npz` back into a Sample (float32 images)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; write samples with `python -m rslab.data.synthetic --out DIR`.")
    z = np.load(path)
    inst = z["instances"]
    refs = [ReferringExpression(str(t), inst == i, str(c), int(i))
            for t, c, i in zip(z["ref_text"], z["ref_class"], z["ref_instance"])]
    labels = z["labels"].astype(np.int64)
    return Sample(optical=z["optical"].astype(np.float32), sar=z["sar"].astype(np.float32), labels=labels,
                  instances=inst, caption=str(z["caption"]), referring=refs,
                  bounds=tuple(float(b) for b in z["bounds"]),
                  meta=json.loads(str(z["meta_json"])))


def preview_image(sample: Sample, tree: SemanticTree | None = None) -> np.ndarray:
    """(H, 3W, 3) uint8 strip: optical RGB | SAR (R=VV, G=VH, B=VV/VH) | leaf labels."""
    tree = tree or load_tree(sample.meta.get("tree", "synthetic"))
    rgb = np.clip(sample.optical[:3].transpose(1, 2, 0) * 1.6, 0, 1)
    s = (normalize_sar(sample.sar) + 1) / 2
    sar = np.stack([s[0], s[1], np.clip(s[0] - s[1] + 0.3, 0, 1)], -1)
    pal = np.vstack([tree.palette(), np.zeros((256 - tree.num_classes(), 3), np.uint8)])
    lab = pal[np.where(sample.labels == IGNORE_INDEX, 255, sample.labels)]
    return np.concatenate([(rgb * 255).astype(np.uint8), (sar * 255).astype(np.uint8), lab], axis=1)


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(prog="python -m rslab.data.synthetic",
                                 description="Write synthetic samples (PNG preview + .npz).")
    ap.add_argument("--out", default="data_samples", help="output folder")
    ap.add_argument("--n", type=int, default=4, help="number of scenes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=WorldConfig.size)
    ap.add_argument("--n-looks", type=float, default=WorldConfig.n_looks)
    args = ap.parse_args(argv)
    from PIL import Image

    world = SyntheticWorld(WorldConfig(size=args.size, n_looks=args.n_looks), seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(args.n):
        s = world.scene(i)
        stem = out / f"synthetic_s{args.seed}_{i:03d}"
        written.append(save_sample_npz(s, stem.with_suffix(".npz")))
        Image.fromarray(preview_image(s, world.tree)).save(stem.with_suffix(".png"), optimize=True)
        written.append(stem.with_suffix(".png"))
        print(f"{stem.name}: style={s.meta['style_name']} type={s.meta['scene_type']} | {s.caption}")
        for r in s.referring:
            print(f"    - {r.text} ({int(r.mask.sum())} px)")
    return written


if __name__ == "__main__":
    main()
