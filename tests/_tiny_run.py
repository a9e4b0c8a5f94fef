"""Shared by the subprocess training tests: the tiny training script and how to run it here."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "train_scripts" / "tiny_run.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run_in_process(out_dir: Path, *args: str) -> dict[str, torch.Tensor]:
    """The same script in this process (saves a Python start-up); returns the final weights."""
    spec = importlib.util.spec_from_file_location("tiny_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.train(module.parse_args([str(out_dir), *args]))
    return load_file(out_dir / "final_rank0.safetensors")
