"""Training, evaluation and the ablation of RS2-SAM2 (what notebook 04 calls).

- :func:`train_rs2sam2` fine-tunes one :class:`~rslab.models.rs2sam2.RS2SAM2` with the paper's loss
  (``1.0 CE + 0.1 Dice + 0.2 L_tbl``) using :class:`rslab.train.Trainer` (AdamW, warm-up + cosine;
  the fused AdamW kernel of :func:`rslab.train.default_optimizer` with ``fused=True``, the same update
  in fewer CPU kernel calls).
- :func:`evaluate_referring` predicts every expression of a :class:`~rslab.data.referring.ReferringDataset`
  and scores it at the *original* mask resolution with :class:`rslab.metrics.ReferringMeter`
  (mIoU, oIoU, Pr@0.5..0.9), as the RRSIS benchmarks do.
- :func:`run_ablation` trains the rows of the paper's component ablation (Table "Ablation": baseline
  SAM2 + union encoder, + L_tbl, + L_tbl + MPG, + L_tbl + BHFM, all) with the same budget each.
- :func:`segment` is the one-image, one-expression call behind the notebook's widget.
- :func:`save_rs2sam2` / :func:`load_rs2sam2`: safetensors weights + the config as JSON.

Text: the MiniLM token states of each distinct expression are computed once
(:class:`~rslab.models.rs2sam2.MiniLMTokenEncoder` caches them), since MiniLM is frozen and a
training run repeats each expression many times.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rslab.data.referring import ReferringDataset, promptable_segments, resize_mask, resize_rgb, rgb_image
from rslab.io import write_atomically, write_text_atomically
from rslab.losses.segmentation import dice_loss, sigmoid_bce_loss
from rslab.metrics import ReferringMeter
from rslab.models.rs2sam2 import (
    RS2SAM2,
    MiniLMTokenEncoder,
    PromptableSAM2,
    RS2SAM2Config,
    build_sam2_model,
    load_sam2_checkpoint,
    read_sam2_state,
)
from rslab.train import TrainConfig, Trainer, default_optimizer, load_history, make_loader
from rslab.train.checkpoint import CHECKPOINTS

__all__ = [
    "ABLATION_ROWS", "ABLATION_LABELS", "RS2SAM2TrainConfig", "TrainedRS2SAM2", "AblationResult",
    "make_batches", "stream_batches", "train_rs2sam2", "predict_logits", "evaluate_referring", "run_ablation",
    "segment",
    "save_rs2sam2", "load_rs2sam2", "StandinPretrainConfig", "PromptableSAM2", "sample_prompts",
    "pretrain_sam2_standin", "standin_checkpoint", "StandinResult", "evaluate_promptable",
    "is_new_part", "new_part_lr_scale", "check_expression_lengths", "expression_texts",
]

# The paper's component ablation (RefSegRS), in its order. Each row only changes these switches.
ABLATION_ROWS: dict[str, dict[str, Any]] = {
    "baseline": dict(use_bhfm=False, use_mpg=False, boundary_weight=0.0),
    "tbl": dict(use_bhfm=False, use_mpg=False, boundary_weight=0.2),
    "tbl_mpg": dict(use_bhfm=False, use_mpg=True, boundary_weight=0.2),
    "tbl_bhfm": dict(use_bhfm=True, use_mpg=False, boundary_weight=0.2),
    "full": dict(use_bhfm=True, use_mpg=True, boundary_weight=0.2),
}
ABLATION_LABELS: dict[str, str] = {
    "baseline": "SAM2 + union encoder (baseline)",
    "tbl": "+ L_tbl",
    "tbl_mpg": "+ L_tbl + MPG",
    "tbl_bhfm": "+ L_tbl + BHFM",
    "full": "+ all (RS2-SAM2)",
}


@dataclass
class RS2SAM2TrainConfig:
    """Optimisation settings of one run (the paper: AdamW, batch 1 on 8 GPUs, 40-60 epochs).

    max_steps: optimiser steps; batch_size: expressions per step; lr / weight_decay: AdamW;
    warmup_steps: linear warm-up before the cosine decay; clip_grad_norm: global gradient-norm
    clip (None = off); seed: model initialisation and batch order; progress: tqdm bar.
    new_lr_mult: learning-rate factor for the parts that no SAM2 checkpoint provides (union encoder,
    MPG, BHFM, the CLS-to-prompt projection, the boundary-loss weight); SAM2's own parts use ``lr``
    (1.0: one rate for all, the default).
    """

    max_steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    clip_grad_norm: float | None = 1.0
    seed: int = 0
    progress: bool = True
    new_lr_mult: float = 1.0
    grad_accum_steps: int = 1             # batches per optimiser step (the paper's batch where it does not fit)
    num_workers: int | str = "auto"       # loader processes for data read on the fly ("auto": 0 on CPU, more on GPU)
    mixed_precision: str = "auto"         # rslab.train: bf16 autocast on GPUs that support it, fp32 on the CPU
    estimate_warmup: int = 0              # >0: print Trainer.estimate (timed over this many passes) before training
    checkpoint_every: int = 0             # with an out_dir: a resumable checkpoint every N steps (0: at the end)
    cpu: bool = False                     # train on the CPU even when a GPU is present

    def __post_init__(self):
        if not self.new_lr_mult > 0:
            raise ValueError(f"new_lr_mult must be > 0, got {self.new_lr_mult!r}")
        if self.num_workers != "auto" and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ValueError(f"num_workers must be 'auto' or an int >= 0, got {self.num_workers!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an int >= 0, got {self.checkpoint_every!r}")
        if not isinstance(self.estimate_warmup, int) or self.estimate_warmup < 0:
            raise ValueError(f"estimate_warmup must be an int >= 0, got {self.estimate_warmup!r}")
        _check_run_settings(self, ("max_steps", "batch_size", "grad_accum_steps"))


def _check_run_settings(run, int_fields: Sequence[str]) -> None:
    """Checks shared by :class:`RS2SAM2TrainConfig` and :class:`StandinPretrainConfig`: ``int_fields``
    are ints >= 1 and ``lr > 0``; the warm-up is clamped to ``max_steps`` (a CI profile with few steps)."""
    for name in int_fields:
        v = getattr(run, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if not run.lr > 0:
        raise ValueError(f"lr must be > 0, got {run.lr!r}")
    run.warmup_steps = min(int(run.warmup_steps), run.max_steps)


def _trainer_config(run, **extra):
    """The :class:`rslab.train.TrainConfig` of a run config, whose budget fields carry TrainConfig's names
    (``max_steps``, ``lr``, ``weight_decay``, ``warmup_steps``, ``clip_grad_norm``, ``seed``, ``progress``)."""
    for key in ("grad_accum_steps", "mixed_precision", "cpu"):
        if hasattr(run, key):
            extra.setdefault(key, getattr(run, key))
    return TrainConfig(max_steps=run.max_steps, lr=run.lr, weight_decay=run.weight_decay, warmup_steps=run.warmup_steps,
                       clip_grad_norm=run.clip_grad_norm, log_every=max(1, min(10, run.max_steps // 10)), seed=run.seed,
                       progress=run.progress, **extra)


@dataclass
class TrainedRS2SAM2:
    """A trained model with its history (list of logged records) and training wall time."""

    model: RS2SAM2
    history: list[dict[str, Any]]
    train_s: float
    steps: int
    load_report: dict[str, list[str]] | None = None


@dataclass
class AblationResult:
    """Per-row metrics (``metrics[row]`` = :func:`evaluate_referring` output), models, timings."""

    metrics: dict[str, dict[str, float]]
    models: dict[str, RS2SAM2] = field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    train_s: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)

    def table(self, keys: Sequence[str] = ("pr50", "pr70", "pr90", "oiou", "miou", "empty")) -> str:
        """The ablation as a Markdown table, values in percent (as the paper reports them).

        ``empty`` (not in the paper) is the share of expressions with an empty predicted mask."""
        names = {"pr50": "Pr@0.5", "pr70": "Pr@0.7", "pr90": "Pr@0.9", "oiou": "oIoU", "miou": "mIoU",
                 "empty": "empty masks"}
        lines = ["| configuration | " + " | ".join(names.get(k, k) for k in keys) + " | steps | train s |",
                 "|---|" + "---:|" * (len(keys) + 2)]
        for row, m in self.metrics.items():
            cells = " | ".join(f"{100 * m[k]:.1f}" for k in keys)
            lines.append(f"| {ABLATION_LABELS.get(row, row)} | {cells} | {self.steps.get(row, '?')} | "
                         f"{self.train_s.get(row, float('nan')):.0f} |")
        return "\n".join(lines)

    def flat(self) -> dict[str, float]:
        """``{"miou_full": ..., "pr50_baseline": ...}``: every row's numbers under ``<metric>_<row>``."""
        return {f"{k}_{row}": float(v) for row, m in self.metrics.items() for k, v in m.items() if k != "n"}


# ------------------------------------------------------------------------------------------------
# Batches


def _fits_in_memory(data: ReferringDataset, image_size: int) -> bool:
    """Whether ``data.stacked(image_size)`` stays under ~2 GB (else :func:`stream_batches` reads on the fly)."""
    return len(data) * image_size ** 2 * 16 <= 2 ** 31


def make_batches(stacked: dict, encoder: MiniLMTokenEncoder, batch_size: int, seed: int = 0,
                 drop_last: bool = True) -> Callable[[int], Iterator[dict]]:
    """``epoch -> iterator of batches`` over :meth:`ReferringDataset.stacked` tensors.

    The order is a seeded permutation per epoch (deterministic, so :class:`rslab.train.Trainer`
    can resume exactly). All distinct expressions are encoded by MiniLM once, here.
    Batches hold ``images (B, 3, S, S)``, ``targets (B, S, S)``, ``text_states (B, L, 384)``,
    ``text_pad (B, L)``.
    """
    for key in ("images", "targets", "texts"):
        if key not in stacked:
            raise ValueError(f"stacked must come from ReferringDataset.stacked(size) (missing {key!r})")
    n = len(stacked["texts"])
    if n < batch_size and drop_last:
        raise ValueError(f"only {n} training expressions for a batch of {batch_size}: "
                         "render more scenes or lower batch_size")
    encoder(list(dict.fromkeys(stacked["texts"])))  # fill the cache once (raises on bad expressions)

    def batches(epoch: int) -> Iterator[dict]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            states, pad = encoder([stacked["texts"][i] for i in idx.tolist()])
            yield {"images": stacked["images"][idx], "targets": stacked["targets"][idx],
                   "text_states": states, "text_pad": pad}

    return batches


def stream_batches(data: ReferringDataset, encoder: MiniLMTokenEncoder, batch_size: int, image_size: int,
                   seed: int = 0, num_workers: int | str = 0) -> Callable[[int], Iterator[dict]]:
    """Like :func:`make_batches` but reading items on the fly (real datasets too large for memory).

    Images are resized to ``image_size`` per batch; each epoch is a seeded shuffle.
    ``num_workers`` loader processes read and resize items in parallel with training
    (``"auto"``: :func:`rslab.train.auto_num_workers`); the order does not depend on it.
    """
    if len(data) < batch_size:
        raise ValueError(f"only {len(data)} training expressions for a batch of {batch_size}")

    def to_batch(items: list[dict]) -> dict:  # the per-item resize of ReferringDataset.stacked
        return {"images": torch.stack([resize_rgb(it["image"][None], image_size)[0] for it in items]),
                "targets": torch.stack([resize_mask(it["mask"], image_size) for it in items]),
                "texts": [it["text"] for it in items]}

    def batches(epoch: int) -> Iterator[dict]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loader = make_loader(data, batch_size, shuffle=True, drop_last=True, generator=g, num_workers=num_workers,
                             collate_fn=to_batch)  # workers decode + resize while the GPU trains; pinned on GPUs
        for b in loader:
            states, pad = encoder(b.pop("texts"))
            yield {**b, "text_states": states, "text_pad": pad}

    return batches


def _loss_fn(model: torch.nn.Module, batch: dict):
    out = model(batch["images"], batch["text_states"], batch["text_pad"])
    base = getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
    return base.loss(out, batch["targets"])


# ------------------------------------------------------------------------------------------------
# Training


def train_rs2sam2(cfg: RS2SAM2Config, train: ReferringDataset | dict, encoder: MiniLMTokenEncoder,
                  tcfg: RS2SAM2TrainConfig | None = None, out_dir: str | Path | None = None,
                  model: RS2SAM2 | None = None, eval_fn: Callable | None = None,
                  sam2_checkpoint: str | Path | None = None, resume: bool = True) -> TrainedRS2SAM2:
    """Fine-tune RS2-SAM2 on ``train`` (a dataset, or its ``stacked(cfg.image_size)`` dict).

    ``model`` lets the caller pass a prepared model (e.g. after :func:`load_sam2_checkpoint`);
    otherwise one is built from ``cfg`` with ``torch.manual_seed(tcfg.seed)``. ``out_dir`` keeps
    the Trainer's history and checkpoints (None: in memory). ``sam2_checkpoint``: a SAM2 checkpoint
    (``{"model": state_dict}``) loaded non-strictly before training (:func:`load_sam2_checkpoint`);
    its missing/unexpected keys are returned in ``load_report``. Returns the model in eval mode.
    With ``out_dir`` and ``resume`` (the default), a run interrupted there continues from its last
    checkpoint (and a finished one is not retrained); ``resume=False`` starts over.
    """
    tcfg = tcfg or RS2SAM2TrainConfig()
    if not isinstance(cfg, RS2SAM2Config):
        raise ValueError(f"cfg must be an RS2SAM2Config, got {type(cfg).__name__}")
    if isinstance(train, ReferringDataset) and not _fits_in_memory(train, cfg.image_size):
        # more than ~2 GB as tensors (a real dataset at 1024 px): read it on the fly
        batches = stream_batches(train, encoder, tcfg.batch_size, cfg.image_size, tcfg.seed, tcfg.num_workers)
    else:
        stacked = train.stacked(cfg.image_size) if isinstance(train, ReferringDataset) else train
        if stacked["images"].shape[-1] != cfg.image_size:
            raise ValueError(f"training tensors are {stacked['images'].shape[-1]} px but the model expects "
                             f"{cfg.image_size}: call dataset.stacked({cfg.image_size})")
        batches = make_batches(stacked, encoder, tcfg.batch_size, tcfg.seed)
    if model is None:
        torch.manual_seed(tcfg.seed)
        model = RS2SAM2(cfg)
    elif model.cfg != cfg:
        raise ValueError("model.cfg differs from cfg; pass the model's own config")
    report = load_sam2_checkpoint(model, sam2_checkpoint) if sam2_checkpoint is not None else None
    config = _trainer_config(tcfg, out_dir=out_dir, checkpoint_every=tcfg.checkpoint_every)
    optimizer = default_optimizer(model, tcfg.lr, tcfg.weight_decay, fused=True,
                                  lr_scale=new_part_lr_scale(tcfg.new_lr_mult))
    trainer = Trainer(model, _loss_fn, batches, config, optimizer=optimizer, eval_fn=eval_fn)
    if tcfg.estimate_warmup:
        trainer.estimate(warmup=tcfg.estimate_warmup)
    start = time.perf_counter()
    history = trainer.fit(resume=bool(resume) and out_dir is not None)
    train_s = time.perf_counter() - start
    model = trainer.model.eval()
    return TrainedRS2SAM2(model=model, history=list(history), train_s=train_s, steps=tcfg.max_steps, load_report=report)


def is_new_part(name: str) -> bool:
    """Whether parameter ``name`` of :class:`RS2SAM2` is one that no SAM2 checkpoint provides."""
    return not name.startswith("sam.") or ".bhfm." in name


def new_part_lr_scale(new_lr_mult: float) -> Callable[[str], float]:
    """``lr_scale`` for :func:`rslab.train.default_optimizer`: the parts no SAM2 checkpoint
    provides (:func:`is_new_part`) train at ``lr * new_lr_mult``, SAM2's own parts at ``lr``."""
    return lambda name: new_lr_mult if is_new_part(name) else 1.0


# ------------------------------------------------------------------------------------------------
# Inference and evaluation


@torch.no_grad()
def predict_logits(model: RS2SAM2, encoder: MiniLMTokenEncoder, images: torch.Tensor,
                   texts: Sequence[str]) -> torch.Tensor:
    """Mask logits ``(B, 1, S, S)`` at the model's size for RGB ``images (B, 3, H, W)`` in [0, 1]."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of expressions, one per image")
    if images.ndim != 4 or len(texts) != images.shape[0]:
        raise ValueError(f"need one expression per image: images {tuple(images.shape)}, {len(texts)} texts")
    device = next(model.parameters()).device
    states, pad = encoder(list(texts))
    images = resize_rgb(images.float(), model.cfg.image_size) if images.shape[1] == 3 else images
    return model(images.to(device), states.to(device), pad.to(device))["masks"].float().cpu()


def _upsample_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(1, S, S)`` logits -> ``(H, W)`` bool mask at the original resolution (threshold p = 0.5)."""
    up = torch.nn.functional.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)
    return up[0, 0] > 0


@torch.no_grad()
def evaluate_referring(model: RS2SAM2, data: ReferringDataset, encoder: MiniLMTokenEncoder,
                       batch_size: int = 32, by_class: bool = False) -> dict[str, Any]:
    """Referring metrics on ``data`` at the original mask resolution.

    Each prediction (logits at the model's size) is upsampled bilinearly to its ground-truth mask's
    size and thresholded at probability 0.5. Returns :meth:`ReferringMeter.compute` (``miou``,
    ``oiou``, ``pr50`` .. ``pr90``, ``n``) plus two diagnostics: ``empty`` (share of expressions
    whose predicted mask is empty) and ``area_ratio`` (predicted foreground pixels / ground-truth
    foreground pixels, over all expressions; 1 = the right amount of foreground). With
    ``by_class``, also ``by_class: {class: {miou, n}}``.
    """
    if not isinstance(data, ReferringDataset):
        raise ValueError(f"data must be a ReferringDataset, got {type(data).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    meter = ReferringMeter()
    per_class: dict[str, ReferringMeter] = {}
    n_empty, pred_px, gt_px = 0, 0, 0
    try:
        for start in range(0, len(data), batch_size):
            items = [data[k] for k in range(start, min(start + batch_size, len(data)))]
            images = torch.stack([resize_rgb(it["image"][None], model.cfg.image_size)[0] for it in items])
            logits = predict_logits(model, encoder, images, [it["text"] for it in items])
            for it, lg in zip(items, logits):
                pred = _upsample_to(lg, tuple(it["mask"].shape)).numpy()
                gt = it["mask"].numpy()
                meter.update(pred, gt)
                n_empty += int(not pred.any())
                pred_px, gt_px = pred_px + int(pred.sum()), gt_px + int(gt.sum())
                if by_class:
                    per_class.setdefault(it["target_class"] or "?", ReferringMeter()).update(pred, gt)
    finally:
        model.train(was_training)
    out: dict[str, Any] = meter.compute()
    out["empty"] = n_empty / max(1, out["n"])
    out["area_ratio"] = pred_px / max(1, gt_px)
    if by_class:
        out["by_class"] = {c: {k: v for k, v in m.compute().items() if k in ("miou", "n")}
                           for c, m in sorted(per_class.items())}
    return out


def segment(model: RS2SAM2, encoder: MiniLMTokenEncoder, image: np.ndarray | torch.Tensor, text: str,
            rgb_bands: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """The mask ``(H, W)`` bool that ``text`` refers to in ``image`` ``(C, H, W)`` in [0, 1].

    Raises ``ValueError`` for an empty or over-long expression and for an image that is not RGB.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the expression is empty ({text!r}); type a phrase such as 'the largest lake'")
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {arr.shape}")
    rgb = torch.from_numpy(rgb_image(arr, rgb_bands))
    logits = predict_logits(model, encoder, rgb[None], [text.strip()])
    return _upsample_to(logits[0], tuple(rgb.shape[-2:])).numpy()


# ------------------------------------------------------------------------------------------------
# Ablation


def check_expression_lengths(encoder, texts: Sequence[str], on_long: str = "error",
                             warn: Callable[[str], None] | None = None) -> dict[str, int]:
    """Check every distinct expression against the token encoder's limit BEFORE training (a long
    run must not stop at the first over-long expression of a late batch).

    ``encoder``: :class:`~rslab.models.rs2sam2.MiniLMTokenEncoder` or
    :class:`~rslab.models.rs2sam2.BEiT3TokenEncoder`. ``on_long="error"`` raises one
    ``ValueError`` naming how many expressions exceed ``encoder.max_tokens`` and the longest ones;
    ``"truncate"`` sets ``encoder.truncate`` (they are cut to the limit) and warns with the same
    numbers. Returns ``{"n": distinct expressions, "too_long": count, "max_tokens_seen": longest}``.
    """
    if on_long not in ("error", "truncate"):
        raise ValueError(f"on_long must be 'error' or 'truncate', got {on_long!r}")
    unique = list(dict.fromkeys(texts))
    if not unique:
        raise ValueError("no expressions to check")
    if hasattr(encoder, "lengths"):
        lengths = encoder.lengths(unique)
    else:  # MiniLM: word pieces with [CLS]/[SEP], as the encoder counts them
        tok = encoder.text_encoder.tokenizer(unique, padding=False, truncation=False)
        lengths = [len(i) for i in tok["input_ids"]]
    limit = encoder.max_tokens
    long = sorted(((n, t) for n, t in zip(lengths, unique) if n > limit), reverse=True)
    summary = {"n": len(unique), "too_long": len(long), "max_tokens_seen": max(lengths)}
    if long:
        examples = "; ".join(f"{n} tokens: {t[:60]!r}" for n, t in long[:3])
        msg = (f"{len(long)} of {len(unique)} distinct expressions exceed the {limit}-token limit of the text encoder "
               f"(longest {long[0][0]}; {examples})")
        if on_long == "error":
            raise ValueError(msg + ". Raise max_text_tokens, or pass on_long='truncate' to cut them (with a warning).")
        encoder.truncate = True
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(msg + f": they are truncated to {limit} tokens.")
    return summary


def expression_texts(data: ReferringDataset) -> list[str]:
    """Every expression of ``data``, in order, without reading its images when it comes from a
    referring reader (RRSIS-D, RefSegRS keep their expressions in ``reader.items``): checking a real
    training set's expressions must not decode thousands of 1024 px images. Otherwise
    ``data.texts``."""
    if not isinstance(data, ReferringDataset):
        raise ValueError(f"data must be a ReferringDataset, got {type(data).__name__}")
    items = getattr(data.samples, "items", None)
    if isinstance(items, list) and all(j == 0 for _, j in data.index):
        out = []
        for i, _ in data.index:
            text = items[i][1]
            if isinstance(text, dict):  # RRSIS-D: (ref, sentence) with the sentence's raw text
                text = text.get("raw", text.get("sent", ""))
            if not isinstance(text, str):
                return data.texts
            out.append(text.strip())
        return out
    return data.texts


def _row_key(cfg: RS2SAM2Config, tcfg: RS2SAM2TrainConfig, sam2_checkpoint) -> dict:
    """What a finished row's results depend on (compared before a row is skipped on re-run)."""
    run = {k: v for k, v in dataclasses.asdict(tcfg).items()
           if k not in ("progress", "num_workers", "estimate_warmup", "checkpoint_every", "cpu")}
    return {"model": json.loads(json.dumps(dataclasses.asdict(cfg))), "train": json.loads(json.dumps(run)),
            "sam2_checkpoint": None if sam2_checkpoint is None else Path(sam2_checkpoint).name}


def run_ablation(base_cfg: RS2SAM2Config, train: ReferringDataset, eval_data: ReferringDataset,
                 encoder: MiniLMTokenEncoder, tcfg: RS2SAM2TrainConfig | None = None,
                 rows: Sequence[str] | None = None, keep_models: bool = True,
                 sam2_checkpoint: str | Path | None = None,
                 log: Callable[[str], None] | None = print, out_dir: str | Path | None = None,
                 row_steps: dict[str, int] | None = None,
                 prepare: Callable[[RS2SAM2], None] | None = None,
                 keep_checkpoints: bool = False) -> AblationResult:
    """Train and evaluate each ablation row with the same data, lr and seed.

    ``base_cfg`` gives everything but the row switches (:data:`ABLATION_ROWS`). The training
    tensors are built once and shared. Returns per-row metrics on ``eval_data`` (original
    resolution), the trained models (``keep_models``) and histories. ``sam2_checkpoint`` (the
    official one, or our pre-trained stand-in) initialises SAM2 in every row alike; ``prepare``
    (optional) is called on each freshly built model before training (e.g. to load the union
    encoder's pretrained weights).

    ``row_steps``: optimiser steps per row where they differ from ``tcfg.max_steps`` (e.g. the paper's
    budget for ``full`` and a smaller one for the other rows); every row states its steps in the
    log and in ``result.steps``.

    ``out_dir`` makes the ablation resumable: each row trains into ``out_dir/<row>/train`` (an
    interrupted row continues from its last checkpoint) and, once evaluated, writes
    ``out_dir/<row>/metrics.json`` and its model; a re-run skips every row whose metrics file was
    written with the same settings (a row with other settings is retrained). Once a row's model and
    metrics are written, its training checkpoints (``<row>/train/checkpoints``: the model and the
    optimiser state, several GB per row at SAM2-L size) are deleted unless ``keep_checkpoints``;
    the history stays.
    """
    rows = list(ABLATION_ROWS) if rows is None else list(rows)
    unknown = [r for r in rows if r not in ABLATION_ROWS]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {list(ABLATION_ROWS)}")
    row_steps = dict(row_steps or {})
    bad = {r: v for r, v in row_steps.items() if r not in ABLATION_ROWS or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"row_steps must map ablation rows ({list(ABLATION_ROWS)}) to ints >= 1, got {bad}")
    tcfg = tcfg or RS2SAM2TrainConfig()
    out = None if out_dir is None else Path(out_dir)
    result = AblationResult(metrics={})
    stacked = None
    for row in rows:
        cfg = dataclasses.replace(base_cfg, **ABLATION_ROWS[row])
        rcfg = dataclasses.replace(tcfg, max_steps=row_steps.get(row, tcfg.max_steps))
        key = _row_key(cfg, rcfg, sam2_checkpoint)
        done = None if out is None else _finished_row(out / row, key)
        if done is not None:
            result.metrics[row], result.histories[row], result.train_s[row] = done
            result.steps[row] = rcfg.max_steps
            if keep_models:
                result.models[row] = load_rs2sam2(out / row / "model")
            if log is not None:
                log(f"{ABLATION_LABELS[row]:34s} finished earlier ({out / row / 'metrics.json'}): skipped")
            continue
        if stacked is None:  # build the tensors once for all rows (a dataset too large for memory streams)
            stacked = train.stacked(base_cfg.image_size) if _fits_in_memory(train, base_cfg.image_size) else train
        model = None
        if prepare is not None:
            torch.manual_seed(rcfg.seed)
            model = RS2SAM2(cfg)
            prepare(model)
        resume = False
        if out is not None:  # resume only a row started with the same settings; otherwise start it over
            key_path = out / row / "key.json"
            try:
                resume = json.loads(key_path.read_text()) == key
            except (OSError, ValueError):
                resume = False
            key_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(key_path, json.dumps(key, indent=1))
        trained = train_rs2sam2(cfg, stacked, encoder, rcfg, sam2_checkpoint=sam2_checkpoint, model=model,
                                out_dir=None if out is None else out / row / "train", resume=resume)
        result.metrics[row] = evaluate_referring(trained.model, eval_data, encoder)
        result.histories[row] = trained.history
        result.train_s[row] = trained.train_s
        result.steps[row] = rcfg.max_steps
        if out is not None:
            save_rs2sam2(trained.model, out / row / "model")
            write_text_atomically(out / row / "metrics.json", json.dumps(
                {"key": key, "metrics": result.metrics[row], "train_s": trained.train_s}, indent=1))
            if not keep_checkpoints:   # the row is finished and saved: a re-run skips it
                shutil.rmtree(out / row / "train" / CHECKPOINTS, ignore_errors=True)
        if keep_models:
            result.models[row] = trained.model
        if log is not None:
            m = result.metrics[row]
            log(f"{ABLATION_LABELS[row]:34s} mIoU {m['miou']:.3f}  oIoU {m['oiou']:.3f}  Pr@0.5 {m['pr50']:.3f}  "
                f"empty {m['empty']:.2f}  area ratio {m['area_ratio']:.2f}  "
                f"({trained.train_s:.0f} s, {rcfg.max_steps} steps)")
    return result


def _finished_row(folder: Path, key: dict):
    """``(metrics, history, train_s)`` of a row finished in ``folder`` with settings ``key``, else None."""
    path = folder / "metrics.json"
    if not path.is_file() or not (folder / "model" / "model.safetensors").is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key:
        return None
    history_path = folder / "train" / "history.jsonl"
    history = load_history(history_path) if history_path.is_file() else []
    return saved["metrics"], history, float(saved.get("train_s", 0.0))


# ------------------------------------------------------------------------------------------------
# Saving


def save_rs2sam2(model: RS2SAM2, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the :class:`RS2SAM2Config`) into ``directory``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    write_atomically(weights, lambda tmp: save_model(model, str(tmp)))
    cfg = dataclasses.asdict(model.cfg)
    write_text_atomically(directory / "config.json", json.dumps(cfg, indent=2))
    return weights


def load_rs2sam2(directory: str | Path, device: str | torch.device = "cpu") -> RS2SAM2:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` (strict)."""
    from safetensors.torch import load_model

    directory = Path(directory)
    weights, config = directory / "model.safetensors", directory / "config.json"
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: save a model with save_rs2sam2(model, {str(directory)!r}) first")
    raw = json.loads(config.read_text())
    raw["sam2_overrides"] = tuple(raw.get("sam2_overrides", ()))
    model = RS2SAM2(RS2SAM2Config(**raw))
    load_model(model, str(weights), device=str(device))
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------
# Stand-in for SAM2's pre-training (no official checkpoint offline)
#
# RS2-SAM2 starts from SAM2-Hiera-L pre-trained by Meta on SA-1B/SA-V with the *promptable
# segmentation* task: a point, a box or a coarse mask in, the segment's mask out, class-agnostic.
# Offline there is no such checkpoint, so :func:`pretrain_sam2_standin` trains the (tiny) SAM2 once
# on that same task, on the class-agnostic segments of the TRAINING scenes only
# (:func:`rslab.data.referring.promptable_segments`), and :func:`standin_checkpoint` saves it in the
# official checkpoint layout (``{"model": state_dict}``) so that :func:`load_sam2_checkpoint` loads
# it exactly like Meta's file. It is a stand-in, not SA-1B: a few thousand segments of one synthetic
# world instead of 1.1 billion masks of natural images.


@dataclass
class StandinPretrainConfig:
    """SAM-style promptable pre-training of SAM2 (the stand-in for SA-1B pre-training).

    max_steps / images_per_step / prompts_per_image: optimiser steps; images encoded per step; segments
    prompted per image (SAM also decodes many prompts per encoded image). lr / weight_decay /
    warmup_steps / clip_grad_norm: AdamW with warm-up + cosine. p_point / p_box: share of prompts
    that are one positive point (with a negative point half the time) / a jittered box; the rest
    are coarse mask logits alone (SAM feeds previous low-resolution logits back as a mask prompt;
    here a GT mask pooled to 1/8 of the image, as coarse as RS2-SAM2's MPG pseudo-mask).
    box_jitter: box-corner noise as a fraction of the box side (SAM: 0.1). min_area_frac: smallest
    segment. seed: initialisation, batch order and prompts.
    """

    max_steps: int = 300
    images_per_step: int = 8
    prompts_per_image: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    clip_grad_norm: float | None = 1.0
    p_point: float = 0.4
    p_box: float = 0.3
    box_jitter: float = 0.1
    min_area_frac: float = 0.01
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        _check_run_settings(self, ("max_steps", "images_per_step", "prompts_per_image"))
        if not (0 <= self.p_point and 0 <= self.p_box and self.p_point + self.p_box <= 1):
            raise ValueError(f"p_point and p_box must be >= 0 with a sum <= 1, got {self.p_point}, {self.p_box}")


def sample_prompts(masks: torch.Tensor, pcfg: StandinPretrainConfig, mask_input_size: int,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    """SAM-style prompts for binary ``masks (P, S, S)``: one of a point, a box or a coarse mask each.

    Returns ``coords (P, 3, 2)`` (x, y pixels), ``labels (P, 3)`` (1/0 points, 2/3 box corners, -1
    padding), ``mask_inputs (P, 1, m, m)`` logits (``m = mask_input_size``) and ``has_mask (P,)``.
    """
    if masks.ndim != 3 or not bool((masks.flatten(1).sum(1) > 0).all()):
        raise ValueError("masks must be (P, S, S) with at least one foreground pixel each")
    n, size = masks.shape[0], masks.shape[-1]
    coords = torch.zeros(n, 3, 2)
    labels = torch.full((n, 3), -1, dtype=torch.long)
    kind = torch.rand(n, generator=generator)
    is_point, is_box = kind < pcfg.p_point, (kind >= pcfg.p_point) & (kind < pcfg.p_point + pcfg.p_box)
    has_mask = ~(is_point | is_box)
    flat = masks.flatten(1) > 0.5
    for i in range(n):
        if is_point[i]:
            fg = torch.nonzero(flat[i]).flatten()
            j = int(fg[torch.randint(len(fg), (1,), generator=generator)])
            coords[i, 0] = torch.tensor([j % size, j // size], dtype=torch.float32)
            labels[i, 0] = 1
            bg = torch.nonzero(~flat[i]).flatten()
            if len(bg) and float(torch.rand(1, generator=generator)) < 0.5:
                j = int(bg[torch.randint(len(bg), (1,), generator=generator)])
                coords[i, 1] = torch.tensor([j % size, j // size], dtype=torch.float32)
                labels[i, 1] = 0
        elif is_box[i]:
            ys, xs = torch.nonzero(masks[i] > 0.5, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
            side = torch.stack([box[2] - box[0], box[3] - box[1]] * 2) + 1
            box = box + torch.randn(4, generator=generator) * pcfg.box_jitter * side
            coords[i, :2] = box.clamp(0, size - 1).view(2, 2)
            labels[i, :2] = torch.tensor([2, 3])
    coarse = torch.nn.functional.avg_pool2d(masks[:, None].float(), kernel_size=max(1, size // 8))
    coarse = torch.nn.functional.interpolate(coarse, size=(mask_input_size, mask_input_size), mode="bilinear",
                                             align_corners=False)
    mask_inputs = 8.0 * (coarse - 0.5) + torch.randn(coarse.shape, generator=generator)
    return {"coords": coords, "labels": labels, "mask_inputs": mask_inputs, "has_mask": has_mask}


def _segment_batches(segs: dict, pcfg: StandinPretrainConfig, mask_input_size: int) -> Callable[[int], Iterator[dict]]:
    """``epoch -> iterator`` of pre-training batches: ``images_per_step`` images,
    ``prompts_per_image`` segments each."""
    owner = segs["image_index"]
    per_image = [torch.nonzero(owner == i).flatten() for i in range(segs["images"].shape[0])]
    n_img, k = len(per_image), pcfg.prompts_per_image
    b = min(pcfg.images_per_step, n_img)  # a tiny scene set (the CI profile): every image, every step

    def batches(epoch: int) -> Iterator[dict]:
        g = torch.Generator().manual_seed(pcfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n_img, generator=g)
        for start in range(0, n_img - n_img % b, b):
            imgs = order[start:start + b]
            picks = torch.cat([per_image[int(i)][torch.randint(len(per_image[int(i)]), (k,), generator=g)]
                               for i in imgs])
            masks = segs["masks"][picks]
            yield {"images": segs["images"][imgs], "targets": masks, **sample_prompts(masks, pcfg, mask_input_size, g)}

    return batches


def _pretrain_loss(model: PromptableSAM2, batch: dict):
    logits = model(batch["images"], batch["coords"], batch["labels"], batch["mask_inputs"], batch["has_mask"])
    target = batch["targets"][:, None]
    ce, dice = sigmoid_bce_loss(logits, target), dice_loss(logits, target)
    return ce + dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}


@dataclass
class StandinResult:
    """The stand-in checkpoint: its path, provenance (what it is and how it was made) and whether
    it was reused from disk (then ``pretrain_s`` is the time of the run that made it)."""

    path: Path
    provenance: dict[str, Any]
    reused: bool


def pretrain_sam2_standin(cfg: RS2SAM2Config, segments: dict, pcfg: StandinPretrainConfig | None = None,
                          out_dir: str | Path | None = None, checkpoint_every: int = 0):
    """Train a plain SAM2 (``cfg``'s architecture, no adapters) on promptable segmentation.

    ``segments``: :func:`rslab.data.referring.promptable_segments` of TRAINING scenes. Every part of
    SAM2 used for images is trained (Hiera, FPN neck, prompt encoder, mask decoder), with
    ``BCE + Dice`` on the masks (SAM: focal + Dice). With ``out_dir`` the engine checkpoints there
    every ``checkpoint_every`` steps and a repeated call resumes (``rslab pretrain``); without it the
    run is in memory. Returns ``(PromptableSAM2 in eval mode, history, wall seconds, CPU seconds)``.
    """
    pcfg = pcfg or StandinPretrainConfig()
    if not isinstance(cfg, RS2SAM2Config):
        raise ValueError(f"cfg must be an RS2SAM2Config, got {type(cfg).__name__}")
    for key in ("images", "masks", "image_index"):
        if key not in segments:
            raise ValueError(f"segments must come from promptable_segments(...) (missing {key!r})")
    if segments["images"].shape[-1] != cfg.image_size:
        raise ValueError(f"segments are {segments['images'].shape[-1]} px but the model expects {cfg.image_size}")
    torch.manual_seed(pcfg.seed)
    model = PromptableSAM2(build_sam2_model(cfg))
    m_in = int(model.sam.sam_prompt_encoder.mask_input_size[0])
    batches = _segment_batches(segments, pcfg, m_in)
    extra = {"out_dir": out_dir, "checkpoint_every": int(checkpoint_every)} if out_dir is not None else {}
    trainer = Trainer(model, _pretrain_loss, batches, _trainer_config(pcfg, **extra),
                      optimizer=default_optimizer(model, pcfg.lr, pcfg.weight_decay, fused=True))
    t0, c0 = time.perf_counter(), time.process_time()
    history = trainer.fit(resume=out_dir is not None)
    return trainer.model.eval(), list(history), time.perf_counter() - t0, time.process_time() - c0


def _standin_key(cfg: RS2SAM2Config, scene_indices: Sequence[int], world_desc: str,
                 pcfg: StandinPretrainConfig) -> dict:
    """What makes two stand-in checkpoints interchangeable (compared before reusing a file)."""
    idx = [int(i) for i in scene_indices]
    return {"sam2_config": cfg.sam2_config, "sam2_overrides": list(cfg.sam2_overrides), "image_size": cfg.image_size,
            "world": world_desc, "scene_indices": [min(idx), max(idx), len(idx)],
            "pretrain": {k: v for k, v in dataclasses.asdict(pcfg).items() if k != "progress"}}


def standin_checkpoint(path: str | Path, cfg: RS2SAM2Config, world, scene_indices: Sequence[int],
                       pcfg: StandinPretrainConfig | None = None, eval_indices: Sequence[int] = ()) -> StandinResult:
    """The stand-in SAM2 checkpoint at ``path``: reused when its provenance matches, else made.

    Made by :func:`pretrain_sam2_standin` on the class-agnostic segments of ``world``'s scenes
    ``scene_indices`` (TRAINING scenes: ``eval_indices``, when given, must not overlap them) and
    written atomically (temporary file + rename) as ``{"model": state_dict, "provenance": {...}}``,
    with the provenance also as ``<path>.json``. Load it with :func:`load_sam2_checkpoint`.
    """
    pcfg = pcfg or StandinPretrainConfig()
    path = Path(path)
    scene_indices = [int(i) for i in scene_indices]
    overlap = set(scene_indices) & {int(i) for i in eval_indices}
    if overlap:
        raise ValueError(f"stand-in pre-training must not see held-out scenes; overlap: {sorted(overlap)[:10]}")
    world_desc = repr(world)
    key = _standin_key(cfg, scene_indices, world_desc, pcfg)
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            prov = payload.get("provenance", {}) if isinstance(payload, dict) else {}
        except Exception:  # unreadable: rebuild it
            prov = {}
        if prov.get("key") == key:
            return StandinResult(path=path, provenance=prov, reused=True)
    t0 = time.perf_counter()
    segs = promptable_segments(world, scene_indices, cfg.image_size, pcfg.min_area_frac)
    data_s = time.perf_counter() - t0
    model, history, wall_s, cpu_s = pretrain_sam2_standin(cfg, segs, pcfg)
    losses = [r["loss"] for r in history if "loss" in r]
    prov = {
        "what": ("stand-in for SAM2's SA-1B/SA-V pre-training: this SAM2 architecture trained from random "
                 "initialisation on SAM's promptable, class-agnostic segmentation task (point, box or coarse-mask "
                 "prompt -> segment mask) on the segments of synthetic TRAINING scenes only"),
        "not": (f"not Meta's SAM2 weights and not SA-1B (11 M images, 1.1 B masks): {int(segs['images'].shape[0])} "
                f"synthetic images of one world, {int(segs['masks'].shape[0])} segments, "
                f"{pcfg.max_steps} steps on a CPU"),
        "key": key, "n_images": int(segs["images"].shape[0]), "n_segments": int(segs["masks"].shape[0]),
        "pretrain_s": wall_s + data_s, "pretrain_cpu_s": cpu_s, "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: torch.save({"model": model.sam.state_dict(), "provenance": prov}, tmp))
    write_text_atomically(path.with_name(path.name + ".json"), json.dumps(prov, indent=2))
    return StandinResult(path=path, provenance=prov, reused=False)


@torch.no_grad()
def evaluate_promptable(cfg: RS2SAM2Config, checkpoint: str | Path | torch.nn.Module, segments: dict, seed: int = 0,
                        batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, float]:
    """How well a (stand-in) SAM2 checkpoint does SAM's own task on ``segments``.

    ``segments``: :func:`rslab.data.referring.promptable_segments` of HELD-OUT scenes. For each prompt
    kind alone (one positive point, maybe a negative one; a jittered box; the coarse mask) returns the
    mIoU of the predicted masks (logits > 0) at the segments' resolution, and ``coarse_prompt``: the
    mIoU of the coarse mask prompt itself (what the decoder must improve on). The model runs on
    ``device`` (inputs follow it; masks come back to the CPU).
    """
    if isinstance(checkpoint, torch.nn.Module):  # a SAM2 model in memory (it is not modified)
        model = PromptableSAM2(copy.deepcopy(checkpoint))
    else:
        model = PromptableSAM2(build_sam2_model(cfg))
        model.sam.load_state_dict(read_sam2_state(checkpoint), strict=True)
    model.to(device).eval()
    masks = segments["masks"]
    images = segments["images"][segments["image_index"]]
    gt = masks > 0.5
    g = torch.Generator().manual_seed(seed)
    m_in = int(model.sam.sam_prompt_encoder.mask_input_size[0])

    def miou(pred: torch.Tensor) -> float:
        inter, union = (pred & gt).flatten(1).sum(1), (pred | gt).flatten(1).sum(1)
        return float((inter / union.clamp(min=1)).mean())

    out = {}
    for kind, (pp, pb) in {"point": (1.0, 0.0), "box": (0.0, 1.0), "mask": (0.0, 0.0)}.items():
        pr = sample_prompts(masks, StandinPretrainConfig(p_point=pp, p_box=pb), m_in, g)
        on = (lambda t, i: t[i:i + batch_size].to(device))
        logits = torch.cat([model(on(images, i), on(pr["coords"], i), on(pr["labels"], i), on(pr["mask_inputs"], i),
                                  on(pr["has_mask"], i)).float().cpu() for i in range(0, len(masks), batch_size)])
        out[kind] = miou(logits[:, 0] > 0)
        if kind == "mask":
            coarse = torch.nn.functional.interpolate(pr["mask_inputs"], size=masks.shape[-2:], mode="bilinear",
                                                     align_corners=False)
            out["coarse_prompt"] = miou(coarse[:, 0] > 0)
    return out
