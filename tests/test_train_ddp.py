"""Two CPU processes (gloo) end with identical weights, equal to one process training on the same
global batch; launched by ``torchrun`` (scripts) and by ``accelerate.notebook_launcher`` (Jupyter).

Why allclose and not bitwise against the single process: each rank averages the loss over its
half batch and DDP then averages the two gradients, while one process averages over the whole
batch at once; the same sum in another order differs in the last float bits. The two ranks
themselves must agree exactly (they apply the same all-reduced gradient).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny_run import ENV, SCRIPT, run_in_process  # noqa: E402
from safetensors.torch import load_file

# 96 samples = 6 full global batches of 16: with an incomplete last batch, accelerate (even_batches)
# completes it with samples from the epoch's start on several processes, unlike one process.
ARGS = ["--samples", "96", "--steps", "12", "--dropout", "0", "--batch", "16", "--accum", "1",
        "--checkpoint-every", "0"]



def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict[str, torch.Tensor]:
    return run_in_process(tmp_path_factory.mktemp("single"), *ARGS)


def _check_two_ranks(out: Path, ref: dict[str, torch.Tensor]) -> None:
    rank0, rank1 = load_file(out / "final_rank0.safetensors"), load_file(out / "final_rank1.safetensors")
    assert rank0.keys() == rank1.keys() == ref.keys()
    worst = 0.0
    for name in ref:
        assert torch.equal(rank0[name], rank1[name]), f"ranks disagree on {name}"
        torch.testing.assert_close(rank0[name], ref[name], rtol=1e-5, atol=1e-6, msg=f"DDP != single process: {name}")
        worst = max(worst, (rank0[name] - ref[name]).abs().max().item())
    print(f"max |DDP - single process| = {worst:.2e}")
    # the comparison is between trained models, not two untouched initialisations
    torch.manual_seed(0)
    assert not torch.allclose(ref["model.0.weight"], torch.nn.Linear(6, 32).weight.detach(), atol=1e-3)
    # the main process alone wrote the history, once per step
    assert len((out / "history.jsonl").read_text().splitlines()) == 12


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(tmp_path, single_process):
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(SCRIPT), str(tmp_path), *ARGS])
    _check_two_ranks(tmp_path, single_process)


@pytest.mark.slow
def test_notebook_launcher_two_processes_match_single_process(tmp_path, single_process):
    _run([sys.executable, str(SCRIPT), str(tmp_path), *ARGS, "--notebook-launcher", "2"])
    _check_two_ranks(tmp_path, single_process)
