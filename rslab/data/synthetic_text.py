"""Text for synthetic scenes: one caption per scene and referring expressions with their masks.

Class names come from the semantic tree: a random *training* synonym per mention by default
(``split="train"``), or a held-out one (``split="heldout"``) to test text prompts on unseen names.
Every referring expression denotes exactly one object (its mask is that object's instance mask):
a phrase is only produced when the property that picks the object out is unambiguous (unique
colour, unique object in a ninth of the image, a size/distance margin over the runner-up).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np

from rslab.data.sample import ReferringExpression
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
from rslab.data.synthetic_render import Appearance
from rslab.data.tree import SemanticTree

COUNTABLE = (RESIDENTIAL, INDUSTRIAL, CAR, TRUCK, LAKE, CROPLAND)
_MIN_AREA = {RESIDENTIAL: 12, INDUSTRIAL: 40, CAR: 5, TRUCK: 10, LAKE: 60, CROPLAND: 150, RIVER: 60}
_LAND_COVER = (BROADLEAF, CONIFER, CROPLAND, GRASSLAND, BARE, ROAD)
_REGIONS = [["top left corner", "top", "top right corner"], ["left", "centre", "right"],
            ["bottom left corner", "bottom", "bottom right corner"]]
_SCENE_PHRASE = {"rural": "A rural landscape", "suburban": "A suburban area", "urban": "A dense urban district",
                 "mixed": "A large mixed landscape"}
_NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def plural(phrase: str) -> str:
    """English plural of the last word (house -> houses, factory -> factories, lorry -> lorries)."""
    head, _, word = phrase.rpartition(" ")
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        word = word[:-1] + "ies"
    elif word.endswith(("s", "sh", "ch", "x")):
        word += "es"
    else:
        word += "s"
    return f"{head} {word}" if head else word


def _count(n: int, phrase: str) -> str:
    words = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    return (f"{'a' if n == 1 and phrase[0] not in 'aeiou' else 'an' if n == 1 else words} "
            f"{phrase if n == 1 else plural(phrase)}")


class _Namer:
    def __init__(self, tree: SemanticTree, rng: np.random.Generator, split: str):
        self.tree, self.rng, self.split = tree, rng, split

    def __call__(self, leaf: int) -> str:
        node = self.tree.leaves[leaf]
        names = self.tree.synonyms(node, self.split) or [node.name]
        name = names[int(self.rng.integers(len(names)))]
        if leaf == CROPLAND and "field" not in name:
            name += " parcel"
        return name

    def inner(self, node_name: str) -> str:
        """A synonym of an inner node (e.g. "forest")."""
        names = self.tree.synonyms(node_name, self.split) or [node_name]
        return names[int(self.rng.integers(len(names)))]


@lru_cache(maxsize=4)
def _cached_coords(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.arange(H, dtype=np.float64), W), np.tile(np.arange(W, dtype=np.float64), H)


def _pixel_coords(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every pixel (flattened); cached for small scenes only (memory)."""
    if H * W <= 512 * 512:
        return _cached_coords(H, W)
    return _cached_coords.__wrapped__(H, W)


def object_stats(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible area (px) and centroid (row, col) of every instance id."""
    cached = layout.extras.get("_stats")
    if cached is not None:
        return cached
    inst = layout.instances
    H, W = inst.shape
    n = len(layout.inst_class)
    flat = inst.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)
    py, px = _pixel_coords(H, W)
    cy = np.bincount(flat, weights=py, minlength=n)
    cx = np.bincount(flat, weights=px, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = cy / area, cx / area
    layout.extras["_stats"] = (area, cy, cx)
    return area, cy, cx


def _nearest_distance(py: np.ndarray, px: np.ndarray, ty: np.ndarray, tx: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Distance from each point (py, px) to the nearest target pixel, in chunks (bounded memory)."""
    out = np.empty(len(py))
    for a in range(0, len(py), chunk):
        d2 = (py[a : a + chunk, None] - ty[None]) ** 2 + (px[a : a + chunk, None] - tx[None]) ** 2
        out[a : a + chunk] = np.sqrt(d2.min(axis=1))
    return out


def make_caption(layout: Layout, tree: SemanticTree, rng: np.random.Generator, split: str = "train") -> str:
    name = _Namer(tree, rng, split)
    H, W = layout.labels.shape
    frac = np.bincount(layout.labels.ravel(), minlength=12) / float(H * W)
    area, _, _ = object_stats(layout)
    cover = sorted((c for c in _LAND_COVER if frac[c] >= 0.08), key=lambda c: -frac[c])[:3]
    parts = [_SCENE_PHRASE[layout.scene_type]]
    if cover:
        names = [name(c).replace(" parcel", "") for c in cover]
        parts.append(" of " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]))
    if layout.has_river:
        parts.append(f", crossed by a {name(RIVER)}")
    counts = []
    for cls in (LAKE, RESIDENTIAL, INDUSTRIAL, CAR, TRUCK):
        k = int(((layout.inst_class == cls) & (area >= _MIN_AREA[cls])).sum())
        if k:
            counts.append(_count(k, name(cls)))
    if counts:
        parts.append(", with " + (counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + " and " + counts[-1]))
    return "".join(parts) + "."


def _unique_extreme(values: np.ndarray, ids: np.ndarray, largest: bool, margin: float) -> int | None:
    """Id of the object with the extreme value if it beats the runner-up by ``margin``."""
    if len(ids) < 2:
        return None
    order = np.argsort(values)
    if largest:
        order = order[::-1]
    best, second = values[order[0]], values[order[1]]
    return int(ids[order[0]]) if abs(best - second) >= margin else None


def make_referring(layout: Layout, app: Appearance, tree: SemanticTree, rng: np.random.Generator,
                   split: str = "train", max_expressions: int = 8) -> list[ReferringExpression]:
    """Referring expressions, each naming one object, with its instance mask."""
    name = _Namer(tree, rng, split)
    H, W = layout.labels.shape
    area, cy, cx = object_stats(layout)
    cls_of = layout.inst_class
    cands: list[tuple[str, int]] = []

    # relation targets: pixels of the river / the single lake / forest (subsampled for speed)
    step = max(1, min(H, W) // 64)
    sub_labels = layout.labels[::step, ::step]
    targets = []
    if layout.has_river:
        targets.append(("river", np.isin(sub_labels, (RIVER,))))
    lake_ids = np.flatnonzero((cls_of == LAKE) & (area >= _MIN_AREA[LAKE]))
    if len(lake_ids) == 1:
        targets.append(("lake", layout.instances[::step, ::step] == lake_ids[0]))
    forest = np.isin(sub_labels, (BROADLEAF, CONIFER))
    if forest.mean() > 0.03:
        targets.append(("forest", forest))

    for cls in COUNTABLE + (RIVER,):
        # uniqueness is judged against every visible object of the class (slivers at the border
        # included), but only objects large enough to see are referred to
        ids = np.flatnonzero((cls_of == cls) & (area > 0))
        referable = set(np.flatnonzero((cls_of == cls) & (area >= _MIN_AREA[cls])).tolist())
        if not referable:
            continue

        def add(text: str, i: int | None) -> None:
            if i is not None and int(i) in referable:
                cands.append((text, int(i)))

        if len(ids) == 1:
            add(f"the {name(cls)}", ids[0])
            continue
        if cls == RIVER:
            continue
        a = area[ids]
        for largest, word in ((True, "largest"), (False, "smallest")):
            add(f"the {word} {name(cls)}", _unique_extreme(a, ids, largest, margin=0.15 * a.max()))
        for vals, largest, word in ((cx[ids], False, "leftmost"), (cx[ids], True, "rightmost"),
                                    (cy[ids], False, "topmost"), (cy[ids], True, "bottommost")):
            add(f"the {word} {name(cls)}", _unique_extreme(vals, ids, largest, margin=4.0))
        # position in a 3x3 grid of the image: the only object of its class in that cell
        ry = np.clip((cy[ids] * 3 // H).astype(int), 0, 2)
        rx = np.clip((cx[ids] * 3 // W).astype(int), 0, 2)
        cell = ry * 3 + rx
        cnt = np.bincount(cell, minlength=9)
        for k in np.flatnonzero(cnt[cell] == 1):
            region = _REGIONS[ry[k]][rx[k]]
            prep = ("in the" if ("corner" in region or region == "centre")
                    else "on the" if region in ("left", "right") else "at the")
            add(f"the {name(cls)} {prep} {region}", ids[k])
        # attribute: a colour no other object of the class has
        colours = [app.inst_colour_name[i] for i in ids]
        colour_count = Counter(colours)
        for k, col in enumerate(colours):
            if col and colour_count[col] == 1:
                if cls in (RESIDENTIAL, INDUSTRIAL):
                    add(f"the {name(cls)} with a {col} roof", ids[k])
                else:
                    add(f"the {col} {name(cls)}", ids[k])
        # relation: nearest to the river / lake / forest
        for tname, tmask in targets:
            if (tname == "river" and cls == RIVER) or (tname == "lake" and cls == LAKE):
                continue
            ty, tx = np.nonzero(tmask)
            if len(ty) == 0:
                continue
            d = _nearest_distance(cy[ids], cx[ids], ty * step, tx * step)
            i = _unique_extreme(d, ids, largest=False, margin=4.0)
            if i is not None and i in referable:
                leaf = {"river": RIVER, "lake": LAKE}.get(tname)
                tword = name(leaf) if leaf is not None else name.inner("forest")
                add(f"the {name(cls)} nearest the {tword}", i)

    # pick: shuffle, one expression per object first, then fill; unique texts
    order = rng.permutation(len(cands))
    chosen, seen_text, seen_obj = [], set(), set()
    for prefer_new in (True, False):
        for k in order:
            text, i = cands[k]
            if len(chosen) >= max_expressions:
                break
            if text in seen_text or (prefer_new and i in seen_obj):
                continue
            chosen.append((text, i))
            seen_text.add(text)
            seen_obj.add(i)
    return [ReferringExpression(text=t, mask=layout.instances == i, target_class=tree.leaves[int(cls_of[i])].name,
                                instance_id=i)
            for t, i in chosen]


# Layout captions ------------------------------------------------------------------------------

_COMPASS = [["north-west", "north", "north-east"], ["west", "centre", "east"], ["south-west", "south", "south-east"]]


def _percent(f: float) -> str:
    p = int(round(f * 10)) * 10
    return "under 10 percent" if p == 0 else f"about {p} percent"


def make_layout_caption(labels: np.ndarray, tree: SemanticTree, rng: np.random.Generator, split: str = "train",
                        min_fraction: float = 0.05, max_classes: int = 4) -> str:
    """A caption that states *what fraction* of the scene each class covers and *where* it lies.

    E.g. "About 60 percent farmland, about 30 percent meadow and about 10 percent stream. Farmland
    in the north-west, north and centre; meadow in the south and south-east; stream in the east."
    Made from the leaf-label map alone (``IGNORE`` = 255 pixels skipped): the classes covering at least
    ``min_fraction`` of the labelled pixels (at most ``max_classes``, largest first) with their share
    rounded to 10 %, then, per class, the cells of a 3 x 3 partition (compass names, north up)
    where it is the most frequent class. Synonyms are drawn with ``rng`` from
    ``split`` ("train" or "heldout") so repeated calls give paraphrases of the same content.

    Why: the plain scene caption names the classes only, so many scenes share it; a caption that
    pins down proportions and layout differs from scene to scene, and an image encoder aligned to
    it has to encode the layout (which SAR can see) rather than colours (which it cannot).
    """
    labels = np.asarray(labels)
    grid = len(_COMPASS)
    if labels.ndim != 2 or labels.shape[0] < grid or labels.shape[1] < grid:
        raise ValueError(f"labels must be a 2-D leaf-label map of at least {grid}x{grid} pixels, "
                         f"got shape {labels.shape}")
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    n_leaves = len(tree.leaves)
    valid = labels != 255
    if not valid.any():
        raise ValueError("label map has no labelled pixel")
    if labels[valid].min() < 0 or labels[valid].max() >= n_leaves:
        raise ValueError(f"labels must be leaf ids in 0..{n_leaves - 1} (or 255), got range "
                         f"{labels[valid].min()}..{labels[valid].max()}")
    name = _Namer(tree, rng, split)
    frac = np.bincount(labels[valid].ravel(), minlength=n_leaves) / float(valid.sum())
    top = [int(c) for c in np.argsort(-frac, kind="stable") if frac[c] >= min_fraction][:max_classes]
    if not top:
        top = [int(frac.argmax())]
    names = {c: name(c).replace(" parcel", "") for c in top}
    shares = [f"{_percent(frac[c])} {names[c]}" for c in top]
    first = shares[0] if len(shares) == 1 else ", ".join(shares[:-1]) + " and " + shares[-1]
    H, W = labels.shape
    ys, xs = np.linspace(0, H, grid + 1).astype(int), np.linspace(0, W, grid + 1).astype(int)
    where: dict[int, list[str]] = {c: [] for c in top}
    for i in range(grid):
        for j in range(grid):
            cell = labels[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            cell = cell[cell != 255]
            if cell.size == 0:
                continue
            c = int(np.bincount(cell.ravel(), minlength=n_leaves).argmax())
            if c in where:
                where[c].append(_COMPASS[i][j])
    places = []
    for c in top:
        if where[c]:
            cells = where[c]
            if len(cells) == grid * grid:
                places.append(f"{names[c]} throughout")
                continue
            cells_text = cells[0] if len(cells) == 1 else ", ".join(cells[:-1]) + " and " + cells[-1]
            places.append(f"{names[c]} in the {cells_text}")
    text = first[0].upper() + first[1:] + "."
    if places:
        text += (" " + places[0][0].upper() + places[0][1:]
                 + ("; " + "; ".join(places[1:]) if len(places) > 1 else "") + ".")
    return text
