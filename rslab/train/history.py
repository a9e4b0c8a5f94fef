"""Training history: one JSON object per line (``history.jsonl``), and a plot of its curves.

A record is a flat dict with a ``step`` key, e.g. ``{"step": 50, "epoch": 1, "loss": 0.41,
"lr": 9.1e-4, "samples_per_s": 812.0}``; evaluation records carry ``eval_<metric>`` keys.
JSON lines survive a crash: every line written before it is complete (a torn last line is
skipped on reading).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rslab.io import write_text_atomically

__all__ = ["HistoryWriter", "load_history", "plot_history"]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable ("nan", "inf")
    return value


class HistoryWriter:
    """Appends records to ``path`` (when given) and keeps them in ``self.records``."""

    def __init__(self, path: str | Path | None = None, records: Iterable[dict] = ()):
        self.path = Path(path) if path is not None else None
        self.records: list[dict] = list(records)

    def append(self, record: dict[str, Any]) -> None:
        if "step" not in record:
            raise ValueError(f"a history record needs a 'step' key, got keys {sorted(record)}")
        record = {str(k): _jsonable(v) for k, v in record.items()}
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def rewrite(self, records: Iterable[dict]) -> None:
        """Replace the file's contents atomically (used on resume to drop records past the checkpoint)."""
        self.records = list(records)
        if self.path is None:
            return
        write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


def load_history(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``history.jsonl`` (or the ``out_dir`` holding one) into a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / "history.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training history at {path}: pass the Trainer's out_dir or its history.jsonl")
    records, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn final line of a killed run: everything before it is valid
                warnings.warn(f"{path}: skipping an incomplete last line (the run was interrupted)", stacklevel=2)
            else:
                raise ValueError(f"{path}:{i + 1} is not valid JSON: {line[:80]!r}") from None
    return records


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for record in history:
        if key in record:
            try:
                values.append(float(record[key]))
            except (TypeError, ValueError):
                continue
            steps.append(record["step"])
    return steps, values


def plot_history(history: Sequence[dict] | str | Path, keys: Sequence[str] | None = None,
                 smooth: float = 0.0, log_y: Sequence[str] = ("loss",)):
    """Plot curves of ``keys`` against the optimiser step, one panel per key.

    Args:
        history: records (``trainer.history``) or a path accepted by :func:`load_history`.
        keys: which values to plot; default: ``loss`` and every ``eval_*`` key present.
        smooth: exponential smoothing factor in [0, 1) drawn over the raw curve (0 = none).
        log_y: keys drawn on a log scale when all their values are positive.

    Returns the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if isinstance(history, (str, Path)):
        history = load_history(history)
    if not history:
        raise ValueError("history is empty: train first (trainer.fit()) or load a history.jsonl")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    present = {k for record in history for k in record}
    if keys is None:
        keys = [k for k in ("loss",) if k in present] + sorted(k for k in present if k.startswith("eval_"))
    missing = [k for k in keys if k not in present]
    if missing or not keys:
        raise ValueError(f"keys {missing or keys} not in the history; available: {sorted(present - {'step'})}")

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        steps, values = _series(history, key)
        ax.plot(steps, values, marker="o" if len(values) < 20 else None, lw=1,
                alpha=0.4 if smooth else 1.0, label="raw" if smooth else None)
        if smooth and values:
            smoothed, running = [], values[0]
            for v in values:
                running = smooth * running + (1 - smooth) * v
                smoothed.append(running)
            ax.plot(steps, smoothed, lw=2, label=f"EMA {smooth:g}")
            ax.legend()
        if key in log_y and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
