"""Training recipes of notebook 02 (SkySense V2, QSACL): pre-training of the unified backbone
with QSACL or the image-level contrastive baseline, and the frozen-feature linear segmentation probe.

The models, views, loss assembly and feature extraction live in :mod:`rslab.models.qsacl`
(and :mod:`rslab.losses.qsacl`); this module adds the optimisation: :class:`~rslab.train.Trainer`
with an :class:`~rslab.train.EMA` teacher for pre-training, and the same trainer with Adam for the probe.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rslab.data.readers.pairs import crop_pair
from rslab.data.sar import normalize_sar
from rslab.metrics import iou_per_class
from rslab.models.backbone import UnifiedBackbone
from rslab.models.qsacl import ContrastiveSSL, LinearProbe, extract_features, pretraining_loss
from rslab.train import EMA, TrainConfig, Trainer, fit_preserving_rng

__all__ = ["CatalogScenes", "catalog_probe_tensors", "PAPER_LR", "pretrain_config", "pretrain", "fit_linear_probe",
           "linear_probe_miou"]


class CatalogScenes(torch.utils.data.Dataset):
    """One modality of a co-registered real dataset (a catalog reader such as
    :class:`~rslab.data.readers.pairs.SEN12MSPairs`), read from disk item by item: the centre
    ``size x size`` window, optical as Sentinel-2 B4, B3, B2, B8 in [0, 1] (the RGB + NIR layout of the
    synthetic world), SAR normalised by :func:`rslab.data.sar.normalize_sar`. Nothing is held in
    memory, so the pre-training set can be any size (full profile)."""

    def __init__(self, reader, modality: str, size: int):
        if modality not in ("optical", "sar"):
            raise ValueError(f"modality must be 'optical' or 'sar', got {modality!r}")
        if len(reader) < 2:
            raise ValueError(f"need at least 2 scenes to pre-train on, the reader has {len(reader)}")
        self.reader, self.modality, self.size = reader, modality, int(size)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> torch.Tensor:
        window = crop_pair(self.reader[index], self.size)
        if window[self.modality] is None:
            raise ValueError(f"{self.reader!r} item {index} has no {self.modality} image")
        x = window["optical"] if self.modality == "optical" else normalize_sar(window["sar"])
        return torch.from_numpy(np.ascontiguousarray(x))


def catalog_probe_tensors(reader, size: int, limit: int | None = None):
    """``(optical, sar, labels)`` tensors of the first ``limit`` labelled items of ``reader`` (centre
    windows; optical B4, B3, B2, B8; SAR normalised): the linear-probe sets, small enough for memory."""
    n = len(reader) if limit is None else min(int(limit), len(reader))
    if n < 1:
        raise ValueError("the probe set is empty")
    windows = [crop_pair(reader[i], size) for i in range(n)]
    if any(w["labels"] is None or w["optical"] is None or w["sar"] is None for w in windows):
        raise ValueError(f"{reader!r}: probe items need optical, SAR and labels")
    optical = torch.from_numpy(np.stack([w["optical"] for w in windows]))
    sar = torch.from_numpy(np.stack([normalize_sar(w["sar"]) for w in windows]))
    labels = torch.from_numpy(np.stack([w["labels"] for w in windows]).astype(np.int64))
    return optical, sar, labels


#: SkySense V2's peak pre-training learning rate (AdamW), the ``lr`` of :func:`pretrain_config`.
PAPER_LR = 2e-4


def pretrain_config(max_steps: int, *, lr: float = PAPER_LR, warmup_steps: int = 10, seed: int = 0,
                    out_dir=None, progress: bool = False, device: str = "cpu") -> TrainConfig:
    """The :class:`rslab.train.TrainConfig` of a QSACL pre-training run: AdamW at ``lr`` with
    ``warmup_steps`` of warm-up (clamped to ``max_steps``) and cosine decay, a history record every
    ``max_steps // 20`` steps. ``device="cpu"`` forces the CPU; ``"auto"`` (or ``"cuda"``) lets the
    trainer use a GPU when there is one."""
    if str(device).split(":")[0] not in ("cpu", "auto", "cuda"):
        raise ValueError(f"device must be 'cpu', 'auto' or 'cuda', got {device!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    return TrainConfig(max_steps=max_steps, lr=lr, warmup_steps=min(warmup_steps, max_steps), seed=seed,
                       log_every=max(1, max_steps // 20), out_dir=out_dir, progress=progress, cpu=device == "cpu")


def pretrain(student: ContrastiveSSL, scenes: dict[str, torch.Tensor], config: TrainConfig, batch_size: int = 16,
             gsd: float | None = None, alt_scenes: dict[str, torch.Tensor] | None = None, num_workers: int = 0):
    """Pre-train ``student`` (QSACL or the image-level baseline) with :class:`rslab.train.Trainer`.

    ``config``: the run's budget (``max_steps``, ``lr``, ``warmup_steps``, ``seed``, ``cpu``...), usually
    :func:`pretrain_config`; ``batch_size``: scenes per step (the engine's budget has no batch size:
    batches are built here).

    ``scenes`` maps modality -> (N, C, H, W) normalised scenes, or a ``Dataset`` of (C, H, W) scenes
    streamed from disk (e.g. :class:`CatalogScenes`; ``num_workers`` DataLoader workers read them,
    sampled with replacement, seeded by (seed, epoch)); steps cycle through the modalities
    (one modality per batch, so one shared backbone learns all of them, as in SkySense V2). The
    EMA teacher follows ``student.cfg.momentum`` (cosine). AdamW with the paper's peak learning
    rate 2e-4 (:data:`PAPER_LR`), cosine decay after ``warmup_steps``: on the tiny CPU preset a 10x larger
    rate made the last-stage features collapse (a near-constant vector of effective rank 2-3)
    and the linear probe fall below random init. Views are drawn from a generator
    seeded by (seed, step), so a run is reproducible and resumes exactly. Returns the trainer
    (``trainer.model`` = student, ``trainer.ema_model`` = teacher, ``trainer.history``).

    ``alt_scenes`` (optional): modality -> (N, K, C, H, W) (or (N, C, H, W), K = 1) other
    renderings of the same N scenes (same ground, e.g. other regional styles). When a modality
    has them, each sample's local views are cropped from one of its K renderings, drawn at
    random per step (:func:`rslab.models.qsacl.multi_crop`); ``None`` = plain multi-crop.
    """
    if not scenes:
        raise ValueError("scenes must map at least one modality to a (N, C, H, W) tensor")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a rslab.train.TrainConfig (e.g. pretrain_config(max_steps)), "
                         f"got {type(config).__name__}")
    if batch_size < 2:
        raise ValueError(f"need batch_size >= 2 (InfoNCE negatives), got {batch_size}")
    steps, seed = config.max_steps, config.seed
    streamed = {name for name, x in scenes.items() if isinstance(x, torch.utils.data.Dataset)}
    for name, x in scenes.items():
        student.backbone._check_modality(name)
        if name in streamed:
            if len(x) < 2:
                raise ValueError(f"scenes[{name!r}] must hold >= 2 scenes, got {len(x)}")
            continue
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] < 2:
            raise ValueError(f"scenes[{name!r}] must be a (N >= 2, C, H, W) tensor or a Dataset, "
                             f"got {getattr(x, 'shape', None)}")
    if streamed and alt_scenes:
        raise ValueError("alt_scenes needs in-memory scenes (tensors), not streamed Datasets")
    alts: dict[str, torch.Tensor] = {}
    for name, alt in (alt_scenes or {}).items():
        if name not in scenes:
            raise ValueError(f"alt_scenes has modality {name!r} that scenes lacks ({sorted(scenes)})")
        if isinstance(alt, torch.Tensor) and alt.ndim == 4:
            alt = alt.unsqueeze(1)
        x = scenes[name]
        if (not isinstance(alt, torch.Tensor) or alt.ndim != 5 or alt.shape[0] != x.shape[0]
                or alt.shape[2:] != x.shape[1:]):
            raise ValueError(f"alt_scenes[{name!r}] must be (N, K, C, H, W) renderings of scenes[{name!r}] "
                             f"{tuple(x.shape)}, got {getattr(alt, 'shape', None)}")
        alts[name] = alt
    modalities = list(scenes)
    ema = EMA(student, momentum=student.cfg.momentum, total_steps=steps)

    def streams(epoch: int) -> dict:
        """A DataLoader per streamed modality: random scenes with replacement, read by ``num_workers``
        worker processes, pinned for the copy to a GPU."""
        out = {}
        for name in streamed:
            per = -(-steps // len(modalities)) * batch_size
            sampler = torch.utils.data.RandomSampler(
                scenes[name], replacement=True, num_samples=per,
                generator=torch.Generator().manual_seed(seed * 7919 + epoch * 31 + modalities.index(name)))
            out[name] = iter(torch.utils.data.DataLoader(
                scenes[name], batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                pin_memory=not config.cpu and torch.cuda.is_available(), drop_last=True,
                persistent_workers=False))
        return out

    def batches(epoch: int):
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        loaders = streams(epoch) if streamed else {}
        for i in range(steps):  # one "epoch" = the whole run; the trainer stops at max_steps
            modality = modalities[i % len(modalities)]
            if modality in loaders:
                batch = {"images": next(loaders[modality]), "modality": modality,
                         "view_seed": seed * 1_000_003 + epoch * steps + i}
                yield batch
                continue
            data = scenes[modality]
            idx = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),), generator=g)
            batch = {"images": data[idx], "modality": modality, "view_seed": seed * 1_000_003 + epoch * steps + i}
            if modality in alts:
                alt = alts[modality]
                k = torch.randint(0, alt.shape[1], (len(idx),), generator=g)
                batch["alt_images"] = alt[idx, k]
            yield batch

    def loss_fn(model: ContrastiveSSL, batch: dict) -> dict:
        g = torch.Generator().manual_seed(int(batch["view_seed"]))
        return pretraining_loss(model, ema.model, batch["images"], batch["modality"], gsd, g, batch.get("alt_images"))

    trainer = Trainer(student, loss_fn, batches, config, ema=ema)
    trainer.fit(resume=False)
    return trainer


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300,
                     lr: float = 0.05, weight_decay: float = 1e-4, ignore_index: int = 255,
                     label_stride: int = 4, seed: int = 0) -> LinearProbe:
    """Train a 1x1-conv probe on frozen ``features`` (N, C, h, w) against ``labels`` (N, H, W):
    logits are upsampled (bilinear) to the label grid subsampled every ``label_stride`` pixels
    (a 16x cheaper loss at stride 4, still finer than the features) and trained with
    cross-entropy, full batch, Adam, ``steps`` steps of :class:`rslab.train.Trainer`. Evaluate at
    full resolution with ``probe(f, (H, W))``."""
    if features.ndim != 4 or labels.ndim != 3 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features (N, C, h, w) and labels (N, H, W) must share N, "
                         f"got {tuple(features.shape)}, {tuple(labels.shape)}")
    if label_stride < 1:
        raise ValueError(f"label_stride must be >= 1, got {label_stride}")
    if labels[labels != ignore_index].numel() and int(labels[labels != ignore_index].max()) >= num_classes:
        raise ValueError(f"labels contain class {int(labels[labels != ignore_index].max())} "
                         f">= num_classes={num_classes}")
    torch.manual_seed(seed)
    mean = features.mean(dim=(0, 2, 3))
    std = features.std(dim=(0, 2, 3)).clamp_min(1e-6)
    probe = LinearProbe(mean, std, num_classes).to(features.device)
    # one label per stride x stride cell (its centre pixel); logits interpolated to that grid
    off = label_stride // 2
    labels = labels[:, off::label_stride, off::label_stride].long()
    # standardise once (what probe.forward does on every call): same maths, ~2x faster on CPU
    standardised = probe.standardise(features)

    def loss_fn(model: LinearProbe, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        f, y = batch
        return F.cross_entropy(model.classify(f, y.shape[-2:]), y, ignore_index=ignore_index)

    # the engine with the probe's own optimiser: Adam (L2 weight decay), constant lr, fp32, one full batch
    config = TrainConfig(max_steps=steps, lr=lr, weight_decay=weight_decay, schedule="constant", mixed_precision="no",
                         seed=seed, log_every=steps, progress=False, cpu=features.device.type == "cpu")
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    # seeded by `seed`; the caller's global generators are left as they were
    fit_preserving_rng(probe, loss_fn, [(standardised, labels)], config, optimizer=optimizer)
    return probe.eval()


def linear_probe_miou(backbone: UnifiedBackbone, train_images: torch.Tensor, train_labels: torch.Tensor,
                      test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int, modality: str,
                      gsd: float | None = None, stages: tuple[int, ...] = (3,), steps: int = 300,
                      ignore_index: int = 255) -> dict:
    """Frozen-feature linear segmentation probe: fit on train scenes, mIoU on held-out ones.

    Returns ``{"miou", "iou_per_class" (NaN where a class is absent), "pred" (N, H, W),
    "test_features"}`` (the frozen test features the probe read, on the backbone's device, for
    diagnostics such as :func:`rslab.models.qsacl.feature_diagnostics` without a second forward pass).
    """
    device = next(backbone.parameters()).device  # images and labels follow the backbone
    train_f = extract_features(backbone, train_images.to(device), modality, gsd, stages)
    test_f = extract_features(backbone, test_images.to(device), modality, gsd, stages)
    probe = fit_linear_probe(train_f, train_labels.to(device), num_classes, steps=steps, ignore_index=ignore_index)
    with torch.no_grad():
        pred = probe(test_f, test_labels.shape[-2:]).argmax(dim=1).cpu()
    ious = iou_per_class(pred.numpy(), test_labels.cpu().numpy(), num_classes, ignore_index=ignore_index)
    return {"miou": float(np.nanmean(ious)), "iou_per_class": ious, "pred": pred, "test_features": test_f}
