"""Training, evaluation and the ablation of RS2-SAM2 (what notebook 04 calls).

- :func:`train_rs2sam2` fine-tunes one :class:`~rslab.models.rs2sam2.RS2SAM2` with the paper's loss
  (``1.0 CE + 0.1 Dice + 0.2 L_tbl``) using :class:`rslab.train.Trainer` (AdamW, warm-up + cosine;
  the fused AdamW kernel of :func:`rslab.train.default_optimizer` with ``fused=True``, the same update in fewer CPU kernel calls).
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

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rslab.data.referring import ReferringDataset, resize_mask, resize_rgb, rgb_image
from rslab.models.rs2sam2 import MiniLMTokenEncoder, RS2SAM2, RS2SAM2Config

__all__ = [
    "ABLATION_ROWS", "ABLATION_LABELS", "RS2SAM2TrainConfig", "TrainedRS2SAM2", "AblationResult",
    "make_batches", "stream_batches", "train_rs2sam2", "predict_logits", "evaluate_referring", "run_ablation", "segment",
    "save_rs2sam2", "load_rs2sam2",
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

    steps: optimiser steps; batch_size: expressions per step; lr / weight_decay: AdamW;
    warmup_steps: linear warm-up before the cosine decay; clip_grad_norm: global gradient-norm
    clip (None = off); seed: model initialisation and batch order; progress: tqdm bar.
    """

    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    clip_grad_norm: float | None = 1.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        self.warmup_steps = min(int(self.warmup_steps), self.steps)


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

    def table(self, keys: Sequence[str] = ("pr50", "pr70", "pr90", "oiou", "miou", "empty")) -> str:
        """The ablation as a Markdown table, values in percent (as the paper reports them).

        ``empty`` (not in the paper) is the share of expressions with an empty predicted mask."""
        names = {"pr50": "Pr@0.5", "pr70": "Pr@0.7", "pr90": "Pr@0.9", "oiou": "oIoU", "miou": "mIoU",
                 "empty": "empty masks"}
        lines = ["| configuration | " + " | ".join(names.get(k, k) for k in keys) + " | train s |",
                 "|---|" + "---:|" * (len(keys) + 1)]
        for row, m in self.metrics.items():
            cells = " | ".join(f"{100 * m[k]:.1f}" for k in keys)
            lines.append(f"| {ABLATION_LABELS.get(row, row)} | {cells} | {self.train_s.get(row, float('nan')):.0f} |")
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
        raise ValueError(f"only {n} training expressions for a batch of {batch_size}: render more scenes or lower batch_size")
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
                   seed: int = 0, num_workers: int = 0) -> Callable[[int], Iterator[dict]]:
    """Like :func:`make_batches` but reading items on the fly (real datasets too large for memory).

    Images are resized to ``image_size`` per batch; each epoch is a seeded shuffle.
    """
    from torch.utils.data import DataLoader

    if len(data) < batch_size:
        raise ValueError(f"only {len(data)} training expressions for a batch of {batch_size}")

    def to_batch(items: list[dict]) -> dict:  # the per-item resize of ReferringDataset.stacked
        return {"images": torch.stack([resize_rgb(it["image"][None], image_size)[0] for it in items]),
                "targets": torch.stack([resize_mask(it["mask"], image_size) for it in items]),
                "texts": [it["text"] for it in items]}

    def batches(epoch: int) -> Iterator[dict]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, generator=g,
                            num_workers=num_workers, collate_fn=to_batch)
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
                  sam2_checkpoint: str | Path | None = None) -> TrainedRS2SAM2:
    """Fine-tune RS2-SAM2 on ``train`` (a dataset, or its ``stacked(cfg.image_size)`` dict).

    ``model`` lets the caller pass a prepared model (e.g. after :func:`load_sam2_checkpoint`);
    otherwise one is built from ``cfg`` with ``torch.manual_seed(tcfg.seed)``. ``out_dir`` keeps
    the Trainer's history and checkpoints (None: in memory). ``sam2_checkpoint``: a SAM2 checkpoint
    (``{"model": state_dict}``) loaded non-strictly before training (:func:`load_sam2_checkpoint`);
    its missing/unexpected keys are returned in ``load_report``. Returns the model in eval mode.
    """
    from rslab.models.rs2sam2 import load_sam2_checkpoint
    from rslab.train import TrainConfig, Trainer, default_optimizer

    tcfg = tcfg or RS2SAM2TrainConfig()
    if not isinstance(cfg, RS2SAM2Config):
        raise ValueError(f"cfg must be an RS2SAM2Config, got {type(cfg).__name__}")
    if isinstance(train, ReferringDataset) and not _fits_in_memory(train, cfg.image_size):
        # more than ~2 GB as tensors (a real dataset at 1024 px): read it on the fly
        batches = stream_batches(train, encoder, tcfg.batch_size, cfg.image_size, tcfg.seed)
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
    config = TrainConfig(max_steps=tcfg.steps, lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                         warmup_steps=tcfg.warmup_steps, clip_grad_norm=tcfg.clip_grad_norm,
                         log_every=max(1, min(10, tcfg.steps // 10)), seed=tcfg.seed, out_dir=out_dir,
                         progress=tcfg.progress)
    optimizer = default_optimizer(model, tcfg.lr, tcfg.weight_decay, fused=True)
    trainer = Trainer(model, _loss_fn, batches, config, optimizer=optimizer, eval_fn=eval_fn)
    start = time.perf_counter()
    history = trainer.fit(resume=False)
    train_s = time.perf_counter() - start
    model = trainer.model.eval()
    return TrainedRS2SAM2(model=model, history=list(history), train_s=train_s, steps=tcfg.steps, load_report=report)


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
    from rslab.metrics import ReferringMeter

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


def run_ablation(base_cfg: RS2SAM2Config, train: ReferringDataset, eval_data: ReferringDataset,
                 encoder: MiniLMTokenEncoder, tcfg: RS2SAM2TrainConfig | None = None,
                 rows: Sequence[str] | None = None, keep_models: bool = True,
                 sam2_checkpoint: str | Path | None = None,
                 log: Callable[[str], None] | None = print) -> AblationResult:
    """Train and evaluate each ablation row with the same data, steps, batch, lr and seed.

    ``base_cfg`` gives everything but the row switches (:data:`ABLATION_ROWS`). The training
    tensors are built once and shared. Returns per-row metrics on ``eval_data`` (original
    resolution), the trained models (``keep_models``) and histories. ``sam2_checkpoint`` (the
    official one, or our pre-trained stand-in) initialises SAM2 in every row alike.
    """
    rows = list(ABLATION_ROWS) if rows is None else list(rows)
    unknown = [r for r in rows if r not in ABLATION_ROWS]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {list(ABLATION_ROWS)}")
    tcfg = tcfg or RS2SAM2TrainConfig()
    # build the tensors once for all rows (train_rs2sam2 streams a dataset too large for memory)
    stacked = train.stacked(base_cfg.image_size) if _fits_in_memory(train, base_cfg.image_size) else train
    result = AblationResult(metrics={})
    for row in rows:
        cfg = dataclasses.replace(base_cfg, **ABLATION_ROWS[row])
        trained = train_rs2sam2(cfg, stacked, encoder, tcfg, sam2_checkpoint=sam2_checkpoint)
        result.metrics[row] = evaluate_referring(trained.model, eval_data, encoder)
        result.histories[row] = trained.history
        result.train_s[row] = trained.train_s
        if keep_models:
            result.models[row] = trained.model
        if log is not None:
            m = result.metrics[row]
            log(f"{ABLATION_LABELS[row]:34s} mIoU {m['miou']:.3f}  oIoU {m['oiou']:.3f}  Pr@0.5 {m['pr50']:.3f}  "
                f"empty {m['empty']:.2f}  area ratio {m['area_ratio']:.2f}  ({trained.train_s:.0f} s, {tcfg.steps} steps)")
    return result


# ------------------------------------------------------------------------------------------------
# Saving


def save_rs2sam2(model: RS2SAM2, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the :class:`RS2SAM2Config`) into ``directory``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    tmp = directory / "model.safetensors.tmp"
    save_model(model, str(tmp))
    tmp.replace(weights)
    cfg = dataclasses.asdict(model.cfg)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
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
