"""DataLoaders sized for the machine: worker processes and pinned memory when a GPU is there.

A recipe that reads items one by one (a real dataset at 1024 px: decode, resize) must not do it
serially with the GPU: :func:`make_loader` starts ``num_workers`` processes that prepare the next
batches while the GPU trains, and pins the batches' memory so the host-to-device copy is
asynchronous (``tensor.to(device, non_blocking=True)``). On the CPU (tests, smoke) the defaults
keep everything in the main process, which is faster there and deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["auto_num_workers", "make_loader"]


def auto_num_workers(device: str | torch.device | None = None, cap: int = 8) -> int:
    """Loader workers for ``device``: 0 on the CPU (the model needs the cores), else up to ``cap``
    (one core left for the training process). ``device=None``: a GPU when one is available."""
    if not isinstance(cap, int) or cap < 0:
        raise ValueError(f"cap must be an int >= 0, got {cap!r}")
    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if not on_gpu:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cap, cores - 1))


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                num_workers: int | str = "auto", pin_memory: bool | str = "auto",
                device: str | torch.device | None = None, generator: torch.Generator | None = None,
                collate_fn: Callable[[list], Any] | None = None, prefetch_factor: int = 2) -> DataLoader:
    """A ``DataLoader`` with workers and pinned memory chosen for ``device`` (``"auto"``: see
    :func:`auto_num_workers`; pinned memory when the device is a GPU).

    Shuffling draws from ``generator`` (seed it for a reproducible order; worker seeds follow it,
    so the order does not depend on ``num_workers``).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if num_workers == "auto":
        num_workers = auto_num_workers(device)
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be 'auto' or an int >= 0, got {num_workers!r}")
    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if pin_memory == "auto":
        pin_memory = on_gpu
    if not isinstance(pin_memory, bool):
        raise ValueError(f"pin_memory must be 'auto', True or False, got {pin_memory!r}")
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": False} if num_workers else {}
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      pin_memory=pin_memory and torch.cuda.is_available(), generator=generator,
                      collate_fn=collate_fn, **extra)
