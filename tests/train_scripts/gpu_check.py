"""Manual GPU check of rslab.train (not collected by pytest; CI has no GPU).

    PYTHONPATH=. python tests/train_scripts/gpu_check.py OUT_DIR

Checks on CUDA: "auto" precision picks bf16 autocast with fp32 weights; checkpoint + resume
reproduces an uninterrupted run; fp16 with grad scaling trains and resumes (scaler state saved);
a real CUDA out-of-memory error is turned into the batch-size / grad-accumulation advice.
Status: written for a GPU session and not yet run (the machine it was written on has no GPU).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rslab.train import TrainConfig, Trainer  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)


def data(n=4096, batch=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 128, generator=g)
    y = (x[:, :4].sum(1) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Dropout(0.1), nn.Linear(512, 512), nn.GELU(),
                         nn.Linear(512, 2))


def run(out, steps, precision, seen=None, **kw):
    def loss_fn(m, b):
        if seen is not None:
            seen["autocast"] = torch.is_autocast_enabled("cuda")
            seen["dtype"] = str(torch.get_autocast_dtype("cuda"))
        return F.cross_entropy(m(b[0]), b[1])

    cfg = TrainConfig(max_steps=steps, lr=2e-3, warmup_steps=10, log_every=25, mixed_precision=precision,
                      out_dir=out, progress=False, **kw)
    t = Trainer(model(), loss_fn, data(), cfg)
    t.fit()
    return t


def main(out_dir: str) -> None:
    out = Path(out_dir)
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    seen: dict = {}
    full = run(out / "bf16_full", 200, "auto", seen, checkpoint_every=100)
    report["auto_precision"] = full.mixed_precision
    report["autocast_in_loss_fn"] = seen
    report["weights_dtype"] = str(full.model[0].weight.dtype)
    report["bf16_loss_first_last"] = [full.history[0]["loss"], full.history[-1]["loss"]]
    # resume: fresh trainer from the step-100 checkpoint of a copy of the run
    import shutil
    part = out / "bf16_part"
    shutil.copytree(out / "bf16_full", part)
    shutil.rmtree(part / "checkpoints" / "step_000200")
    resumed = run(part, 200, "auto", checkpoint_every=100)
    diffs = [(a - b).abs().max().item() for a, b in zip(full.model.state_dict().values(),
                                                         resumed.model.state_dict().values())]
    report["bf16_resume_max_abs_diff"] = max(diffs)
    report["bf16_resume_bitwise"] = max(diffs) == 0.0

    fp16 = run(out / "fp16", 120, "fp16", checkpoint_every=60)
    state = torch.load(out / "fp16" / "checkpoints" / "step_000120" / "state.pt", weights_only=True)
    report["fp16_loss_first_last"] = [fp16.history[0]["loss"], fp16.history[-1]["loss"]]
    report["fp16_scaler_state_saved"] = state["scaler"] is not None and "scale" in state["scaler"]

    def oom_loss(m, b):
        torch.empty(int(400e9) // 4, device="cuda")  # 400 GB: a genuine allocator failure
        return F.cross_entropy(m(b[0]), b[1])

    try:
        Trainer(model(), oom_loss, data(), TrainConfig(max_steps=2, progress=False, grad_accum_steps=2)).fit()
        report["oom_message"] = None
    except torch.OutOfMemoryError as err:
        report["oom_message"] = str(err)
    report["memory_after_oom_mib"] = torch.cuda.memory_allocated() / 2**20
    print(json.dumps(report, indent=1))
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
