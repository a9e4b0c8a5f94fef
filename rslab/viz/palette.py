"""Class colours that follow the semantic tree, label colouring, legends and overlays.

Every tree node gets one fixed colour. Level-1 classes take the colour given in the tree YAML
(``color:``) or, when absent, evenly spaced hues; each child is its parent's hue shifted a
little (siblings fan out around the parent) with a lightness step, so ``residential building``
is visibly a kind of ``building``, which is a kind of ``built-up``, and the panels of
:func:`rslab.viz.show_levels` look related. A node keeps its colour at every level where it is a
class (a shallow leaf such as ``river`` looks the same at levels 2 and 3).

Two schemes: ``"yaml"`` (the default) uses each node's YAML colour where the tree gives one (the
tree author's choice, tuned for contrast: yellow cars on grey roads, orange cropland beside
green grassland) and derives only the missing ones; ``"derived"`` applies the hue-shift rule to
every node below level 1 (levels look most related, but small siblings can be hard to tell
apart, e.g. cars on roads under a grey ``transport``).
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

from rslab.data.sample import IGNORE_INDEX
from rslab.data.tree import SemanticTree

#: Colour of IGNORE_INDEX pixels in colourised label maps (RGBA: transparent with alpha=True).
IGNORE_COLOR = (0, 0, 0)

#: Hue spread (fraction of the colour wheel) between siblings at level >= 2, and the lightness
#: change per level. Small enough that children stay recognisably their parent's colour.
_CHILD_HUE_SPREAD = 0.10
_LIGHTNESS_STEP = 0.12


def _check_tree(tree) -> None:
    if not (hasattr(tree, "nodes") and hasattr(tree, "roots") and hasattr(tree, "depth")):
        raise ValueError(f"tree must be a rslab.data.tree.SemanticTree (e.g. load_tree('synthetic')), "
                         f"got {type(tree).__name__}.")


def _hex_to_rgb01(color: str) -> tuple[float, float, float]:
    h = color.lstrip("#")
    return tuple(int(h[k : k + 2], 16) / 255.0 for k in (0, 2, 4))  # type: ignore[return-value]


SCHEMES = ("derived", "yaml")


def _assign(node, hls: tuple[float, float, float], out: dict, scheme: str) -> None:
    if scheme == "yaml" and node.level > 1 and getattr(node, "color", None):
        hls = colorsys.rgb_to_hls(*_hex_to_rgb01(node.color))
    out[id(node)] = hls
    kids = node.children
    if not kids:
        return
    h, l, s = hls
    n = len(kids)
    # Lighter children under dark parents, darker under light ones, so they stay distinguishable;
    # under a grey parent (no hue to shift) siblings alternate dark/light more strongly.
    direction = 1.0 if l < 0.55 else -1.0
    step = _LIGHTNESS_STEP * (2.0 if s < 0.15 else 1.0)
    for i, child in enumerate(kids):
        offset = 0.0 if n == 1 else (i / (n - 1) - 0.5) * _CHILD_HUE_SPREAD * min(n, 4) / 2
        lightness = np.clip(l + direction * step * (0.6 + 0.8 * (i % 2)), 0.18, 0.85)
        _assign(child, ((h + offset) % 1.0, float(lightness), s), out, scheme)


@lru_cache(maxsize=32)
def _node_colors(tree, scheme: str = "yaml") -> dict[int, tuple[int, int, int]]:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
    hls: dict[int, tuple[float, float, float]] = {}
    n_roots = len(tree.roots)
    for i, root in enumerate(tree.roots):
        if getattr(root, "color", None):
            base = colorsys.rgb_to_hls(*_hex_to_rgb01(root.color))
        else:
            base = (i / n_roots, 0.45, 0.75)
        _assign(root, base, hls, scheme)
    out = {}
    for key, (h, l, s) in hls.items():
        r, g, b = colorsys.hls_to_rgb(h, l, s)
        out[key] = (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))
    return out


def node_color(tree, node, scheme: str = "yaml") -> tuple[int, int, int]:
    """The fixed RGB (0-255) colour of a tree node (a ``Node`` or a class name)."""
    _check_tree(tree)
    node = tree.find(node) if isinstance(node, str) else node
    return _node_colors(tree, scheme)[id(node)]


def level_palette(tree, level: int | None = None, scheme: str = "yaml") -> np.ndarray:
    """(K, 3) uint8: colour of each class id at ``level`` (default: leaves)."""
    _check_tree(tree)
    colors = _node_colors(tree, scheme)
    return np.asarray([colors[id(n)] for n in tree.nodes(level)], dtype=np.uint8)


def colorize_labels(labels: np.ndarray, tree, level: int | None = None, alpha: bool = False,
                    scheme: str = "yaml") -> np.ndarray:
    """Leaf-id label map (H, W) -> (H, W, 3) uint8 colours of the classes at ``level``.

    ``labels`` holds leaf ids (the Sample convention); they are mapped to ``level`` with
    ``tree.to_level``. IGNORE_INDEX pixels are black, or transparent with ``alpha=True``
    (then the output is (H, W, 4)).
    """
    _check_tree(tree)
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer (H, W) map of leaf ids, got {labels.dtype} {labels.shape}.")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= len(tree.leaves)))
    if bad.any():
        raise ValueError(f"labels hold values {np.unique(labels[bad])[:8].tolist()} that are not leaf ids of tree "
                         f"{tree.name!r} (0..{len(tree.leaves) - 1}) nor IGNORE_INDEX={IGNORE_INDEX}.")
    ids = tree.to_level(labels, level)
    palette = np.concatenate([level_palette(tree, level, scheme),
                              np.zeros((256 - tree.num_classes(level), 3), np.uint8)])
    palette[IGNORE_INDEX] = IGNORE_COLOR
    rgb = palette[ids]
    if not alpha:
        return rgb
    a = np.where(ids == IGNORE_INDEX, 0, 255).astype(np.uint8)
    return np.concatenate([rgb, a[..., None]], axis=-1)


def label_legend(tree, level: int | None = None, present: np.ndarray | None = None,
                 scheme: str = "yaml") -> list:
    """Matplotlib legend handles (colour patches named by class) for ``level``.

    ``present``: a leaf-id label map; when given, only classes that occur in it are listed.
    Use as ``ax.legend(handles=label_legend(tree, 2), ...)``.
    """
    from matplotlib.patches import Patch

    _check_tree(tree)
    nodes = tree.nodes(level)
    palette = level_palette(tree, level, scheme)
    keep = range(len(nodes))
    if present is not None:
        ids = np.unique(tree.to_level(np.asarray(present), level))
        keep = [int(i) for i in ids if i != IGNORE_INDEX]
    return [Patch(facecolor=palette[i] / 255.0, edgecolor="k", linewidth=0.3, label=nodes[i].name) for i in keep]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, tree, level: int | None = None, alpha: float = 0.5,
            scheme: str = "yaml") -> np.ndarray:
    """Blend class colours over an image: (H, W, 3) float in [0, 1] -> (H, W, 3) float32.

    ``out = (1 - alpha) * image + alpha * colour`` on labelled pixels; ignored pixels keep the image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    img = np.asarray(image_rgb, dtype=np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image_rgb must be (H, W, 3) in [0, 1] (use optical_to_display / sar_to_display), "
                         f"got {img.shape}.")
    if img.shape[:2] != np.asarray(labels).shape:
        raise ValueError(f"image {img.shape[:2]} and labels {np.asarray(labels).shape} must have the same (H, W).")
    rgba = colorize_labels(labels, tree, level, alpha=True, scheme=scheme).astype(np.float32) / 255.0
    a = alpha * rgba[..., 3:4]
    return ((1.0 - a) * img + a * rgba[..., :3]).astype(np.float32)


def flat_tree(class_names, colors=None, name: str = "flat"):
    """A depth-1 :class:`~rslab.data.tree.SemanticTree` from a list of class names (class id order),
    so datasets without a packaged tree (Sen1Floods11's ``not_water``/``water``) use the same figures.

    ``colors``: optional ``'#rrggbb'`` per class; otherwise evenly spaced hues.
    """
    names = list(class_names)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"class_names must be a non-empty list of class names, got {class_names!r}.")
    if colors is not None and len(colors) != len(names):
        raise ValueError(f"need one colour per class: {len(names)} classes, {len(colors)} colours.")
    classes = [{"name": n, **({"color": colors[i]} if colors is not None else {})} for i, n in enumerate(names)]
    return SemanticTree.from_dict({"name": name, "classes": classes}, source=f"flat_tree({name})")


def format_tree(tree, heldout: bool = True) -> str:
    """Indented text of the tree: one node per line with its level, leaf id and synonyms.

    Training synonyms are listed as they are; held-out synonyms (never in training text) are
    marked with ``*`` and brackets, e.g. ``residential building [leaf 0]  syn: house, home | held-out*: residence``.
    """
    _check_tree(tree)
    lines = [f"{tree.name}  (depth {tree.depth}; classes per level: "
             + ", ".join(f"L{lvl}={tree.num_classes(lvl)}" for lvl in range(1, tree.depth + 1)) + ")"]
    for root in tree.roots:
        for node in root.walk():
            head = "  " * node.level + ("- " if node.children else "* ") + node.name
            head += f"  [leaf {node.leaf_id}]" if node.is_leaf else f"  (L{node.level})"
            parts = []
            if node.synonyms:
                parts.append("syn: " + ", ".join(node.synonyms))
            if heldout and node.heldout:
                parts.append("held-out*: " + ", ".join(node.heldout))
            lines.append(head + ("   " + " | ".join(parts) if parts else ""))
    if heldout:
        lines.append("* held-out synonyms are never used in training text (for testing prompts with unseen names)")
    return "\n".join(lines)
