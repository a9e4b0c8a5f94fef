"""Per-step overhead of ``rslab.train.Trainer`` against a plain PyTorch loop.

Both loops train the same tiny MLP on the same in-memory data with AdamW and the same
warm-up + cosine LambdaLR; the plain loop is the textbook ``zero_grad / forward / backward /
step / scheduler.step``. The Trainer runs with logging every 10 steps (its progress bar off) and
checkpointing (a) off and (b) every 100 steps, written to a temporary directory. Timings
alternate between the loops; the median (wall and process-CPU time) and the best run of several
repeats are reported, since a shared machine is noisy. Target: Trainer within 10% of the plain loop (no checkpoints).

    python -m benchmarks.bench_train [--steps 300] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rslab.train import TrainConfig, Trainer, cosine_with_warmup

WIDTH, BATCH, SAMPLES = 256, 64, 4096


def _setup(device: str, seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(SAMPLES, 64)
    y = torch.randint(0, 10, (SAMPLES,))
    model = nn.Sequential(nn.Linear(64, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, 10))
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, drop_last=True)
    return model.to(device), loader


def _loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_loop(steps: int, device: str) -> tuple[float, float]:
    """(wall, CPU) seconds per step of a hand-written loop."""
    model, loader = _setup(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = cosine_with_warmup(opt, 10, steps)
    step, batches = 0, iter(loader)
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    while step < steps:
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = _loss(model, (x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 10 == 0:
            loss.item()  # the plain loop also logs, like the Trainer
    _sync(device)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def trainer_loop(steps: int, device: str, checkpoint_every: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds per step of ``Trainer.fit`` (setup excluded)."""
    model, loader = _setup(device)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(max_steps=steps, lr=1e-3, weight_decay=0.05, warmup_steps=10, log_every=10,
                             checkpoint_every=checkpoint_every, mixed_precision="no", progress=False,
                             cpu=device == "cpu", out_dir=tmp if checkpoint_every else None)
        trainer = Trainer(model, _loss, loader, config,
                          optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05))
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.fit(resume=False)
        _sync(device)
        return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def main(steps: int = 300, repeats: int = 5, device: str | None = None) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    plain_loop(20, device), trainer_loop(20, device)  # warm-up: imports, allocator, kernels
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "trainer": [], "trainer_ckpt100": []}
    for _ in range(repeats):
        runs["plain"].append(plain_loop(steps, device))
        runs["trainer"].append(trainer_loop(steps, device))
        runs["trainer_ckpt100"].append(trainer_loop(steps, device, checkpoint_every=100))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    best = {k: min(w for w, _ in v) for k, v in runs.items()}  # least disturbed run of each
    result = {"device": device, "steps": steps, "repeats": repeats, "batch": BATCH, "width": WIDTH,
              "target_ratio": 1.10}
    for k in runs:
        result[f"{k}_ms_per_step"] = round(1e3 * wall[k], 4)
        result[f"{k}_cpu_ms_per_step"] = round(1e3 * cpu[k], 4)
    for k in ("trainer", "trainer_ckpt100"):
        result[f"{k}_ratio"] = round(wall[k] / wall["plain"], 4)
        result[f"{k}_cpu_ratio"] = round(cpu[k] / cpu["plain"], 4)
        result[f"{k}_best_ratio"] = round(best[k] / best["plain"], 4)
    print(f"train engine overhead on {device} (tiny MLP {WIDTH} wide, batch {BATCH}, {steps} steps, "
          f"median of {repeats}; wall time, and process CPU time which is steadier on a shared machine):")
    for k, label in (("plain", "plain PyTorch loop     "), ("trainer", "Trainer, no checkpoints"),
                     ("trainer_ckpt100", "Trainer, ckpt every 100")):
        ratio = "" if k == "plain" else (f"  ratio wall {result[k + '_ratio']:.3f} / cpu {result[k + '_cpu_ratio']:.3f}"
                                         f" / best-of wall {result[k + '_best_ratio']:.3f}")
        print(f"  {label} {result[k + '_ms_per_step']:.3f} ms/step wall, "
              f"{result[k + '_cpu_ms_per_step']:.3f} ms/step cpu{ratio}")
    print("  target: Trainer without checkpoints within 10% of the plain loop (ratio <= 1.10)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = parser.parse_args()
    main(args.steps, args.repeats, args.device)
