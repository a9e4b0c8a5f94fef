"""Training and evaluation of SkySense-VITA on synthetic episodes (stage 2: pixel-level
in-context pre-training with Semantic Granularity Annealing).

Loss (paper Sec. "Loss & Training"): for every mode k in {V, T, F} the Hungarian-matched set loss
of Mask2Former at the SGA level l (pixels supervised with their ancestor at l), summed over the
three modes; with ``train_modes=("F",)`` only the fused branch is trained (the "w/o decoupled"
ablation). Deep supervision adds the same loss on every decoder layer's prediction.

Entry points: :func:`train` (Trainer wrapper), :func:`evaluate` (held-out mIoU per mode),
:func:`predict` (one episode), :func:`segment` (any images with given prompts, e.g. real data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rslab.curriculum import LevelSchedule
from rslab.data.episodes import Episode, ScenePool, make_episode, region_names
from rslab.data.sample import IGNORE_INDEX
from rslab.losses.set_prediction import SetCriterion
from rslab.metrics import SegmentationMeter
from rslab.models.vita import MODES, VITA, semantic_inference
from rslab.train import TrainConfig, Trainer


@dataclass
class VITARecipe:
    """Budget and switches of one VITA training run.

    Attributes:
        max_steps / batch_size / lr / warmup_steps / seed: optimisation budget, named as in
            :class:`rslab.train.TrainConfig` (AdamW, warm-up + cosine, gradient norm clipped at 1).
            Tuned on the CPU budget: lr 3e-3 with deep supervision learns in a few hundred steps;
            1e-3 or no aux loss stayed on the initial plateau far longer.
        sar_fraction: share of episodes whose targets and prompts are SAR.
        level_mode / tau_sga: the level curriculum (``"sga"``, ``"fine"``, ``"hard"``).
        train_modes: modes whose loss is trained (``("V", "T", "F")`` decoupled; ``("F",)`` fused only).
        annotation: prompt annotation in training (``"mask"``, ``"box"``, ``"point"``).
        aux_loss: deep supervision on every decoder layer.
        num_points: sampled points of the mask losses.
        text_templates: training text prompts per class: ``"average"`` over the text encoder's
            default templates (as at inference) or ``"sample"`` one of :data:`TRAIN_TEMPLATES`.
        text_noise: std (per dimension) of Gaussian noise added to the unit-norm training text
            embeddings before re-normalising (0.03 ~ cosine 0.86 to the clean vector for 384-d).
            Not in the paper: a regulariser so the text branch covers a neighbourhood of each
            class in the text encoder's space. Off by default: with MiniLM it pulls the branch
            towards MiniLM's neighbourhoods, where some held-out synonyms sit nearer another
            class; notebook 03 measured no gain from 0.03 over 0 on 2026-11-23 (commit ae0c546;
            built-up's held-out name was lost in one seed of three either way).
        train_names: class names of training episodes: ``"train"`` a random one of the class's
            canonical name and training synonyms; ``"region"`` also the training names of tree
            nodes covering exactly the same pixels (:func:`rslab.data.episodes.region_names`,
            e.g. ``bare soil`` for ``bare land``). Held-out synonyms are never used.
        seed: episode sampling and training seed.
    """

    max_steps: int = 300
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 20
    sar_fraction: float = 0.5
    level_mode: str = "sga"
    tau_sga: float = 0.5
    train_modes: tuple[str, ...] = MODES
    annotation: str = "mask"
    aux_loss: bool = True
    num_points: int = 512
    text_templates: str = "average"
    text_noise: float = 0.0
    train_names: str = "train"
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.sar_fraction <= 1.0:
            raise ValueError(f"sar_fraction must be in [0, 1], got {self.sar_fraction}")
        if not self.train_modes or any(m not in MODES for m in self.train_modes):
            raise ValueError(f"train_modes must be a non-empty subset of {MODES}, got {self.train_modes}")
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError(f"max_steps and batch_size must be >= 1, got {self.max_steps}, {self.batch_size}")
        if self.text_templates not in ("average", "sample"):
            raise ValueError(f"text_templates must be 'average' or 'sample', got {self.text_templates!r}")
        if self.text_noise < 0:
            raise ValueError(f"text_noise must be >= 0, got {self.text_noise}")
        if self.train_names not in ("train", "region"):
            raise ValueError(f"train_names must be 'train' or 'region', got {self.train_names!r}")


def episode_factory(pool: ScenePool, recipe: VITARecipe, steps_per_epoch: int | None = None):
    """``epoch -> iterable of Episodes``, deterministic in (seed, step), for :class:`rslab.train.Trainer`."""
    schedule = LevelSchedule(pool.tree.depth, recipe.max_steps, recipe.level_mode, recipe.tau_sga, recipe.seed)
    steps_per_epoch = steps_per_epoch or recipe.max_steps

    def batches(epoch: int):
        for i in range(steps_per_epoch):
            step = min(epoch * steps_per_epoch + i, recipe.max_steps)
            rng = np.random.default_rng((recipe.seed, 7, step))
            modality = "sar" if rng.random() < recipe.sar_fraction else "optical"
            ids = rng.choice(len(pool), size=recipe.batch_size, replace=False)
            # prompts come from the same training pool but never from the episode's own targets
            yield make_episode(pool, ids, pool, schedule.level(step), modality, rng,
                               annotation=recipe.annotation, exclude=set(ids.tolist()), names=recipe.train_names)

    return batches


#: Templates sampled per class in training with ``text_templates="sample"`` (inference averages
#: the text encoder's default templates, CLIP's prompt ensembling).
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.", "an aerial view of {}.", "a remote sensing image showing {}.", "{}",
    "an overhead photo of {}.", "{} seen from above.", "a top-down image with {}.", "a map region of {}.",
)


class VITALoss:
    """``loss_fn(model, episode)`` for the Trainer: set loss summed over the trained modes."""

    def __init__(self, text_encoder, recipe: VITARecipe):
        self.text_encoder, self.recipe = text_encoder, recipe
        self.criterion = SetCriterion(num_points=recipe.num_points)
        self.rng = np.random.default_rng((recipe.seed, 13))
        self.gen = torch.Generator().manual_seed(recipe.seed + 13)

    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """Training text prompts ``(K, text_dim)``: template-averaged (as at inference) or one
        template sampled per class from :data:`TRAIN_TEMPLATES`; optional Gaussian noise on the
        unit sphere (``text_noise``, per-dimension std before re-normalisation)."""
        r = self.recipe
        if r.text_templates == "sample":
            picks = self.rng.integers(len(TRAIN_TEMPLATES), size=len(names))
            emb = torch.cat([self.text_encoder.prompt_embeddings([n], [TRAIN_TEMPLATES[i]])
                             for n, i in zip(names, picks)])
        else:
            emb = self.text_encoder.prompt_embeddings(list(names))
        if r.text_noise > 0:
            emb = torch.nn.functional.normalize(emb + r.text_noise * torch.randn(emb.shape, generator=self.gen), dim=-1)
        return emb

    def __call__(self, model: VITA, ep: Episode):
        text = self.text_embeddings(ep.class_names).to(ep.target.device)
        out = model(ep.target, ep.modality, ep.prompt_images, ep.prompt_masks, ep.modality, text,
                    modes=MODES, ctx_valid=ep.ctx_valid)
        targets = [{k: v.to(ep.target.device) for k, v in t.items()} for t in ep.set_targets()]
        predictions = [out["final"], *(out["aux"] if self.recipe.aux_loss else [])]
        total, logs = 0.0, {}
        n = len(predictions)
        for mode in self.recipe.train_modes:
            # every decoder layer's prediction of this mode in one criterion call (layers stacked on the
            # batch axis, same targets): the mean-reduced loss x n layers is the sum of per-layer losses
            loss, parts = self.criterion(torch.cat([p[mode]["class_logits"] for p in predictions]),
                                         torch.cat([p[mode]["mask_logits"] for p in predictions]), targets * n)
            total = total + n * loss
            logs[f"loss_{mode}"] = parts["loss_mask"] + parts["loss_dice"] + parts["loss_cls"]  # mean over layers
        logs["level"] = ep.level
        return total, logs


@torch.no_grad()
def predict(model: VITA, ep: Episode, text_encoder, mode: str) -> torch.Tensor:
    """Semantic prediction ``(B, H, W)`` (class ids at the episode's level) in one mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    text = text_encoder.prompt_embeddings(ep.class_names) if mode in ("T", "F") else None
    return _class_map(model, ep.target, ep.modality, ep.prompt_images, ep.prompt_masks, text, mode, ep.ctx_valid)


def _class_map(model: VITA, target, modality, prompt_images, prompt_masks, text, mode: str,
               valid: torch.Tensor) -> torch.Tensor:
    """One mode's class ids ``(B, H, W)`` at target size (Mask2Former semantic inference), on the CPU;
    a class with ``valid (B, K)`` False is never chosen. Prompts / text a mode does not use are
    dropped. The inputs may be on any device: they are moved to the model's."""
    use_prompts = mode in ("V", "F")
    device = next(model.parameters()).device  # inputs follow the model (the Trainer may have moved it to a GPU)
    on = (lambda t: None if t is None else t.to(device))
    valid = valid.to(device)
    out = model(on(target), modality, on(prompt_images) if use_prompts else None,
                on(prompt_masks) if use_prompts else None, modality, on(text), modes=(mode,),
                ctx_valid=valid)["final"][mode]
    scores = semantic_inference(out["class_logits"], out["mask_logits"])
    scores = torch.nn.functional.interpolate(scores, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return scores.masked_fill(~valid[:, :, None, None], -1.0).argmax(1).cpu()  # class ids back on the CPU, once


def ignore_unprompted(labels: torch.Tensor, prompted: torch.Tensor) -> torch.Tensor:
    """A copy of class-id ``labels`` where pixels of classes with ``prompted (K,)`` False are set
    to ``IGNORE_INDEX`` (255): a class nobody prompted is neither predicted nor scored."""
    if prompted.ndim != 1 or prompted.dtype != torch.bool:
        raise ValueError(f"prompted must be a (K,) bool tensor, got {prompted.dtype} {tuple(prompted.shape)}")
    k = prompted.shape[0]
    labels = labels.clone()
    labels[(labels < k) & ~prompted[labels.clamp_max(k - 1)]] = IGNORE_INDEX
    return labels


@torch.no_grad()
def evaluate(model: VITA, targets: ScenePool, prompts: ScenePool, text_encoder, *, modality: str = "optical",
             modes: Sequence[str] = MODES, level: int | None = None, names: str = "canonical",
             annotation: str = "mask", shots: int = 1, batch_size: int = 16, seed: int = 0,
             other_style: bool = True, per_class: bool = False) -> dict:
    """mIoU per mode on held-out ``targets`` with prompts from held-out ``prompts`` scenes.

    ``other_style``: draw each prompt from a scene of another regional style than the targets
    (the default, and the harder cross-region setting); ``False`` allows any style.

    Every class of the level is prompted; classes absent from the prompt pool are excluded.
    Returns ``{mode: miou}`` (with ``per_class``: ``{mode: (K,) IoU array}``, NaN for classes
    never present nor predicted); the same episodes (same prompts) are used for every mode.
    """
    was_training = model.training
    model.eval()
    level = level or targets.tree.depth
    k = targets.tree.num_classes(level)
    meters = {m: SegmentationMeter(k) for m in modes}
    rng = np.random.default_rng((seed, 11))
    for start in range(0, len(targets), batch_size):
        ids = list(range(start, min(start + batch_size, len(targets))))
        ep = make_episode(targets, ids, prompts, level, modality, rng, annotation=annotation, shots=shots, names=names,
                          other_style=other_style)
        labels = ignore_unprompted(ep.target_labels, ep.ctx_valid[0])  # classes with no prompt scene
        for mode in modes:
            meters[mode].update(predict(model, ep, text_encoder, mode), labels)
    model.train(was_training)
    if per_class:
        return {m: np.asarray(meters[m].compute()["iou"], dtype=float) for m in modes}
    return {m: float(meters[m].compute()["miou"]) for m in modes}


@torch.no_grad()
def text_name_transfer(model: VITA, targets: ScenePool, prompts: ScenePool, text_encoder, *, level: int,
                       modality: str = "optical", seed: int = 0, lost_fraction: float = 0.5,
                       min_seen_iou: float = 0.2) -> dict:
    """T-mode mIoU with canonical names vs held-out synonyms (names never seen in training).

    Returns ``seen`` / ``unseen`` mIoU, their ``ratio``, per-class IoU lists ``seen_per_class`` /
    ``unseen_per_class`` (NaN: class never present nor predicted) and ``lost``: the classes the
    model segments with their seen name (IoU >= ``min_seen_iou``) but not with the held-out one
    (IoU below ``lost_fraction`` of the seen IoU). The mIoU ratio can hide a swap (a lost class
    next to a class that gains); ``lost`` shows it.
    """
    if not 0 < lost_fraction <= 1:
        raise ValueError(f"lost_fraction must be in (0, 1], got {lost_fraction}")
    kw = dict(modality=modality, level=level, modes=("T",), seed=seed, per_class=True)
    seen = evaluate(model, targets, prompts, text_encoder, names="canonical", **kw)["T"]
    unseen = evaluate(model, targets, prompts, text_encoder, names="heldout", **kw)["T"]
    return name_transfer_summary(targets.tree.names(level), seen, unseen, lost_fraction=lost_fraction,
                                 min_seen_iou=min_seen_iou)


def name_transfer_summary(names: Sequence[str], seen, unseen, *, lost_fraction: float = 0.5,
                          min_seen_iou: float = 0.2) -> dict:
    """:func:`text_name_transfer`'s result from per-class T-mode IoUs already computed with
    :func:`evaluate` (``per_class=True``, canonical and held-out names, same episodes)."""
    if not 0 < lost_fraction <= 1:
        raise ValueError(f"lost_fraction must be in (0, 1], got {lost_fraction}")
    seen, unseen = np.asarray(seen, dtype=float), np.asarray(unseen, dtype=float)
    m_seen, m_unseen = float(np.nanmean(seen)), float(np.nanmean(unseen))
    lost = [n for n, a, b in zip(names, seen, unseen)
            if np.isfinite(a) and a >= min_seen_iou and not (np.nan_to_num(b) >= lost_fraction * a)]
    return {"seen": m_seen, "unseen": m_unseen, "ratio": m_unseen / max(m_seen, 1e-9),
            "seen_per_class": seen.tolist(), "unseen_per_class": unseen.tolist(), "lost": lost}


def train(model: VITA, pool: ScenePool, text_encoder, recipe: VITARecipe, *, progress: bool = True,
          log_every: int = 10, callbacks=(), device: str | None = None) -> list[dict]:
    """Train ``model`` in place on episodes of ``pool`` with :class:`rslab.train.Trainer`; returns the history.
    ``device="cpu"`` keeps training on the CPU even where a GPU is visible (None: the trainer's choice)."""
    config = TrainConfig(max_steps=recipe.max_steps, lr=recipe.lr,
                         warmup_steps=min(recipe.warmup_steps, recipe.max_steps),
                         clip_grad_norm=1.0, log_every=log_every, progress=progress, seed=recipe.seed,
                         cpu=str(device) == "cpu")
    trainer = Trainer(model, VITALoss(text_encoder, recipe), episode_factory(pool, recipe), config,
                      callbacks=callbacks)
    return trainer.fit(resume=False)


@torch.no_grad()
def segment(model: VITA, text_encoder, target: torch.Tensor, modality: str, prompt_images: torch.Tensor | None,
            prompt_masks: torch.Tensor | None, class_names: Sequence[str] | None, mode: str) -> torch.Tensor:
    """In-context segmentation of any images: ``target (B, C, H, W)`` -> class ids ``(B, H, W)``.

    ``prompt_images (S, C, H', W')`` / ``prompt_masks (S, K, H', W')`` are the visual prompts (V, F),
    ``class_names`` the K names (T, F). A class with an empty annotation in every shot is left out
    in V/F modes (never predicted) rather than raising, so a one-shot prompt may miss classes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if target.ndim != 4:
        raise ValueError(f"target must be (B, C, H, W), got {tuple(target.shape)}")
    was_training = model.training
    model.eval()
    k = prompt_masks.shape[1] if prompt_masks is not None else len(class_names or [])
    if k == 0:
        raise ValueError("give prompt_masks (V/F) or class_names (T) for at least one class")
    valid = torch.ones(target.shape[0], k, dtype=torch.bool, device=target.device)
    if mode in ("V", "F"):
        if prompt_images is None or prompt_masks is None:
            raise ValueError(f"mode {mode} needs prompt_images and prompt_masks")
        has = prompt_masks.flatten(2).any(-1).any(0).to(target.device)
        if not has.any():
            raise ValueError("every prompt mask is empty; annotate at least one class in the prompt image")
        valid &= has[None]
    text = text_encoder.prompt_embeddings(list(class_names)).to(target.device) if mode in ("T", "F") else None
    pred = _class_map(model, target, modality, prompt_images, prompt_masks, text, mode, valid)
    model.train(was_training)
    return pred


def level_to_leaf(tree, level: int) -> np.ndarray:
    """``(K,)`` a representative leaf id per class of ``level`` (to draw level predictions with
    :func:`rslab.viz.show_prediction`, which colours leaf-id maps at a chosen level)."""
    return np.array([min(tree.leaf_ids(node)) for node in tree.nodes(level)])


@torch.no_grad()
def heldout_name_neighbours(tree, text_encoder, level: int, train_names: str = "train") -> list[dict]:
    """How far the frozen text encoder alone carries held-out synonyms at ``level``.

    For every held-out synonym of every class, the cosine similarity (template-averaged
    embeddings) to each class's *training* names (canonical name + training synonyms, averaged
    into one class vector; with ``train_names="region"`` the names of :func:`region_names`, as
    the recipe option of the same name trains with). Returns one row per held-out name: ``name``, ``true`` class,
    ``nearest`` class, ``sim_true`` and ``sim_nearest``. A row with ``nearest != true`` is a
    name the text encoder places closer to another class: a text branch that only inherits the
    encoder's neighbourhood cannot get it right, so this bounds the unseen-synonym metric.
    """
    if not 1 <= level <= tree.depth:
        raise ValueError(f"level must be in 1..{tree.depth}, got {level}")
    if train_names not in ("train", "region"):
        raise ValueError(f"train_names must be 'train' or 'region', got {train_names!r}")
    names = tree.names(level)
    protos = text_encoder.prompt_embeddings([tree.synonyms(n, "train") if train_names == "train"
                                             else region_names(tree, n)
                                             for n in names])
    rows = []
    for c, name in enumerate(names):
        held = tree.synonyms(name, "heldout")
        if not held:
            continue
        sims = text_encoder.prompt_embeddings(held) @ protos.T  # (H, K)
        for h, s in zip(held, sims):
            j = int(s.argmax())
            rows.append({"name": h, "true": name, "nearest": names[j], "sim_true": float(s[c]),
                         "sim_nearest": float(s[j])})
    return rows


# --------------------------------------------------------------------------------------------
# Full profile: episodes from a real segmentation dataset (LoveDA, ...), read from disk
# --------------------------------------------------------------------------------------------


class _LazyStack:
    """``x[i]`` -> one item, ``x[ids]`` -> stacked items, read through ``fetch(i)``; ``shape`` as a tensor's."""

    def __init__(self, n: int, fetch, item_shape: tuple[int, ...]):
        self.n, self.fetch, self.shape = n, fetch, (n, *item_shape)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if isinstance(index, (int, np.integer)):
            if not -self.n <= int(index) < self.n:
                raise IndexError(f"index {index} out of range for {self.n} scenes")
            return self.fetch(int(index) % self.n)
        if isinstance(index, slice):
            index = range(*index.indices(self.n))
        return torch.stack([self.fetch(int(i)) for i in np.asarray(list(index)).reshape(-1)])


class CatalogScenePool:
    """The :class:`~rslab.data.episodes.ScenePool` interface over a real labelled dataset (e.g. LoveDA's
    :class:`~rslab.data.readers.MMSegFolder`), for VITA episodes in the full profile.

    Scenes are read from disk when an episode needs them and resized to ``size`` (images bilinear
    with antialiasing, labels nearest); a decoded scene is kept as uint8 (images rounded to 1/255:
    the releases are 8-bit already) so that repeated episodes do not decode it again: about
    ``4 * size**2`` bytes per scene (1 MB at 512 px, 2.6 GB for LoveDA's 2522 training scenes).
    ``cache=False`` keeps nothing. Class presence per level is computed once from the labels.
    ``tree``: the dataset's class tree (leaf ids = the reader's label ids), e.g. ``load_tree("loveda")``.
    Optical only: ``images("sar")`` raises (the datasets the catalog has for V/T/F carry no SAR).
    """

    def __init__(self, reader, tree, size: int, indices=None, min_pixels: int = 24, cache: bool = True):
        self.reader, self.tree, self.size, self.min_pixels, self.cache = reader, tree, int(size), min_pixels, cache
        self.indices = list(range(len(reader))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise ValueError("a CatalogScenePool needs at least one scene")
        if self.size < 16:
            raise ValueError(f"size must be >= 16 px, got {size}")
        self._images: dict[int, torch.Tensor] = {}
        self._labels: dict[int, torch.Tensor] = {}
        first = self._load(0)
        self.channels = int(first[0].shape[0])
        self.styles = np.zeros(len(self.indices), dtype=np.int64)  # one "region": prompts from any scene
        self.optical = _LazyStack(len(self), lambda i: self._load(i)[0], (self.channels, self.size, self.size))
        self.labels = _LazyStack(len(self), lambda i: self._load(i)[1], (self.size, self.size))
        self.presence: dict[int, np.ndarray] = {}
        leaf = [self._load(i)[1] for i in range(len(self))] if len(self) else []
        for level in range(1, self.tree.depth + 1):
            lut = torch.from_numpy(self.tree.level_lut(level)).long()
            k = self.tree.num_classes(level)
            counts = []
            for lab in leaf:
                lv = lut[lab]
                counts.append(torch.bincount(lv[lv != IGNORE_INDEX].flatten(), minlength=k)[:k])
            self.presence[level] = (torch.stack(counts) >= min_pixels).numpy()
        if not cache:
            self._images.clear()
            self._labels.clear()

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i in self._images:
            return self._images[i].float() / 255.0, self._labels[i].long()
        sample = self.reader[self.indices[i]]
        if sample.labels is None:
            raise ValueError(f"{self.reader!r} item {self.indices[i]} has no labels; VITA episodes need them")
        x = torch.from_numpy(np.asarray(sample.optical, dtype=np.float32))[None]
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                            align_corners=False)[0].clamp(0, 1)
        lab = torch.from_numpy(np.asarray(sample.labels).astype(np.int64))[None, None].float()
        lab = torch.nn.functional.interpolate(lab, size=(self.size, self.size), mode="nearest")[0, 0].long()
        if lab.max() > 255 or lab.min() < 0:
            raise ValueError(f"{self.reader!r} item {self.indices[i]}: label ids must lie in 0..255")
        x8, lab8 = (x * 255).round().to(torch.uint8), lab.to(torch.uint8)
        if self.cache:
            self._images[i], self._labels[i] = x8, lab8
        return x8.float() / 255.0, lab8.long()

    def __len__(self) -> int:
        return len(self.indices)

    def images(self, modality: str):
        if modality == "optical":
            return self.optical
        if modality == "sar":
            raise ValueError(f"{self.reader!r} has no SAR images; evaluate and train this pool on 'optical' only")
        raise ValueError(f"modality must be 'optical' or 'sar', got {modality!r}")

    def level_labels(self, level: int):
        lut = torch.from_numpy(self.tree.level_lut(level)).long()
        return _LazyStack(len(self), lambda i: lut[self._load(i)[1]], (self.size, self.size))
