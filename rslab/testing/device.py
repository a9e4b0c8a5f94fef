"""A second device on a CPU-only machine, to catch device-placement bugs in CPU tests.

A GPU run fails with ``Expected all tensors to be on the same device`` when code builds an input
on the CPU for a model that the trainer moved to the GPU. CPU-only tests cannot see that class of
bug: every tensor is on the CPU. :func:`other_device` gives them a second device.

Inside ``with other_device() as dev:`` the device ``dev`` (``torch.device("meta")``) holds real
data: ``model.to(dev)``, ``x.to(dev)``, ``torch.zeros(..., device=dev)`` give tensors that report
``dev`` as their device and compute on CPU storage underneath (a wrapper tensor subclass), so
training and evaluation run with real numbers. Every aten operation is checked: one that mixes a
tensor on ``dev`` with a CPU tensor of one or more dimensions raises :class:`DeviceMismatchError`
naming the operation (PyTorch allows a 0-dim CPU tensor next to a CUDA one; so does this check).
``.cpu()`` / ``.to("cpu")`` bring a tensor back; ``.numpy()`` on a tensor still on ``dev`` fails,
as it does for a CUDA tensor.

``with other_device(trainer=True)`` also makes :class:`rslab.train.Trainer` place its model and
its batches on ``dev`` as it would on a GPU (its accelerator reports ``dev`` as its device), so
a recipe's whole train path runs "on the accelerator". Checkpoint writing is not supported there
(``out_dir=None``).

The ``meta`` device is borrowed as the device's name because it exists in every PyTorch build;
code that really needs meta tensors (shape-only) does not run inside the context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from rslab.train import engine

__all__ = ["DeviceMismatchError", "OtherDeviceTensor", "other_device", "OTHER_DEVICE"]

OTHER_DEVICE = torch.device("meta")
_CPU = torch.device("cpu")
aten = torch.ops.aten

# ops whose device kwarg / semantics move data between devices (mixing is their purpose)
_COPY_OPS = {aten.copy_.default, aten._to_copy.default, aten._copy_from.default,
             aten._copy_from_and_resize.default}


# advanced indexing accepts CPU index tensors for a tensor on any device (PyTorch moves them)
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default,
              aten._unsafe_index.Tensor, aten._unsafe_index_put.default}


class DeviceMismatchError(RuntimeError):
    """An operation mixed tensors on two devices (it would fail on a GPU)."""


class OtherDeviceTensor(torch.Tensor):
    """A CPU tensor that reports :data:`OTHER_DEVICE` as its device (see the module docstring)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        if isinstance(elem, OtherDeviceTensor) or elem.device.type != "cpu":
            raise ValueError(f"OtherDeviceTensor wraps a plain CPU tensor, got {type(elem).__name__} on {elem.device}")
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=OTHER_DEVICE, requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    def __repr__(self) -> str:  # noqa: D105
        return f"OtherDeviceTensor({self.elem!r})"

    def tolist(self):  # a CUDA tensor's tolist() copies to the host; so does this one
        return self.elem.tolist()

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _is_other(device: Any) -> bool:
    return device is not None and torch.device(device) == OTHER_DEVICE


def _unwrap(x: Any) -> Any:
    return x.elem if isinstance(x, OtherDeviceTensor) else x


def _wrap(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and not isinstance(x, OtherDeviceTensor):
        return OtherDeviceTensor(x)
    return x


def _dispatch(func, args, kwargs):
    leaves, _ = tree_flatten((args, kwargs))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    on_other = [t for t in tensors if isinstance(t, OtherDeviceTensor)]
    plain = [t for t in tensors if not isinstance(t, OtherDeviceTensor)]

    if func in (aten._to_copy.default, aten._copy_from.default, aten._copy_from_and_resize.default):
        target = kwargs.get("device")
        src = args[0]
        to_other = _is_other(target) if target is not None else isinstance(src, OtherDeviceTensor)
        if func is aten._to_copy.default:
            kw = dict(kwargs)
            if target is not None:
                kw["device"] = _CPU
            out = func(_unwrap(src), *args[1:], **kw)
            return _wrap(out) if to_other else out
    if func is aten.copy_.default:  # dst.copy_(src) crosses devices by design; dst keeps its device
        dst, src = args[0], args[1]
        func(_unwrap(dst), _unwrap(src), *args[2:], **kwargs)
        return dst

    if on_other and func not in _COPY_OPS:
        if func in _INDEX_OPS and isinstance(args[0], OtherDeviceTensor):
            indices = {id(t) for t in args[1] if isinstance(t, torch.Tensor)}
            plain = [t for t in plain if id(t) not in indices]
        bad = [t for t in plain if t.dim() > 0]
        if bad:
            raise DeviceMismatchError(
                f"{func} mixes tensors on {OTHER_DEVICE} (the model's device in this check) with CPU tensors of shape "
                f"{[tuple(t.shape) for t in bad]}: on a GPU this raises 'Expected all tensors to be on the same "
                "device'. Move the input to the model's device (x.to(next(model.parameters()).device)).")

    new_device = kwargs.get("device")
    kw = kwargs
    if _is_other(new_device):  # a factory function asked for the other device
        kw = {**kwargs, "device": _CPU}
    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kw))
    if on_other or _is_other(new_device):
        # views and in-place ops return their (wrapped) input unchanged
        if func._schema.is_mutable and isinstance(args[0], OtherDeviceTensor) and out is _unwrap(args[0]):
            return args[0]
        return tree_map(_wrap, out)
    return out


class _OtherDeviceMode(TorchDispatchMode):
    """Catches factory calls with ``device=OTHER_DEVICE`` (no tensor argument to dispatch on)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves, _ = tree_flatten((args, kwargs))
        if any(isinstance(t, OtherDeviceTensor) for t in leaves) or _is_other(kwargs.get("device")):
            return _dispatch(func, args, kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def other_device(trainer: bool = False) -> Iterator[torch.device]:
    """Run the body with a second device (see the module docstring); yields that device.

    ``trainer=True``: :class:`rslab.train.Trainer` built inside places its model and batches there.
    """
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # model.to(dev) keeps Parameter identity
    patch = _trainer_on_other_device() if trainer else contextlib.nullcontext()
    try:
        with patch, _data_constructors(), _OtherDeviceMode():
            yield OTHER_DEVICE
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)


@contextlib.contextmanager
def _data_constructors():
    """``torch.tensor(data, device=dev)`` / ``torch.as_tensor``: built on the CPU, then moved.

    (PyTorch builds these below the dispatcher, so the data would otherwise be lost on meta.)"""
    import torch.optim.optimizer as optimizer_module

    originals = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}
    fused_devices = optimizer_module._get_fused_kernels_supported_devices
    # fused AdamW accepts the devices it has kernels for; this device computes on the CPU's
    optimizer_module._get_fused_kernels_supported_devices = lambda: [*fused_devices(), OTHER_DEVICE.type]

    def patched(original):
        def build(data, *args, device=None, **kwargs):
            if _is_other(device):
                return original(data, *args, device=_CPU, **kwargs).to(OTHER_DEVICE)
            return original(data, *args, device=device, **kwargs)
        return build

    for name, original in originals.items():
        setattr(torch, name, patched(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)
        optimizer_module._get_fused_kernels_supported_devices = fused_devices


@contextlib.contextmanager
def _trainer_on_other_device():
    from accelerate import Accelerator

    class _OtherDeviceAccelerator(Accelerator):
        @property
        def device(self) -> torch.device:
            return OTHER_DEVICE

    made = engine._make_accelerator

    def make(mixed_precision: str, cpu: bool, seed: int):
        acc = made(mixed_precision, True, seed)
        acc.__class__ = _OtherDeviceAccelerator
        return acc

    engine._make_accelerator = make
    try:
        yield
    finally:
        engine._make_accelerator = made
