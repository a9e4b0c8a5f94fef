"""Text for synthetic scenes: one caption per scene and referring expressions with their masks.

Class names come from the semantic tree: a random *training* synonym per mention by default
(``split="train"``), or a held-out one (``split="heldout"``) to test text prompts on unseen names.
Every referring expression denotes exactly one object (its mask is that object's instance mask):
a phrase is only produced when the property that picks the object out is unambiguous (unique
colour, unique object in a ninth of the image, a size/distance margin over the runner-up).
"""

from __future__ import annotations

import numpy as np

from rslab.data.sample import ReferringExpression
from rslab.data.synthetic_layout import (
    BARE, BROADLEAF, CAR, CONIFER, CROPLAND, GRASSLAND, INDUSTRIAL, LAKE, RESIDENTIAL, RIVER, ROAD, TRUCK, Layout,
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
    return f"{'a' if n == 1 and phrase[0] not in 'aeiou' else 'an' if n == 1 else words} {phrase if n == 1 else plural(phrase)}"


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


def _object_stats(layout: Layout):
    inst = layout.instances
    H, W = inst.shape
    n = len(layout.inst_class)
    flat = inst.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)
    cy = np.bincount(flat, weights=np.repeat(np.arange(H, dtype=np.float64), W), minlength=n)
    cx = np.bincount(flat, weights=np.tile(np.arange(W, dtype=np.float64), H), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = cy / area, cx / area
    return area, cy, cx


def make_caption(layout: Layout, tree: SemanticTree, rng: np.random.Generator, split: str = "train") -> str:
    name = _Namer(tree, rng, split)
    H, W = layout.labels.shape
    frac = np.bincount(layout.labels.ravel(), minlength=12) / float(H * W)
    area, _, _ = _object_stats(layout)
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
    area, cy, cx = _object_stats(layout)
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
        ids = np.flatnonzero((cls_of == cls) & (area >= _MIN_AREA[cls]))
        if len(ids) == 0:
            continue
        if len(ids) == 1:
            cands.append((f"the {name(cls)}", int(ids[0])))
            if cls == RIVER:
                continue
        a = area[ids]
        for largest, word in ((True, "largest"), (False, "smallest")):
            i = _unique_extreme(a, ids, largest, margin=0.15 * a.max())
            if i is not None:
                cands.append((f"the {word} {name(cls)}", i))
        for vals, largest, word in ((cx[ids], False, "leftmost"), (cx[ids], True, "rightmost"),
                                    (cy[ids], False, "northernmost"), (cy[ids], True, "southernmost")):
            i = _unique_extreme(vals, ids, largest, margin=4.0)
            if i is not None and len(ids) >= 2:
                cands.append((f"the {word} {name(cls)}", i))
        # position in a 3x3 grid of the image
        ry = np.clip((cy[ids] * 3 // H).astype(int), 0, 2)
        rx = np.clip((cx[ids] * 3 // W).astype(int), 0, 2)
        cell = ry * 3 + rx
        cnt = np.bincount(cell, minlength=9)
        for k in np.flatnonzero(cnt[cell] == 1):
            region = _REGIONS[ry[k]][rx[k]]
            prep = "in the" if ("corner" in region or region == "centre") else "on the" if region in ("left", "right") else "at the"
            cands.append((f"the {name(cls)} {prep} {region}", int(ids[k])))
        # attribute: a colour no other object of the class has
        colours = [app.inst_colour_name[i] for i in ids]
        for k, col in enumerate(colours):
            if col and colours.count(col) == 1 and len(ids) >= 2:
                if cls in (RESIDENTIAL, INDUSTRIAL):
                    cands.append((f"the {name(cls)} with a {col} roof", int(ids[k])))
                else:
                    cands.append((f"the {col} {name(cls)}", int(ids[k])))
        # relation: nearest to the river / lake / forest
        for tname, tmask in targets:
            if (tname == "river" and cls == RIVER) or (tname == "lake" and cls == LAKE) or len(ids) < 2:
                continue
            ty, tx = np.nonzero(tmask)
            if len(ty) == 0:
                continue
            d = np.min((cy[ids, None] - ty[None] * step) ** 2 + (cx[ids, None] - tx[None] * step) ** 2, axis=1) ** 0.5
            i = _unique_extreme(d, ids, largest=False, margin=4.0)
            if i is not None:
                leaf = {"river": RIVER, "lake": LAKE}.get(tname)
                tword = name(leaf) if leaf is not None else name.inner("forest")
                cands.append((f"the {name(cls)} nearest the {tword}", i))

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
    return [ReferringExpression(text=t, mask=layout.instances == i, target_class=tree.leaves[int(cls_of[i])].name, instance_id=i)
            for t, i in chosen]
