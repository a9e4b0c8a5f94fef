"""Kill -9 a real training process at several points, resume it, and compare bit for bit.

The run (tests/train_scripts/tiny_run.py) has dropout, a shuffled DataLoader whose epochs end
in the middle of an accumulated step, gradient clipping, warm-up + cosine LR and an EMA teacher,
and checkpoints every step (so kills often land while a checkpoint is being written).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny_run import ENV, SCRIPT, run_in_process  # noqa: E402
from safetensors.torch import load_file

STEPS = 24



def _launch(out_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out_dir), "--steps", str(STEPS), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"training script failed:\n{out}\n{err}"


def _kill_after(proc: subprocess.Popen, step: int | None = None, delay_s: float | None = None) -> int:
    """SIGKILL ``proc`` once it printed ``step <step>`` (or ``delay_s`` after its first step)."""
    last = 0
    t0 = None
    for line in proc.stdout:
        if line.startswith("step "):
            last = int(line.split()[1])
            t0 = t0 or time.perf_counter()
        if (step is not None and last >= step) or (delay_s is not None and t0 and time.perf_counter() - t0 >= delay_s):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed (rc {proc.returncode})"
    return last


def _history(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict[str, torch.Tensor], list[dict]]:
    out = tmp_path_factory.mktemp("uninterrupted")
    return run_in_process(out, "--steps", str(STEPS)), _history(out)


@pytest.mark.slow
def test_kill9_twice_then_resume_is_bitwise_identical(tmp_path, reference):
    """Kill after step 3, resume and kill again at a random moment, then resume to the end."""
    ref_weights, ref_history = reference
    kills = []
    for kill in ({"step": 3}, {"delay_s": random.Random(os.getpid()).uniform(0.15, 0.6)}):
        kills.append(_kill_after(_launch(tmp_path, "--step-sleep", "0.04"), kill.get("step"), kill.get("delay_s")))
        steps_done = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "checkpoints").glob("step_*"))
        assert steps_done and steps_done[-1] < STEPS, f"kill after step {kills[-1]} left checkpoints {steps_done}"

    _finish(_launch(tmp_path))  # resume=True is the script's default
    weights = load_file(tmp_path / "final_rank0.safetensors")
    assert weights.keys() == ref_weights.keys()
    for name, ref in ref_weights.items():
        assert torch.equal(weights[name], ref), f"{name} differs after kills at steps {kills} and resume"
    # the history is whole: every step exactly once, with the uninterrupted run's losses
    history = _history(tmp_path)
    assert [r["step"] for r in history] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in history] == [r["loss"] for r in ref_history]
