"""The training engine: a small ``Trainer`` on top of Hugging Face ``accelerate``.

``accelerate`` does device placement, mixed precision (autocast + grad scaling) and data
parallelism (DDP, data sharding); this module adds the loop a notebook wants: warm-up + cosine
LR, gradient accumulation and clipping, an EMA teacher, periodic evaluation, a progress bar, a
JSON-lines history, and checkpoints that resume bit-for-bit after ``kill -9``.

Minimal use::

    config = TrainConfig(max_steps=300, lr=1e-3, warmup_steps=20, out_dir=run.artifacts / "train")
    trainer = Trainer(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), loader, config)
    history = trainer.fit()          # resumes from out_dir when a checkpoint is there

The same code runs on a laptop CPU, on a GPU (bf16/fp16 autocast by ``mixed_precision="auto"``)
and on several GPUs (``accelerate launch``/``torchrun``/``notebook_launcher``). With several
processes the DataLoader's ``batch_size`` is the *global* batch, split across processes
(accelerate's ``split_batches=True``), so the optimisation — and the results — do not depend
on the number of GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import (
    CHECKPOINTS,
    check_state_dict_compatible,
    find_resumable,
    list_checkpoints,
    remove_stale_temporaries,
    write_checkpoint,
)
from .ema import EMA
from .history import HistoryWriter, load_history
from .schedule import constant_with_warmup, cosine_with_warmup

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "default_optimizer", "RunEstimate"]

LossOutput = torch.Tensor | tuple[torch.Tensor, dict[str, Any]] | dict[str, Any]
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in each checkpoint).

    Steps are optimiser steps; one step consumes ``grad_accum_steps`` batches.
    ``*_every = 0`` disables the periodic action (a final checkpoint is still written when
    ``out_dir`` is set, and ``eval_fn`` still runs once at the end).
    """

    max_steps: int
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    schedule: str = "cosine"              # "cosine" (to min_lr_ratio * lr) or "constant", after warm-up
    min_lr_ratio: float = 0.0
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None   # max global L2 norm of the gradients; None = no clipping
    mixed_precision: str = "auto"         # "auto": bf16 (or fp16) autocast on GPU, fp32 on CPU
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_last: int = 2
    seed: int = 0
    ema_momentum: tuple[float, float] | None = None  # e.g. (0.996, 1.0): builds an EMA teacher
    out_dir: str | Path | None = None     # checkpoints/ and history.jsonl go here; None = in memory only
    progress: bool = True
    cpu: bool = False                     # force the CPU even when a GPU is present
    compile: bool | str = False           # torch.compile the model's forward (True = inductor; or a backend name)

    def __post_init__(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if allow_zero else 1):
                raise ValueError(f"TrainConfig.{name} must be an int >= {0 if allow_zero else 1}, got {value!r}")

        positive("max_steps"), positive("grad_accum_steps"), positive("log_every")
        positive("eval_every", True), positive("checkpoint_every", True), positive("keep_last", True)
        positive("warmup_steps", True)
        if self.warmup_steps > self.max_steps:  # e.g. a notebook's ci profile with very few steps
            warnings.warn(f"warmup_steps={self.warmup_steps} > max_steps={self.max_steps}: warming up over all "
                          f"{self.max_steps} steps", stacklevel=3)
            self.warmup_steps = self.max_steps
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"TrainConfig.clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise ValueError(f"TrainConfig.compile must be True/False or a torch.compile backend name such as "
                             f"'inductor', got {self.compile!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainConfig.mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        if self.ema_momentum is not None:
            if len(self.ema_momentum) != 2 or not all(0.0 <= m <= 1.0 for m in self.ema_momentum):
                raise ValueError(f"TrainConfig.ema_momentum must be (start, end) in [0, 1], got {self.ema_momentum!r}")
            self.ema_momentum = (float(self.ema_momentum[0]), float(self.ema_momentum[1]))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        d["ema_momentum"] = None if self.ema_momentum is None else list(self.ema_momentum)
        return d


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""

    def __init__(self, step: int, value: float, last_checkpoint: Path | None):
        self.step, self.value, self.last_checkpoint = step, value, last_checkpoint
        where = (f"The last good checkpoint is {last_checkpoint}; fit(resume=True) continues from it."
                 if last_checkpoint else "No checkpoint was written before it.")
        super().__init__(
            f"loss is {value} at step {step} (1-based optimiser step). {where} Common fixes: lower lr, "
            "longer warmup_steps, clip_grad_norm=1.0, or mixed_precision='no' to rule out fp16 overflow.")


def default_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool = False,
                      lr_scale: Callable[[str], float] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices/kernels only (not on biases, norms, embeddings of dim 1),
    the usual ViT / nanoGPT recipe. Frozen parameters are left out.

    ``fused``: use torch's fused AdamW kernel (CPU and CUDA, float32 parameters only; otherwise the
    default implementation is kept). The same update in one call instead of a loop over tensors,
    which matters for models with hundreds of small tensors (RS2-SAM2: about a fifth of a CPU step).
    ``lr_scale``: optional ``parameter name -> factor``; each parameter trains at ``lr * factor``
    (e.g. new modules faster than pretrained ones). A scheduler scales every group alike."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    groups: dict[tuple[float, bool], list] = {}
    for name, p in named:
        scale = 1.0 if lr_scale is None else float(lr_scale(name))
        if not scale > 0:
            raise ValueError(f"lr_scale({name!r}) must be > 0, got {scale}")
        groups.setdefault((scale, p.ndim >= 2), []).append(p)
    # a fixed group order (by scale, matrices first) so a saved optimizer state always loads back
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))
    fused = fused and all(p.dtype == torch.float32 for _, p in named)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr * scale, "weight_decay": weight_decay if matrix else 0.0}
         for (scale, matrix), ps in ordered], lr=lr, fused=fused or None)


# --------------------------------------------------------------------------------------------
# accelerate and data plumbing


def _resolve_precision(requested: str, cpu: bool) -> str:
    on_gpu = torch.cuda.is_available() and not cpu
    if requested == "auto":
        if not on_gpu:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and not on_gpu:
        warnings.warn("mixed_precision='fp16' needs a GPU; training in fp32 on the CPU", stacklevel=3)
        return "no"
    return requested


def _make_accelerator(mixed_precision: str, cpu: bool, seed: int):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    kwargs = dict(
        mixed_precision=mixed_precision, cpu=cpu, step_scheduler_with_optimizer=False,
        # split_batches: the DataLoader's batch_size is the global batch (same results on 1 or N GPUs);
        # seedable sampler: the shuffle order is a function of (seed, epoch), so resuming can replay it.
        # non_blocking: batches from pinned memory (rslab.train.make_loader on a GPU) copy asynchronously
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True, data_seed=seed,
                                                  non_blocking=True),
    )
    try:
        return Accelerator(**kwargs)
    except ValueError as err:
        # accelerate keeps one process-wide state; a notebook that builds a second Trainer with
        # another precision would otherwise have to restart its kernel. The process group (kept in
        # PartialState) is left alone.
        if "already been initialized" not in str(err):
            raise
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(**kwargs)


class _BatchStream:
    """Batches of epoch ``e`` from position ``skip``, on the right device and shard.

    The order is a deterministic function of (seed, epoch): that is what lets a resumed run see
    exactly the batches the interrupted one would have seen.
    """

    def __init__(self, data: Any, accelerator, seed: int):
        self.accelerator, self.seed = accelerator, seed
        self.loader = self.factory = None
        n = accelerator.num_processes
        if isinstance(data, DataLoader):
            if data.batch_size is not None and data.batch_size % n:
                raise ValueError(f"DataLoader batch_size={data.batch_size} is the global batch and must be divisible "
                                 f"by the number of processes ({n})")
            self.loader = accelerator.prepare(data)
            base = getattr(self.loader, "base_dataloader", self.loader)
            # DataLoader.__iter__ draws its workers' base seed from the *global* RNG unless it has a
            # generator; a resumed run creates one more iterator than an uninterrupted one, so that
            # draw would shift every later dropout mask. A private generator keeps them apart.
            self.generator = torch.Generator()
            base.generator = self.generator
        elif callable(data):
            self.factory = data
        elif isinstance(data, Iterable) and iter(data) is not data:
            self.factory = lambda epoch: data
        else:
            raise ValueError(
                "train_data must be a torch DataLoader, a function epoch -> iterable of batches, or a re-iterable "
                f"collection such as a list; got {type(data).__name__} (a one-shot iterator cannot be restarted "
                "each epoch or replayed on resume)")

    def batches(self, epoch: int, skip: int) -> Iterator[Any]:
        if self.loader is not None:
            from accelerate import skip_first_batches

            self.generator.manual_seed(self.seed * 1_000_003 + epoch)
            loader = skip_first_batches(self.loader, skip) if skip else self.loader
            loader.set_epoch(epoch)
            return iter(loader)
        return self._from_factory(epoch, skip)

    def _from_factory(self, epoch: int, skip: int) -> Iterator[Any]:
        from accelerate.utils import find_batch_size, send_to_device, slice_tensors

        acc = self.accelerator
        for batch in itertools.islice(iter(self.factory(epoch)), skip, None):
            if acc.num_processes > 1:  # same split_batches semantics as the DataLoader path
                size = find_batch_size(batch)
                if size % acc.num_processes:
                    raise ValueError(f"batch of {size} samples cannot be split over {acc.num_processes} processes")
                part = size // acc.num_processes
                batch = slice_tensors(batch, slice(acc.process_index * part, (acc.process_index + 1) * part))
            yield send_to_device(batch, acc.device, non_blocking=True)  # asynchronous from pinned memory


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _split_loss_output(out: LossOutput) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(out, torch.Tensor) and out.ndim == 0 and out.requires_grad:  # the common case, fast
        return out, {}
    logs: dict[str, Any] = {}
    if isinstance(out, dict):
        if "loss" not in out:
            raise ValueError(f"loss_fn returned a dict without a 'loss' key (keys: {sorted(out)})")
        logs = {k: v for k, v in out.items() if k != "loss"}
        out = out["loss"]
    elif isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise ValueError("loss_fn must return a loss tensor, (loss, dict_of_scalars) or a dict with 'loss'")
        out, logs = out
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"loss_fn must return a scalar loss tensor, got {shape}; reduce it (e.g. .mean())")
    if not out.requires_grad:
        raise ValueError("the loss does not require grad: compute it from the model passed to loss_fn, "
                         "outside torch.no_grad(), and check that some parameters have requires_grad=True")
    return (out if out.ndim == 0 else out.reshape(())), logs


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclass
class RunEstimate:
    """What :meth:`Trainer.estimate` measured and extrapolated (printed before a long run)."""

    steps: int                       # optimiser steps of the run
    done: int                        # steps already done (a resumed run)
    samples_per_step: int | None     # images (or items) per optimiser step, all processes and micro-batches
    tokens_per_step: int | None
    step_s: float | None             # seconds per optimiser step (None: not timed)
    device: str
    precision: str
    grad_accum_steps: int
    processes: int
    method: str

    @property
    def expected_s(self) -> float | None:
        """Expected seconds for the steps still to do (None when not timed)."""
        return None if self.step_s is None else self.step_s * (self.steps - self.done)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "expected_s": self.expected_s}

    def __str__(self) -> str:
        per = "?" if self.samples_per_step is None else str(self.samples_per_step)
        toks = "" if self.tokens_per_step is None else f", {self.tokens_per_step} tokens"
        head = (f"rslab.train estimate: {self.steps} steps ({self.steps - self.done} to go), {per} samples{toks} per "
                f"step ({self.processes} process(es) x grad_accum {self.grad_accum_steps}), on {self.device}, "
                f"precision {self.precision}")
        if self.step_s is None:
            return head + "; not timed"
        return head + f"; {self.step_s:.3g} s/step -> expected {_hms(self.expected_s)} ({self.method})"


@dataclass
class _LogWindow:
    """What the training loop gathers between two history records."""

    start: float                                   # perf_counter() when the window opened
    losses: list[torch.Tensor] = field(default_factory=list)  # per-step losses (stay on the device)
    logs: dict[str, list[Any]] = field(default_factory=dict)  # extra scalars from loss_fn
    samples: int | None = 0                        # None: a batch without tensors, no throughput

    def add(self, logs: dict[str, Any], batch: Any) -> None:
        from accelerate.utils import find_batch_size

        for k, v in logs.items():
            self.logs.setdefault(k, []).append(v.detach() if isinstance(v, torch.Tensor) else v)
        if self.samples is not None:
            try:
                self.samples += find_batch_size(batch)
            except (TypeError, ValueError):
                self.samples = None


@dataclass
class _Loop:
    """The state of one ``Trainer.fit`` call (one session of a possibly resumed run)."""

    model: nn.Module               # the prepared (possibly DDP-wrapped) model
    autocast: Callable[[], Any]
    backward: Callable[[torch.Tensor], Any]
    batches: Iterator[Any]
    window: _LogWindow
    session_start: float
    bar: Any                       # tqdm progress bar


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``train_data``.

    Args:
        model: any ``nn.Module``. After ``fit`` it holds the trained weights (``trainer.model``).
        loss_fn: ``loss_fn(model, batch)`` -> a scalar loss tensor, or ``(loss, {"name": scalar})``,
            or ``{"loss": loss, "name": scalar}``; the extra scalars are averaged into the history.
            With several processes ``model`` is wrapped in DistributedDataParallel: call it
            (``model(x)``) rather than other methods so that gradients are synchronised.
        train_data: a ``DataLoader`` (its ``batch_size`` is the global batch; shuffling is seeded
            by ``config.seed`` and the epoch), a function ``epoch -> iterable of batches`` (must be
            deterministic in ``epoch`` for exact resume), or a list of batches.
        config: a :class:`TrainConfig`.
        optimizer: default :func:`default_optimizer` (AdamW, ``config.lr``, ``config.weight_decay``).
        scheduler: default warm-up + cosine (:func:`cosine_with_warmup`) over ``config.max_steps``;
            stepped once per optimiser step.
        eval_fn: ``eval_fn(model) -> {"metric": value}``, run on the main process under
            ``torch.no_grad()`` in eval mode every ``config.eval_every`` steps and at the end;
            logged as ``eval_<metric>``. It runs on a forked RNG, so it never changes training.
        ema: an :class:`EMA` teacher updated after every optimiser step (built automatically from
            ``config.ema_momentum`` when not given).
        callbacks: functions ``cb(trainer, record)`` called with each new history record.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], LossOutput], train_data: Any,
                 config: TrainConfig, *, optimizer: torch.optim.Optimizer | None = None,
                 scheduler: Any | None = None, eval_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
                 ema: EMA | None = None, callbacks: Sequence[Callable[["Trainer", dict], None]] = ()):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be a function loss_fn(model, batch) -> loss")
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        if eval_fn is not None and not callable(eval_fn):
            raise ValueError("eval_fn must be a function eval_fn(model) -> dict of metrics")
        if ema is not None and not isinstance(ema, EMA):
            raise ValueError(f"ema must be an rslab.train.EMA, got {type(ema).__name__}")
        self.config = config
        self.loss_fn, self.eval_fn, self.callbacks = loss_fn, eval_fn, list(callbacks)
        self.mixed_precision = _resolve_precision(config.mixed_precision, config.cpu)
        self.accelerator = _make_accelerator(self.mixed_precision, config.cpu, config.seed)

        optimizer = optimizer or default_optimizer(model, config.lr, config.weight_decay)
        if scheduler is None:
            make = cosine_with_warmup if config.schedule == "cosine" else constant_with_warmup
            extra = {"min_lr_ratio": config.min_lr_ratio} if config.schedule == "cosine" else {}
            scheduler = make(optimizer, config.warmup_steps, config.max_steps, **extra)
        self.scheduler = scheduler  # stepped by hand: once per optimiser step, whatever the process count
        self._model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # accelerate patches model.forward with autocast when mixed precision is on; we autocast the
        # whole loss_fn instead (covering a teacher forward and the loss too), so undo the patch to
        # leave the user's model untouched for inference after training.
        self._unwrapped = self.accelerator.unwrap_model(self._model, keep_fp32_wrapper=False)
        if config.compile:
            # Module.compile() compiles __call__ in place: parameter names, state_dict keys and
            # checkpoints stay those of the plain model (no "_orig_mod." prefix)
            self._unwrapped.compile(backend="inductor" if config.compile is True else config.compile)

        if ema is None and config.ema_momentum is not None:
            ema = EMA(self.model, config.ema_momentum)
        if ema is not None:
            if ema.total_steps is None:
                ema.total_steps = config.max_steps
            ema.to(self.accelerator.device)
        self.ema = ema
        self._stream = _BatchStream(train_data, self.accelerator, config.seed)

        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        history_path = self.out_dir / "history.jsonl" if self.out_dir and self.is_main_process else None
        self._history = HistoryWriter(history_path)
        self.step = 0            # optimiser steps completed
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of the current epoch consumed (per process)
        self._wall_s = 0.0       # training time over all (resumed) sessions
        self._session_start: float | None = None
        self.last_checkpoint: Path | None = None

    # ---- public properties

    @property
    def model(self) -> nn.Module:
        """The trained model, without any DDP wrapper."""
        return self._unwrapped

    @property
    def ema_model(self) -> nn.Module | None:
        return None if self.ema is None else self.ema.model

    @property
    def history(self) -> list[dict[str, Any]]:
        return self._history.records

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    # ---- training

    def fit(self, resume: bool | str | Path = True) -> list[dict[str, Any]]:
        """Train up to ``config.max_steps`` and return the history.

        ``resume=True`` continues from the newest intact checkpoint in ``out_dir`` (a finished run
        returns at once, so re-running a notebook does not retrain); ``resume=False`` starts over
        and deletes that run's old checkpoints; a path resumes from that checkpoint directory.

        The steps: :meth:`_start` (fresh or resumed state), :meth:`_open_loop`, then per optimiser
        step :meth:`_train_step` (micro-batches + update) and :meth:`_after_step` (log, evaluate,
        checkpoint), and :meth:`_close_loop`.
        """
        self._start(resume)
        if self._already_done():
            return self.history
        loop = self._open_loop()
        try:
            while self.step < self.config.max_steps:
                lr = self._train_step(loop)
                self._after_step(loop, lr)
        finally:
            self._close_loop(loop)
        return self.history

    def _already_done(self) -> bool:
        """True (and says so) when the resumed run has already reached ``max_steps``."""
        cfg = self.config
        if self.step < cfg.max_steps:
            return False
        if self.is_main_process and cfg.progress:
            print(f"rslab.train: already at step {self.step}/{cfg.max_steps}"
                  + (f" (loaded {self.last_checkpoint})" if self.last_checkpoint else ""))
        return True

    def _open_loop(self) -> "_Loop":
        """The loop's fixed parts (model, autocast, backward), its batch stream and progress bar."""
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        # Without fp16 grad scaling accelerate's backward is loss.backward() plus a division by 1, and
        # autocast is a no-op when precision is fp32: skip both wrappers on that hot path.
        autocast = acc.autocast if self.mixed_precision != "no" else contextlib.nullcontext
        backward = acc.backward if acc.scaler is not None else torch.Tensor.backward
        self._model.train()
        batches = self._stream.batches(self.epoch, self.batch_in_epoch)
        window = _LogWindow(start=time.perf_counter())
        session_start = self._session_start = time.perf_counter()
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (cfg.progress and self.is_main_process))
        return _Loop(self._model, autocast, backward, batches, window, session_start, bar)

    def _close_loop(self, loop: "_Loop") -> None:
        """Close the bar and the batch stream; add this session's time to the run's wall time."""
        loop.bar.close()
        self._wall_s += time.perf_counter() - loop.session_start
        self._session_start = None
        if hasattr(loop.batches, "close"):
            loop.batches.close()

    def _train_step(self, loop: "_Loop") -> float:
        """One optimiser step over ``grad_accum_steps`` micro-batches; returns the lr it used."""
        accum = self.config.grad_accum_steps
        step_loss = None
        for micro in range(accum):
            loss = self._micro_step(loop, last=micro == accum - 1)
            step_loss = loss if step_loss is None else step_loss + loss
        lr = self._optimizer_step(loop.model)
        loop.window.losses.append(step_loss if accum == 1 else step_loss / accum)
        loop.bar.update(1)
        return lr

    def _micro_step(self, loop: "_Loop", last: bool) -> torch.Tensor:
        """Forward + backward of one batch (gradients synchronised on the ``last`` micro-batch only)."""
        accum = self.config.grad_accum_steps
        batch, loop.batches = self._next_batch(loop.batches)
        try:
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(loop.model)
            with sync:
                with loop.autocast():
                    loss, logs = _split_loss_output(self.loss_fn(loop.model, batch))
                loop.backward(loss if accum == 1 else loss / accum)
        except torch.OutOfMemoryError as err:
            raise self._oom_error(err, batch) from None
        loss = loss.detach()
        loop.window.add(logs, batch)
        return loss

    def _optimizer_step(self, model: nn.Module) -> float:
        """Clip, update, advance the schedule and the EMA teacher; returns the lr the update used."""
        cfg, acc = self.config, self.accelerator
        if cfg.clip_grad_norm is not None:
            acc.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        if acc.scaler is None:
            # accelerate's optimizer wrapper only matters with a grad scaler (fp16); otherwise its
            # step/zero_grad cost importlib and inspect look-ups per call (~0.5 ms, a lot for a
            # small model), so call the wrapped optimizer directly.
            self.optimizer.optimizer.step()
        else:
            self.optimizer.step()
        if acc.scaler is None or not self.optimizer.step_was_skipped:
            self.scheduler.step()  # fp16: a step skipped for overflow does not advance the schedule
        self.optimizer.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return lr

    def _after_step(self, loop: "_Loop", lr: float) -> None:
        """The periodic actions due after this step: log, evaluate, checkpoint (all at the last step)."""
        cfg = self.config
        last = self.step == cfg.max_steps
        do_log = self.step % cfg.log_every == 0 or last
        do_eval = self.eval_fn is not None and (last or (cfg.eval_every and self.step % cfg.eval_every == 0))
        do_ckpt = self.out_dir is not None and (
            last or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0))
        if not (do_log or do_eval or do_ckpt):
            return
        losses = self._checked_losses(loop.window.losses)  # raises NonFiniteLossError before anything is saved
        if do_log:
            self._log_window(loop, losses, lr)
        if do_eval:
            self.evaluate()
        if do_ckpt:
            self.save_checkpoint()

    def _log_window(self, loop: "_Loop", losses: torch.Tensor, lr: float) -> None:
        """Write one history record (mean loss and logs since the last one) and start a new window."""
        now = time.perf_counter()
        window = loop.window
        record = {"step": self.step, "epoch": self.epoch, "loss": float(losses.mean()), "lr": lr,
                  **self._mean_logs(window.logs)}
        if window.samples:
            record["samples_per_s"] = round(window.samples * self.accelerator.num_processes / (now - window.start), 2)
        record["wall_s"] = round(self._wall_s + now - loop.session_start, 3)
        self._record(record)
        loop.bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.3g}", refresh=False)
        loop.window = _LogWindow(start=now)

    def _next_batch(self, batches: Iterator[Any]) -> tuple[Any, Iterator[Any]]:
        """Next batch, rolling over to the next epoch (and its reshuffle) when one ends."""
        for _ in range(2):
            try:
                batch = next(batches)
                self.batch_in_epoch += 1
                return batch, batches
            except StopIteration:
                started_empty = self.batch_in_epoch == 0
                self.epoch += 1
                self.batch_in_epoch = 0
                batches = self._stream.batches(self.epoch, 0)
                if started_empty:
                    break
        raise ValueError(f"train_data yielded no batches in epoch {self.epoch - 1}: is the dataset empty, or "
                         "smaller than one batch with drop_last=True?")

    def _checked_losses(self, window: list[torch.Tensor]) -> torch.Tensor:
        """The window's per-step losses (averaged over processes) on the CPU; NaN/inf raises.

        Checking only at log/eval/checkpoint boundaries keeps the loop free of a per-step
        device sync; the exact step is still recovered from the window."""
        if not window:
            return torch.zeros(0)
        losses = torch.stack(window).float()
        if self.accelerator.num_processes > 1:
            losses = self.accelerator.reduce(losses, "mean")
        losses = losses.cpu()
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            step = self.step - len(window) + 1 + i
            self._record({"step": step, "epoch": self.epoch, "loss": float(losses[i]), "error": "non-finite loss"})
            raise NonFiniteLossError(step, float(losses[i]), self.last_checkpoint)
        return losses

    def _mean_logs(self, window_logs: dict[str, list[Any]]) -> dict[str, float]:
        if not window_logs:
            return {}
        keys = sorted(window_logs)
        means = torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).reshape(())
                                          for v in window_logs[k]]).mean() for k in keys])
        if self.accelerator.num_processes > 1:
            means = self.accelerator.reduce(means, "mean")
        return dict(zip(keys, means.cpu().tolist()))

    def _oom_error(self, err: Exception, batch: Any) -> torch.OutOfMemoryError:
        from accelerate.utils import find_batch_size

        try:
            size = find_batch_size(batch)
        except (TypeError, ValueError):
            size = None
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        accum, n = self.config.grad_accum_steps, self.accelerator.num_processes
        if size:
            global_batch = size * n * accum
            advice = (f"with a batch of {size} samples per device ({global_batch} per optimiser step: {size} x "
                      f"{n} process(es) x grad_accum_steps={accum}). Halve the DataLoader batch_size and set "
                      f"grad_accum_steps={2 * accum} to keep the same effective batch of {global_batch}")
        else:
            advice = (f"with grad_accum_steps={accum}. Use smaller batches and raise grad_accum_steps by the same "
                      "factor to keep the effective batch")
        hint = "" if self.mixed_precision != "no" else "; mixed_precision='bf16' also roughly halves activation memory"
        return torch.OutOfMemoryError(f"out of GPU memory at step {self.step + 1} {advice}{hint}.\n"
                                      f"Original error: {str(err).splitlines()[0] if str(err) else err!r}")

    def _record(self, record: dict[str, Any]) -> None:
        if not self.is_main_process:
            return
        self._history.append(record)
        for callback in self.callbacks:
            callback(self, self._history.records[-1])

    # ---- sizing

    def estimate(self, warmup: int = 3, tokens_per_sample: int | None = None, show: bool = True) -> "RunEstimate":
        """Time ``warmup`` forward + backward passes on the run's next batches and extrapolate to the
        remaining steps; prints (``show``) steps, samples (and tokens) per step and the expected time.

        Method: a timed warm-up, not a FLOP count. The first pass is run untimed (compilation,
        cuDNN autotuning, allocator warm-up); the optimiser step is not included (small next to
        forward + backward for these models). The training state is untouched: no optimiser step,
        gradients cleared, buffers (e.g. BatchNorm statistics) and every RNG restored, and the data
        stream is not advanced, so a run with an estimate equals one without (a ``loss_fn`` that
        keeps private random state of its own is the exception: pass ``warmup=0`` to skip timing).
        """
        from accelerate.utils import find_batch_size

        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (0: no timing), got {warmup!r}")
        cfg, acc = self.config, self.accelerator
        done = self.step
        if done == 0 and self.out_dir is not None:  # fit() will resume from a checkpoint: count its steps
            path = find_resumable(self.out_dir)
            if path is not None:
                done = int(torch.load(path / "state.pt", map_location="cpu", weights_only=True)["step"])
        remaining = max(0, cfg.max_steps - done)
        batches = self._stream.batches(self.epoch, self.batch_in_epoch)
        try:
            first = next(batches)
        except StopIteration:
            raise ValueError("train_data yielded no batches: nothing to estimate") from None
        try:
            per_device = find_batch_size(first)
        except (TypeError, ValueError):
            per_device = None
        samples = None if per_device is None else per_device * acc.num_processes * cfg.grad_accum_steps
        step_s = None
        if warmup and remaining:
            model = self._model
            buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}
            py_state, np_state = random.getstate(), np.random.get_state()
            devices = [self.device] if self.device.type == "cuda" else []
            autocast = acc.autocast if self.mixed_precision != "no" else contextlib.nullcontext
            was_training = model.training
            model.train()
            try:
                with torch.random.fork_rng(devices=devices):
                    times = []
                    for i in range(warmup + 1):
                        batch = first if i == 0 else next(batches, first)
                        if self.device.type == "cuda":
                            torch.cuda.synchronize(self.device)
                        t0 = time.perf_counter()
                        with autocast():
                            loss, _ = _split_loss_output(self.loss_fn(model, batch))
                        loss.backward()
                        if self.device.type == "cuda":
                            torch.cuda.synchronize(self.device)
                        if i:
                            times.append(time.perf_counter() - t0)
                        self.optimizer.optimizer.zero_grad(set_to_none=True)
                step_s = float(np.median(times)) * cfg.grad_accum_steps
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
                with torch.no_grad():
                    for k, v in self.model.named_buffers():
                        v.copy_(buffers[k])
                self.optimizer.optimizer.zero_grad(set_to_none=True)
                model.train(was_training)
        if hasattr(batches, "close"):
            batches.close()
        est = RunEstimate(steps=cfg.max_steps, done=min(done, cfg.max_steps), samples_per_step=samples,
                          tokens_per_step=None if samples is None or tokens_per_sample is None
                          else samples * tokens_per_sample,
                          step_s=step_s, device=_device_name(self.device), precision=self.mixed_precision,
                          grad_accum_steps=cfg.grad_accum_steps, processes=acc.num_processes,
                          method=f"timed warm-up: median of {warmup} forward+backward passes after one untimed"
                          if step_s is not None else "not timed")
        if show and self.is_main_process:
            print(est)
        return est

    # ---- evaluation

    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` now (main process; others wait) and log its metrics; returns them."""
        if self.eval_fn is None:
            raise ValueError("no eval_fn was given to the Trainer")
        metrics: dict[str, float] = {}
        if self.is_main_process:
            model = self.model
            was_training = model.training
            model.eval()
            devices = [self.device] if self.device.type == "cuda" else []
            py_state, np_state = random.getstate(), np.random.get_state()
            try:
                with torch.random.fork_rng(devices=devices), torch.no_grad(), self.accelerator.autocast():
                    out = self.eval_fn(model)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
                model.train(was_training)
            if not isinstance(out, dict):
                raise ValueError(f"eval_fn must return a dict of metric name -> number, got {type(out).__name__}")
            metrics = {k: float(v) for k, v in out.items()}
            self._record({"step": self.step, **{f"eval_{k}": v for k, v in metrics.items()}})
        self.accelerator.wait_for_everyone()
        return metrics

    # ---- checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/checkpoints/step_XXXXXX`` now (all processes must call it)."""
        if self.out_dir is None:
            raise ValueError("TrainConfig.out_dir is None: set it to save checkpoints")
        from accelerate.utils import gather_object
        from safetensors.torch import save_model

        acc = self.accelerator
        rng = [_rng_state()]
        rngs = gather_object(rng) if acc.num_processes > 1 else rng
        path = None
        if self.is_main_process:
            state = {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "wall_s": self._wall_s + (time.perf_counter() - self._session_start if self._session_start else 0.0),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "rng": rngs, "num_processes": acc.num_processes, "config": self.config.to_dict(),
            }
            writers = {"model.safetensors": lambda p: save_model(self.model, str(p)),
                       "state.pt": lambda p: torch.save(state, p)}
            if self.ema is not None:
                writers["ema.safetensors"] = lambda p: save_model(self.ema.model, str(p))
            path = write_checkpoint(self.out_dir, self.step, writers, self.config.keep_last)
        acc.wait_for_everyone()
        self.last_checkpoint = path or self.out_dir / CHECKPOINTS / f"step_{self.step:06d}"
        return self.last_checkpoint

    def _start(self, resume: bool | str | Path) -> None:
        """Fresh start (seeded) or restore a checkpoint; prepares out_dir and the history."""
        from accelerate.utils import set_seed

        acc = self.accelerator
        if resume is True and self.out_dir is None and self.step > 0:
            return  # in-memory run: a second fit() continues where the first stopped
        if self.out_dir is not None and self.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir)
        acc.wait_for_everyone()
        path: Path | None = None
        if isinstance(resume, (str, Path)):
            path = Path(resume)
            if not (path / "state.pt").is_file():
                raise FileNotFoundError(f"{path} is not a checkpoint directory (no state.pt); "
                                        f"checkpoints live in out_dir/{CHECKPOINTS}/step_*")
        elif resume is True and self.out_dir is not None:
            path = find_resumable(self.out_dir)
        elif resume is not False and resume is not True:
            raise ValueError(f"resume must be True, False or a checkpoint path, got {resume!r}")

        if path is None:
            if resume is False and self.out_dir is not None and list_checkpoints(self.out_dir):
                warnings.warn(f"resume=False: deleting the previous run's checkpoints in {self.out_dir / CHECKPOINTS}",
                              stacklevel=3)
                acc.wait_for_everyone()
                if self.is_main_process:
                    shutil.rmtree(self.out_dir / CHECKPOINTS, ignore_errors=True)
            self.step = self.epoch = self.batch_in_epoch = 0
            self._wall_s, self.last_checkpoint = 0.0, None
            self._history.rewrite([])
            set_seed(self.config.seed)
            return
        self._restore(path)

    def _restore(self, path: Path) -> None:
        from safetensors.torch import load_model

        acc = self.accelerator
        check_state_dict_compatible(self.model, path / "model.safetensors")
        if self.ema is not None:
            if not (path / "ema.safetensors").is_file():
                raise ValueError(f"{path} has no ema.safetensors but this Trainer has an EMA teacher: "
                                 "resume a run that had one, or train into a fresh out_dir")
            check_state_dict_compatible(self.ema.model, path / "ema.safetensors")
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        load_model(self.model, str(path / "model.safetensors"), device=str(self.device))
        if self.ema is not None:
            load_model(self.ema.model, str(path / "ema.safetensors"), device=str(self.device))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:
            raise ValueError(f"the optimiser state in {path} does not fit this optimiser ({err}); "
                             "was it built with other parameter groups?") from err
        self.scheduler.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self._wall_s, self.last_checkpoint = float(state.get("wall_s", 0.0)), path

        changed = {k: (v, getattr(self.config, k, None)) for k, v in state["config"].items()
                   if k not in ("out_dir", "progress") and v != self.config.to_dict().get(k)}
        if changed and self.is_main_process:
            diff = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            warnings.warn(f"resuming {path.name} with a changed config ({diff})", stacklevel=3)

        if self._history.path is not None and self._history.path.is_file():
            # drop what the interrupted run logged after this checkpoint: those steps are redone
            self._history.rewrite([r for r in load_history(self._history.path) if r["step"] <= self.step])
        rngs = state["rng"]
        if len(rngs) == acc.num_processes:
            _set_rng_state(rngs[acc.process_index])
        else:  # another process count: the run continues correctly but not bit-identically
            warnings.warn(f"{path.name} was written by {len(rngs)} process(es), now {acc.num_processes}: "
                          "RNG streams are re-seeded", stacklevel=3)
            from accelerate.utils import set_seed

            set_seed(self.config.seed + self.step)
        acc.wait_for_everyone()
