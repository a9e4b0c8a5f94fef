"""In-context segmentation episodes (SkySense-VITA's training and evaluation units).

An episode is a batch of target images of one modality plus, for each class of the current
tree level, a prompt triplet drawn from *other* scenes (inter-image in-context): a prompt image,
its annotation of that class (mask, box or clicks) and the class name. Prompts are preferably
taken from scenes of another regional style than the targets, so visual prompts must bridge
intra-class variance, as in the paper's cross-continent examples.

:class:`ScenePool` renders a set of scenes once and indexes which classes each contains at every
tree level, so episodes are assembled without re-rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rslab.data.sample import IGNORE_INDEX
from rslab.data.sar import normalize_sar
from rslab.data.synthetic import SyntheticWorld
from rslab.data.tree import SemanticTree

ANNOTATIONS = ("mask", "box", "point")


class ScenePool:
    """Pre-rendered scenes: images per modality, leaf labels, styles, class presence per level.

    Args:
        world: the synthetic world.
        indices: scene numbers to render.
        min_pixels: a class counts as present in a scene with at least this many pixels.
    """

    def __init__(self, world: SyntheticWorld, indices, min_pixels: int = 24):
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("a ScenePool needs at least one scene index")
        self.tree: SemanticTree = world.tree
        samples = [world.scene(i) for i in indices]
        self.indices = indices
        self.optical = torch.from_numpy(np.stack([s.optical for s in samples])).float()
        self.sar = torch.from_numpy(np.stack([normalize_sar(s.sar) for s in samples])).float()
        self.labels = torch.from_numpy(np.stack([s.labels for s in samples])).long()
        self.styles = np.array([s.meta["style"] for s in samples])
        self.min_pixels = min_pixels
        self.presence: dict[int, np.ndarray] = {}
        for level in range(1, self.tree.depth + 1):
            lab = self.level_labels(level)
            k = self.tree.num_classes(level)
            counts = torch.stack([torch.bincount(l[l != IGNORE_INDEX].flatten(), minlength=k)[:k] for l in lab])
            self.presence[level] = (counts >= min_pixels).numpy()  # (n_scenes, K)

    def __len__(self) -> int:
        return len(self.indices)

    def images(self, modality: str) -> torch.Tensor:
        if modality == "optical":
            return self.optical
        if modality == "sar":
            return self.sar
        raise ValueError(f"modality must be 'optical' or 'sar', got {modality!r}")

    def level_labels(self, level: int) -> torch.Tensor:
        lut = torch.from_numpy(self.tree.level_lut(level)).long()
        return lut[self.labels]


def annotation_from_mask(mask: torch.Tensor, kind: str, rng: np.random.Generator, n_points: int = 5) -> torch.Tensor:
    """Turn a full class mask ``(H, W)`` into the annotation a user would give: mask, box or clicks."""
    if kind not in ANNOTATIONS:
        raise ValueError(f"annotation must be one of {ANNOTATIONS}, got {kind!r}")
    if kind == "mask" or not mask.any():
        return mask.clone()
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if kind == "box":
        out = torch.zeros_like(mask)
        out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        return out
    pick = rng.choice(len(ys), size=min(n_points, len(ys)), replace=False)
    out = torch.zeros_like(mask)
    for i in pick:  # 3x3 discs around each click
        y, x = int(ys[i]), int(xs[i])
        out[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True
    return out & mask if (out & mask).any() else out


@dataclass
class Episode:
    """Tensors for one VITA forward pass (see :class:`rslab.models.vita.VITA`)."""

    target: torch.Tensor  # (B, C, H, W)
    target_labels: torch.Tensor  # (B, H, W) class ids at `level`, IGNORE_INDEX where unlabeled
    prompt_images: torch.Tensor  # (S, C, H, W)
    prompt_masks: torch.Tensor  # (S, K, H, W)
    class_names: list[str]  # the K names used for text prompts
    ctx_valid: torch.Tensor  # (B, K) False where no prompt image exists for the class
    level: int
    modality: str

    def to(self, device) -> "Episode":
        """The same episode with its tensors on ``device`` (the Trainer calls this)."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Episode(**moved)

    def set_targets(self) -> list[dict]:
        """Per target, the ground-truth segments: ``labels (G,)`` and ``masks (G, H, W)``."""
        out = []
        k = self.prompt_masks.shape[1]
        for lab in self.target_labels:
            present = [c for c in torch.unique(lab).tolist() if c != IGNORE_INDEX and c < k]
            present = [c for c in present if bool(self.ctx_valid[0, c])]
            masks = (torch.stack([lab == c for c in present]) if present
                     else torch.zeros(0, *lab.shape, dtype=torch.bool))
            out.append({"labels": torch.tensor(present, dtype=torch.long), "masks": masks.float()})
        return out


NAME_SPLITS = ("canonical", "train", "region", "heldout")


def region_names(tree: SemanticTree, name: str) -> list[str]:
    """Training names of a class *and of every node that covers exactly the same leaves*.

    In a tree a node with a single child names the same pixels as that child (synthetic tree:
    ``built-up`` = ``building``, ``bare land`` = ``bare soil``); SGA supervises those pixels under
    either node depending on the sampled level, so the training names of both are valid names of
    the region. Held-out synonyms are never included. The class's own canonical name comes first,
    then its training synonyms, then the other nodes' names (coarse to fine).
    """
    node = tree.find(name)  # validates the name
    leaves = set(tree.leaf_ids(node))
    out = tree.synonyms(node, "train")
    for other in (m for root in tree.roots for m in root.walk()):
        if other is not node and set(tree.leaf_ids(other)) == leaves:
            out += tree.synonyms(other, "train")
    return list(dict.fromkeys(out))


def class_names_for(tree: SemanticTree, level: int, split: str, rng: np.random.Generator) -> list[str]:
    """One name per class at ``level``.

    ``split``: ``"canonical"`` names; ``"train"`` a random one of the canonical name and its
    training synonyms; ``"region"`` a random one of :func:`region_names` (training names of the
    class and of the nodes covering the same pixels); ``"heldout"`` a random held-out synonym
    (the canonical name where a class has none).
    """
    if split not in NAME_SPLITS:
        raise ValueError(f"names split must be one of {NAME_SPLITS}, got {split!r}")
    names = tree.names(level)
    if split == "canonical":
        return list(names)
    out = []
    for name in names:
        if split == "region":
            options = region_names(tree, name)
        else:
            options = tree.synonyms(name, split)  # "train": the canonical name first, then the synonyms
        out.append(options[int(rng.integers(len(options)))] if options else name)
    return out


def make_episode(targets: ScenePool, target_ids, prompts: ScenePool, level: int, modality: str,
                 rng: np.random.Generator, annotation: str = "mask", shots: int = 1,
                 names: str = "train", other_style: bool = True, exclude: set[int] | None = None,
                 classes: list[str] | None = None) -> Episode:
    """Assemble an episode: targets ``target_ids`` of ``targets``, prompts drawn from ``prompts``.

    For every class at ``level`` (K of them) ``shots`` prompt scenes containing it are drawn; a
    class found in no prompt scene is marked invalid (ignored by the model and the metrics).
    ``exclude``: prompt-pool positions never used as prompts (the targets, when both pools are one).
    ``classes``: prompt only these classes of ``level`` (names or synonyms); the others are marked
    invalid, i.e. neither predicted nor scored. A name missing from the tree raises ``ValueError``.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    target_ids = list(target_ids)
    tree = targets.tree
    k = tree.num_classes(level)
    wanted = set(range(k)) if classes is None else {tree.class_id(tree.find(c), level) for c in classes}
    tgt_styles = set(targets.styles[target_ids].tolist())
    prompt_lab = prompts.level_labels(level)
    images, masks, valid = [], [], np.zeros(k, dtype=bool)
    for c in sorted(wanted):
        holders = np.nonzero(prompts.presence[level][:, c])[0]
        if exclude:
            holders = np.array([h for h in holders if h not in exclude], dtype=np.int64)
        if other_style:
            different = [h for h in holders if prompts.styles[h] not in tgt_styles]
            holders = np.array(different) if different else holders
        if len(holders) == 0:
            continue
        valid[c] = True
        for j in rng.choice(holders, size=shots, replace=len(holders) < shots):
            m = torch.zeros(k, *prompt_lab.shape[-2:], dtype=torch.bool)
            m[c] = annotation_from_mask(prompt_lab[j] == c, annotation, rng)
            images.append(prompts.images(modality)[j])
            masks.append(m)
    if not images:
        raise ValueError(f"no prompt scene contains any class of level {level}; enlarge the prompt pool")
    ctx_valid = torch.from_numpy(valid)[None].expand(len(target_ids), -1).clone()
    return Episode(
        target=targets.images(modality)[target_ids],
        target_labels=targets.level_labels(level)[target_ids],
        prompt_images=torch.stack(images),
        prompt_masks=torch.stack(masks),
        class_names=class_names_for(tree, level, names, rng),
        ctx_valid=ctx_valid,
        level=level,
        modality=modality,
    )
