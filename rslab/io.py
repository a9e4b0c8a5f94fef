"""Small file helpers shared by every layer (no rslab imports, so anything may import it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_atomically", "write_text_atomically"]


def write_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX: a reader, or a run restarted after ``kill -9``, sees the whole
    old file or the whole new one, never half of either. The temporary name carries the process id,
    so two processes saving the same file do not write into each other's temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # only left behind when write() or the rename failed
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """:func:`write_atomically` for a text file (JSON configs, results, logs)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text))
