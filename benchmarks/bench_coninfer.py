"""ConInfer EM speed: matrix-product distances vs the public code's broadcasting form.

Case (issue 8): 39,200 patches x 1,024 dims (50 images of 28x28 DINO patches at 448 px),
K = 7, 10 iterations, CPU float32. Each implementation runs in its own subprocess so that
its peak memory can be read from the process's peak resident set size (tracemalloc cannot see
torch's allocator): on Linux the peak mark is reset just before the EM (``/proc/self/clear_refs``)
and ``VmHWM`` is read after it; elsewhere ``resource.getrusage(...).ru_maxrss``. The number
reported is the peak RSS during the EM minus the RSS just before it (inputs already loaded from
a file written by the parent), i.e. the EM's own working memory. Both runs use the same inputs (fixed seed) and the
same thread count; outputs are compared in the parent process.

Run: ``python -m benchmarks.bench_coninfer`` (or ``python -m benchmarks`` for all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

N_PATCHES, DIM, K, N_ITER = 39_200, 1_024, 7, 10


def make_inputs(n: int = N_PATCHES, d: int = DIM, k: int = K, seed: int = 0):
    """Clustered unit-norm features and a noisy prior (a stand-in for DINO tokens + CLIP)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    x = torch.nn.functional.normalize(centers[labels] + 3.0 * torch.randn(n, d, generator=g), dim=1)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), labels] += 1.0
    prior = torch.softmax(2.0 * logits, dim=1)
    return prior, x


def _status_kb(field: str) -> int | None:
    """A field of /proc/self/status in kB (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _worker(impl: str, in_path: str, out_path: str, threads: int) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from rslab.models.coninfer import ConInferConfig, coninfer, straightforward_reference

    prior, x = torch.load(in_path)
    reset = _reset_peak_rss()
    rss_before_kb = _status_kb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if impl == "fast":
        z = coninfer(prior, x, ConInferConfig(mode="reference", n_iter=N_ITER)).z
    else:
        z = straightforward_reference(prior, x, n_iter=N_ITER, chunk_size=2500)
    seconds = time.perf_counter() - t0
    rss_after_kb = (_status_kb("VmHWM") if reset
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    torch.save(z, out_path)
    print(json.dumps({"seconds": seconds,
                      "peak_mem_mb": (rss_after_kb - rss_before_kb) / 1024.0,
                      "peak_measure": "VmHWM after clear_refs" if reset else "ru_maxrss"}))


def _run(impl: str, in_path: str, out_path: str, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_coninfer", "--worker", impl, in_path, out_path,
           str(threads)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(threads: int = 1) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        in_path = os.path.join(tmp, "inputs.pt")
        torch.save(make_inputs(), in_path)
        fast = _run("fast", in_path, os.path.join(tmp, "fast.pt"), threads)
        slow = _run("straightforward", in_path, os.path.join(tmp, "slow.pt"), threads)
        z_fast = torch.load(os.path.join(tmp, "fast.pt"))
        z_slow = torch.load(os.path.join(tmp, "slow.pt"))
    max_abs_diff = float((z_fast - z_slow).abs().max())
    agree = float((z_fast.argmax(1) == z_slow.argmax(1)).float().mean())
    out = {
        "case": f"N={N_PATCHES} D={DIM} K={K} iters={N_ITER} cpu float32 threads={threads}",
        "fast_s": round(fast["seconds"], 3),
        "straightforward_s": round(slow["seconds"], 3),
        "speedup": round(slow["seconds"] / fast["seconds"], 2),
        "fast_peak_mem_mb": round(fast["peak_mem_mb"], 1),
        "straightforward_peak_mem_mb": round(slow["peak_mem_mb"], 1),
        "memory_measure": ("peak-RSS increase during the EM, per subprocess: "
                           f"{fast['peak_measure']} minus RSS at start (inputs loaded)"),
        "max_abs_diff": max_abs_diff,
        "argmax_agreement": agree,
        "target": "speedup >= 5 and max_abs_diff <= 1e-4",
    }
    out["meets_target"] = bool(out["speedup"] >= 5 and max_abs_diff <= 1e-4)
    for key, value in out.items():
        print(f"{key:>30}: {value}")
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
