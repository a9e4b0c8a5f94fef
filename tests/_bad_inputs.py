"""Helpers shared by the tests/test_bad_inputs_*.py modules: write real-format files, check errors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image


def png(path: Path, arr, mode: str | None = None, palette=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    im = Image.fromarray(arr, mode=mode) if mode else Image.fromarray(arr)
    if palette is not None:
        im = Image.fromarray(arr.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(palette)] = palette
        im.putpalette(flat.reshape(-1).tolist())
    im.save(path)
    return path


def jpg(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path, quality=95)
    return path


def tif(path: Path, arr, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if arr.ndim == 3 and "planarconfig" not in kw and "photometric" not in kw:
        kw["planarconfig"] = "separate"
    kw.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, arr, **kw)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raises(exc, fn, *, names=(), problem: str):
    """``fn()`` raises ``exc`` whose message contains every name and matches ``problem`` (regex)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as info:
            fn()
    message = str(info.value)
    for name in names:
        assert str(name) in message, f"{name!r} not named in: {message}"
    assert re.search(problem, message, flags=re.IGNORECASE), f"{problem!r} not in: {message}"
    return message


def warns(fn, *, names=(), problem: str):
    """``fn()`` succeeds with a ReadConversionWarning naming ``names`` and matching ``problem``."""
    from rslab.data.readers import ReadConversionWarning

    with pytest.warns(ReadConversionWarning) as record:
        out = fn()
    text = " | ".join(str(w.message) for w in record)
    for name in names:
        assert str(name) in text, f"{name!r} not named in: {text}"
    assert re.search(problem, text, flags=re.IGNORECASE), f"{problem!r} not in: {text}"
    return out
