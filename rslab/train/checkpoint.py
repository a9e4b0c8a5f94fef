"""Checkpoints that survive ``kill -9``: atomic directories with a checksummed manifest.

Layout (``out_dir/checkpoints/step_000123/``)::

    model.safetensors   the model's state_dict (safetensors: no pickle, exact bytes)
    ema.safetensors     the EMA teacher, when there is one
    state.pt            optimiser, LR scheduler, grad scaler, step, data position, RNG states
    manifest.json       size and SHA-256 of every file above (written last)

Everything is written into a hidden temporary directory which is then renamed into place with
``os.replace`` (atomic on POSIX), so a reader sees a whole checkpoint or none. The manifest
also catches damage after the fact (a truncated copy, a full disk): :func:`find_resumable`
skips such a checkpoint with a warning and falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CHECKPOINTS", "checkpoint_step", "list_checkpoints", "write_checkpoint", "verify_checkpoint",
    "find_resumable", "check_state_dict_compatible", "load_weights",
]

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
FORMAT = "rslab-checkpoint-v1"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_step(path: str | Path) -> int:
    match = _STEP_DIR.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint directory (expected a name like step_000123)")
    return int(match.group(1))


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint directories under ``out_dir/checkpoints``, oldest step first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=checkpoint_step)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file (or, on POSIX, a directory entry) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on Windows; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(out_dir: str | Path, step: int, writers: dict[str, Callable[[Path], None]],
                     keep_last: int | None = None) -> Path:
    """Write one checkpoint atomically and prune old ones.

    Args:
        writers: file name -> function writing that file at the given path.
        keep_last: keep only the newest ``keep_last`` checkpoints (None or 0 keeps all).
    """
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {}
    for name, write in writers.items():
        path = tmp / name
        write(path)
        _fsync(path)  # data on disk before the rename makes it visible
        files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1))
    _fsync(tmp / MANIFEST)
    if final.exists():  # re-saving a step (resumed past a damaged checkpoint): swap it out
        trash = root / f".trash-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync(root)
    if keep_last:
        for old in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temporaries(out_dir: str | Path) -> None:
    """Delete half-written ``.tmp-*`` / ``.trash-*`` directories left by a killed run."""
    root = Path(out_dir) / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(p, ignore_errors=True)


def verify_checkpoint(path: str | Path) -> str | None:
    """None when the checkpoint is complete and intact, else a sentence saying what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return f"{path.name}: no {MANIFEST} (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{path.name}: {MANIFEST} is unreadable"
    for name, expected in files.items():
        f = path / name
        if not f.is_file():
            return f"{path.name}: {name} is missing"
        size = f.stat().st_size
        if size != expected["bytes"]:
            return f"{path.name}: {name} has {size} bytes, the manifest says {expected['bytes']} (truncated?)"
        if _sha256(f) != expected["sha256"]:
            return f"{path.name}: {name} does not match its SHA-256 checksum (corrupted)"
    return None


def find_resumable(out_dir: str | Path) -> Path | None:
    """The newest intact checkpoint under ``out_dir``; warns about each damaged one it skips."""
    for path in reversed(list_checkpoints(out_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warnings.warn(f"skipping damaged checkpoint {problem}; trying the previous one", stacklevel=2)
    return None


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)


def check_state_dict_compatible(model: nn.Module, weights_file: str | Path) -> None:
    """Raise ``ValueError`` listing missing, unexpected and shape-mismatched keys, if any.

    Keys missing from the file only because they alias another saved tensor (tied weights,
    which safetensors stores once) are not counted as missing.
    """
    from safetensors import safe_open

    with safe_open(str(weights_file), framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    own = model.state_dict()
    present_storages = {_storage_key(v) for k, v in own.items() if k in saved}
    missing = [k for k in own if k not in saved and _storage_key(own[k]) not in present_storages]
    unexpected = [k for k in saved if k not in own]
    mismatched = [f"{k}: checkpoint {list(saved[k])} vs model {list(own[k].shape)}"
                  for k in own if k in saved and tuple(own[k].shape) != saved[k]]
    if missing or unexpected or mismatched:
        def block(title: str, items: list[str]) -> str:
            shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""
        raise ValueError(
            f"checkpoint {weights_file} was saved from a different model configuration:"
            + block("shape mismatch", mismatched) + block("missing from checkpoint", missing)
            + block("unexpected in checkpoint", unexpected)
            + "\nBuild the model with the config used for that run, or train into a fresh out_dir.")


def load_weights(model: nn.Module, path: str | Path, ema: bool = False) -> nn.Module:
    """Load weights into ``model`` from a ``.safetensors`` file, a checkpoint directory, or an
    ``out_dir`` (its newest intact checkpoint). ``ema=True`` loads the EMA teacher's weights.

    Mismatched configurations raise ``ValueError`` listing the offending keys.
    """
    from safetensors.torch import load_model

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: pass a .safetensors file, a step_* directory or an out_dir")
    if path.is_dir() and not _STEP_DIR.match(path.name):
        found = find_resumable(path)
        if found is None:
            raise FileNotFoundError(f"no intact checkpoint under {path / CHECKPOINTS}: train first (Trainer.fit)")
        path = found
    if path.is_dir():
        path = path / ("ema.safetensors" if ema else "model.safetensors")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist" + (" (that run had no EMA teacher)" if ema else ""))
    check_state_dict_compatible(model, path)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    load_model(model, str(path), strict=True, device=str(device))
    return model
