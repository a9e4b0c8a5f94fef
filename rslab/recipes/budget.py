"""Before a long run: how many steps, how many images per step, and how long on this device.

:func:`time_step` measures a training step's forward + backward on the real model and batch
(no optimiser step: the weights do not change; gradients are cleared afterwards), and
:func:`print_budget` prints the expected duration of the run from it. Data loading is not in the
measurement, so the estimate is a lower bound when reading from disk is the bottleneck.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(loss_fn: Callable[[], torch.Tensor], model: torch.nn.Module, repeats: int = 2) -> float:
    """Seconds of one forward + backward of ``loss_fn()`` (a scalar loss of ``model``), the median of
    ``repeats`` timed calls after one warm-up call. The model's gradients are cleared afterwards."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters to time a training step of")
    device = params[0].device
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        loss = loss_fn()
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
        loss.backward()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return sorted(times)[len(times) // 2]


def device_label(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_budget(what: str, steps: int, images_per_step: int, seconds_per_step: float | None,
                 device: torch.device | str) -> dict:
    """Print (and return) the plan of a training run: steps, images per step, expected time."""
    if steps < 1 or images_per_step < 1:
        raise ValueError(f"steps and images_per_step must be >= 1, got {steps}, {images_per_step}")
    plan = {"what": what, "steps": int(steps), "images_per_step": int(images_per_step),
            "device": device_label(device), "seconds_per_step": seconds_per_step,
            "expected_s": None if seconds_per_step is None else seconds_per_step * steps}
    eta = "not measured" if seconds_per_step is None else (
        f"~{format_duration(plan['expected_s'])} "
        f"({seconds_per_step:.3g} s/step forward+backward, data loading excluded)")
    print(f"{what}: {steps} steps x {images_per_step} images per step on {plan['device']}: {eta}")
    return plan
