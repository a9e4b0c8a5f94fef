"""Semantic trees: class hierarchies with synonyms, for coarse-to-fine training and text prompts.

SkySense-VITA (Sec. 3.4, "Semantic Granularity Annealing") organises its C classes in a tree of
depth L and, at granularity level l, supervises each pixel with the ancestor c_i^(l) of its leaf
label c_i. This module holds such trees and the maps between levels.

Conventions
-----------
- Levels are numbered 1 (coarsest, the children of the implicit root) to ``tree.depth`` = L (leaves).
- Labels maps always hold **leaf ids** (0..n_leaves-1, in depth-first order of the YAML file);
  ``IGNORE_INDEX`` (255) marks unlabelled pixels.
- A leaf that sits above level L (an *unbalanced* tree, e.g. ``water > river`` next to
  ``built-up > building > residential building``) counts as its own descendant at every deeper
  level: at level 3 the class ``river`` is still ``river``. So ``names(l)`` lists, in depth-first
  order, the nodes at level l plus the shallower leaves, and ``names(L)`` is the leaf list.
- Every node has a canonical ``name``, training ``synonyms`` and ``heldout`` synonyms. Held-out
  synonyms are never used to build training text (captions, referring expressions, text prompts),
  so that a model can be tested on class names it has never seen.

YAML format (see ``rslab/data/trees/synthetic.yaml``)::

    name: synthetic
    classes:                      # the level-1 nodes
      - name: built-up
        synonyms: [urban area]    # optional
        heldout: [developed land] # optional
        color: "#d7191c"          # optional, for plots
        id: 0                     # optional, leaves only: asserts the leaf id (dataset order)
        children: [...]           # optional; absent = leaf
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import yaml

from rslab.data.sample import IGNORE_INDEX

TREES_DIR = Path(__file__).with_name("trees")
_NODE_KEYS = {"name", "synonyms", "heldout", "color", "id", "children", "description"}
_SPLITS = ("train", "heldout", "all")


@dataclass(eq=False)
class Node:
    """One class of the tree. ``level`` is 1 for the coarsest classes."""

    name: str
    level: int
    synonyms: list[str] = field(default_factory=list)  # training synonyms (name excluded)
    heldout: list[str] = field(default_factory=list)  # never used in training text
    color: str | None = None
    description: str = ""
    children: list["Node"] = field(default_factory=list)
    parent: "Node | None" = field(default=None, repr=False)
    leaf_id: int | None = None  # set for leaves: the label value in label maps

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterator["Node"]:
        """This node and its descendants, depth-first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def leaves(self) -> list["Node"]:
        return [n for n in self.walk() if n.is_leaf]

    def path(self) -> list["Node"]:
        """Ancestors from level 1 down to this node."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def __repr__(self) -> str:
        kind = f"leaf {self.leaf_id}" if self.is_leaf else f"{len(self.children)} children"
        return f"Node({self.name!r}, level={self.level}, {kind})"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


class SemanticTree:
    """A class hierarchy; build it with :meth:`from_yaml`, :meth:`from_dict` or :func:`load_tree`."""

    def __init__(self, name: str, roots: list[Node], description: str = ""):
        if not roots:
            raise ValueError(f"tree {name!r} has no classes; give at least one level-1 node under 'classes'.")
        self.name = name
        self.description = description
        self.roots = roots
        self._nodes = [n for r in roots for n in r.walk()]
        self.depth = max(n.level for n in self._nodes)
        self.leaves = [n for n in self._nodes if n.is_leaf]
        for i, leaf in enumerate(self.leaves):
            leaf.leaf_id = i
        self._levels = {
            lvl: [n for n in self._nodes if n.level == lvl or (n.is_leaf and n.level < lvl)]
            for lvl in range(1, self.depth + 1)
        }
        self._lookup: dict[str, Node] = {}
        for node in self._nodes:
            for term in [node.name, *node.synonyms, *node.heldout]:
                key = _norm(term)
                other = self._lookup.get(key)
                if other is not None and other is not node:
                    raise ValueError(
                        f"tree {name!r}: the term {term!r} names both {other.name!r} and {node.name!r}; "
                        "names and synonyms must be unique across the tree so text maps to one class."
                    )
                self._lookup[key] = node

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_yaml(cls, path: str | Path) -> "SemanticTree":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"semantic tree file {path} not found; packaged trees are {available_trees()} "
                f"(load them with load_tree(name)), or pass the path of your own YAML file."
            )
        with open(path) as f:
            data = yaml.safe_load(f)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "SemanticTree":
        if not isinstance(data, dict) or "classes" not in data:
            raise ValueError(
                f"{source}: a tree file must be a mapping with a 'classes' list (the level-1 nodes), "
                f"got {type(data).__name__}{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}."
            )
        name = str(data.get("name") or Path(source).stem)
        classes = data["classes"]
        if not isinstance(classes, list) or not classes:
            raise ValueError(f"{source}: 'classes' must be a non-empty list of nodes, got {classes!r}.")
        seen: dict[str, str] = {}
        roots = [_parse_node(item, 1, None, source, f"classes[{i}]", seen) for i, item in enumerate(classes)]
        tree = cls(name, roots, description=str(data.get("description", "")))
        for leaf in tree.leaves:
            expected = getattr(leaf, "_declared_id", None)
            if expected is not None and expected != leaf.leaf_id:
                raise ValueError(
                    f"{source}: leaf {leaf.name!r} declares id {expected} but sits at depth-first position "
                    f"{leaf.leaf_id}; leaf ids are the depth-first order of leaves, so reorder the YAML "
                    "(or fix the id) to keep the dataset's class order."
                )
        return tree

    # ------------------------------------------------------------------ queries
    def _check_level(self, level: int | None) -> int:
        if level is None:
            return self.depth
        if not isinstance(level, (int, np.integer)) or not 1 <= level <= self.depth:
            raise ValueError(f"level must be an int in 1..{self.depth} (tree {self.name!r}), got {level!r}.")
        return int(level)

    def nodes(self, level: int | None = None) -> list[Node]:
        """Classes at ``level`` (default: leaves) in class-id order; shallower leaves included."""
        return list(self._levels[self._check_level(level)])

    def names(self, level: int | None = None) -> list[str]:
        return [n.name for n in self.nodes(level)]

    def num_classes(self, level: int | None = None) -> int:
        return len(self._levels[self._check_level(level)])

    def class_id(self, name_or_node: str | Node, level: int | None = None) -> int:
        """Class id of a node at ``level`` (default: the node's own level, or leaf level for leaves)."""
        node = name_or_node if isinstance(name_or_node, Node) else self.find(name_or_node)
        lvl = (self.depth if (level is None and node.is_leaf)
               else self._check_level(level if level is not None else node.level))
        nodes = self._levels[lvl]
        if node not in nodes:
            raise ValueError(f"{node.name!r} (level {node.level}) is not a class at level {lvl}; "
                             f"classes there: {self.names(lvl)}.")
        return nodes.index(node)

    def find(self, name: str) -> Node:
        """The node called ``name`` or having it as a (train or held-out) synonym; case-insensitive."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"find() needs a non-empty class name, got {name!r}.")
        node = self._lookup.get(_norm(name))
        if node is None:
            close = difflib.get_close_matches(_norm(name), list(self._lookup), n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise ValueError(f"no class or synonym {name!r} in tree {self.name!r}.{hint} "
                             f"Leaves: {[l.name for l in self.leaves]}.")
        return node

    def _node(self, leaf_name_or_id: str | int | Node) -> Node:
        if isinstance(leaf_name_or_id, Node):
            return leaf_name_or_id
        if isinstance(leaf_name_or_id, (int, np.integer)):
            if not 0 <= leaf_name_or_id < len(self.leaves):
                raise ValueError(f"leaf id {leaf_name_or_id} out of range 0..{len(self.leaves) - 1} "
                                 f"for tree {self.name!r}.")
            return self.leaves[int(leaf_name_or_id)]
        return self.find(leaf_name_or_id)

    def ancestor(self, leaf_name_or_id: str | int | Node, level: int) -> Node:
        """The class at ``level`` containing the node (a node is its own ancestor at its level, and a
        leaf above ``level`` is its own ancestor there too)."""
        level = self._check_level(level)
        node = self._node(leaf_name_or_id)
        if level > node.level:
            if not node.is_leaf:
                raise ValueError(
                    f"{node.name!r} is an inner node at level {node.level}; "
                    f"it has no single descendant at level {level}."
                )
            return node
        return node.path()[level - 1]

    def leaf_ids(self, name_or_node: str | Node) -> list[int]:
        """Leaf ids under a node: the label values that make up its mask at any level."""
        node = name_or_node if isinstance(name_or_node, Node) else self.find(name_or_node)
        return [leaf.leaf_id for leaf in node.leaves()]

    def level_lut(self, level: int | None = None) -> np.ndarray:
        """(256,) int64 lookup table leaf id -> class id at ``level``; ``lut[labels]`` relabels a map.

        Index 255 (IGNORE_INDEX) and every value that is no leaf id map to IGNORE_INDEX.
        """
        return _cached_lut(self, self._check_level(level)).copy()

    def to_level(self, labels, level: int | None = None):
        """Relabel a leaf-id map (numpy array or torch tensor) to class ids at ``level``."""
        lut = _cached_lut(self, self._check_level(level))
        try:
            if isinstance(labels, torch.Tensor):
                return torch.tensor(lut, device=labels.device)[labels.long()]
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        return lut[np.asarray(labels)]

    def synonyms(self, name: str | Node, split: str = "train") -> list[str]:
        """Names of a class. ``train``: canonical name first, then training synonyms; ``heldout``:
        the held-out synonyms (never used in training); ``all``: both."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
        node = name if isinstance(name, Node) else self.find(name)
        train = [node.name, *node.synonyms]
        if split == "train":
            return train
        if split == "heldout":
            return list(node.heldout)
        return train + list(node.heldout)

    def palette(self, level: int | None = None) -> np.ndarray:
        """(K, 3) uint8 colours of the classes at ``level`` (YAML ``color`` or a fixed fallback)."""
        out = []
        for i, node in enumerate(self.nodes(level)):
            if node.color:
                h = node.color.lstrip("#")
                out.append([int(h[k : k + 2], 16) for k in (0, 2, 4)])
            else:  # deterministic, well-spread fallback colours
                rng = np.random.default_rng(i + 17)
                out.append(list(rng.integers(40, 230, size=3)))
        return np.asarray(out, dtype=np.uint8)

    def __repr__(self) -> str:
        sizes = ", ".join(f"L{l}={self.num_classes(l)}" for l in range(1, self.depth + 1))
        return f"SemanticTree({self.name!r}, depth={self.depth}, {sizes})"

    def pretty(self) -> str:
        """Indented text rendering, leaves with their ids."""
        lines = []
        for node in self._nodes:
            tag = f"  [leaf {node.leaf_id}]" if node.is_leaf else ""
            syn = f"  ({', '.join(node.synonyms)})" if node.synonyms else ""
            lines.append("  " * (node.level - 1) + node.name + tag + syn)
        return "\n".join(lines)


@lru_cache(maxsize=64)
def _cached_lut(tree: SemanticTree, level: int) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for leaf in tree.leaves:
        lut[leaf.leaf_id] = tree.class_id(tree.ancestor(leaf, level), level)
    lut.setflags(write=False)
    return lut


def _parse_node(item, level: int, parent: Node | None, source: str, where: str, seen: dict[str, str]) -> Node:
    if isinstance(item, str):  # shorthand: a bare name is a leaf without synonyms
        item = {"name": item}
    if not isinstance(item, dict):
        raise ValueError(f"{source}: {where} must be a mapping with at least 'name', got {item!r}.")
    unknown = set(item) - _NODE_KEYS
    if unknown:
        raise ValueError(f"{source}: {where} has unknown keys {sorted(unknown)}; allowed: {sorted(_NODE_KEYS)}.")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: {where} has an empty or missing 'name' ({name!r}); every node needs a name.")
    name = name.strip()
    key = _norm(name)
    if key in seen:
        raise ValueError(f"{source}: duplicate class name {name!r} at {where} (first at {seen[key]}); "
                         "names must be unique.")
    seen[key] = where

    def str_list(key_name: str) -> list[str]:
        value = item.get(key_name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{source}: {where} ({name!r}) '{key_name}' must be a list of non-empty strings, "
                             f"got {value!r}.")
        return [v.strip() for v in value]

    node = Node(name=name, level=level, synonyms=str_list("synonyms"), heldout=str_list("heldout"),
                color=item.get("color"), description=str(item.get("description", "")), parent=parent)
    overlap = {_norm(s) for s in node.synonyms} & {_norm(s) for s in node.heldout}
    if overlap or key in {_norm(s) for s in node.heldout}:
        raise ValueError(f"{source}: {where} ({name!r}) lists {sorted(overlap) or [name]} "
                         "both for training and as held-out; "
                         "a held-out synonym must never appear in training text.")
    if node.color is not None and not re.fullmatch(r"#?[0-9a-fA-F]{6}", str(node.color)):
        raise ValueError(f"{source}: {where} ({name!r}) color must be '#rrggbb', got {node.color!r}.")
    children = item.get("children")
    if children is not None:
        if not isinstance(children, list) or not children:
            raise ValueError(
                f"{source}: {where} ({name!r}) has 'children' that is empty or not a list ({children!r}). "
                "Leave 'children' out for a leaf: a leaf above the deepest level is allowed and counts as its "
                "own descendant at deeper levels (unbalanced trees are fine)."
            )
        if "id" in item:
            raise ValueError(f"{source}: {where} ({name!r}) has children, so it cannot declare a leaf 'id'.")
        node.children = [_parse_node(c, level + 1, node, source, f"{where}.children[{i}]", seen)
                         for i, c in enumerate(children)]
    elif "id" in item:
        if not isinstance(item["id"], int) or item["id"] < 0:
            raise ValueError(f"{source}: {where} ({name!r}) 'id' must be a non-negative int, got {item['id']!r}.")
        node._declared_id = item["id"]  # checked once all leaves are numbered
    return node


def available_trees() -> list[str]:
    return sorted(p.stem for p in TREES_DIR.glob("*.yaml"))


@lru_cache(maxsize=None)
def load_tree(name: str = "synthetic") -> SemanticTree:
    """A packaged tree: ``"synthetic"`` (the synthetic world), ``"loveda"``, ``"deepglobe"``.

    Cached: the same object is returned on each call, so treat it as read-only.
    """
    path = TREES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown tree {name!r}; packaged trees: {available_trees()}. "
                         "For your own tree use SemanticTree.from_yaml(path).")
    return SemanticTree.from_yaml(path)
