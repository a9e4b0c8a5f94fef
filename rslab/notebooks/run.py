"""Inside a notebook: :func:`start_run` and the :class:`NotebookRun` that saves ``results.json``.

    from rslab.notebooks import start_run
    run = start_run("01_sar_alignment", profile=profile, seed=seed)
    ...                      # run.artifacts is artifacts/01_sar_alignment/
    run.save_results({"sar2opt_r1_after": 0.91})
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rslab.io import write_text_atomically


def artifacts_root() -> Path:
    """``$RSLAB_ARTIFACTS_DIR`` if set (the runner sets it), else ``./artifacts``."""
    return Path(os.environ.get("RSLAB_ARTIFACTS_DIR", "artifacts")).resolve()


def _device_name() -> str:
    import torch  # here, not at the top: `import rslab.notebooks` (the CLI) must not load torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d torch tensor
        return value.item()
    return value


@dataclass
class NotebookRun:
    name: str
    profile: str
    seed: int
    started: float = field(default_factory=time.perf_counter)

    @property
    def artifacts(self) -> Path:
        path = artifacts_root() / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_results(self, metrics: dict[str, Any], **extra: Any) -> Path:
        """Write ``artifacts/<name>/results.json`` atomically; returns its path."""
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")
        payload = {
            "notebook": self.name,
            "profile": self.profile,
            "metrics": _to_jsonable(metrics),
            "wall_s": round(time.perf_counter() - self.started, 2),
            "device": _device_name(),
            "seed": self.seed,
            **_to_jsonable(extra),
        }
        path = self.artifacts / "results.json"
        write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=False))
        return path


def start_run(name: str, profile: str = "smoke", seed: int = 0) -> NotebookRun:
    if not name or "/" in name:
        raise ValueError(f"name must be a notebook stem like '01_sar_alignment', got {name!r}")
    return NotebookRun(name=name, profile=profile, seed=int(seed))
