"""Large-scene ConInfer: peak memory and time for 2,448 px and 12,000 px scenes read from disk.

The scene is generated on disk first (an uncompressed RGB uint8 GeoTIFF-style TIFF, written in
row bands so the parent never holds it whole): 5 land-cover classes on a blocky layout (96 px
cells), each a colour plus Gaussian noise. The pipeline under test is the real one --
:func:`rslab.data.readers.open_raster` (memory-mapped windows) ->
:func:`rslab.models.coninfer_large.refine_large_scene` (tiles of 512 px, patches of 16 px, one
mixture over all patches, band-wise stitching to uint8 labels) -- with cheap branches so the
numbers measure the pipeline, not a network: the prior is a softmax over distances from each
patch's mean colour to deliberately perturbed class colours, the context features are
:func:`rslab.models.coninfer.patch_statistics` (mean and std, 1 and 3 patch neighbourhoods).

Each size runs in its own subprocess. Memory is that process's peak resident set size (Linux
``VmHWM`` after resetting the mark) minus its RSS once the interpreter has imported torch and
rslab, so it counts everything the pipeline touches, memory-mapped file pages included.
Target: < 2 GB above the interpreter at 12,000 px, time linear in pixels. The pixel accuracies
of the prior and of the refined labels against the generated layout are a sanity check of the
output only (the cheap context features carry the same colour information as the prior, so
refinement is not expected to gain here).

Run: ``python -m benchmarks.bench_large_scene`` (or ``python -m benchmarks large_scene``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from benchmarks.bench_coninfer import _reset_peak_rss, _status_kb

SIZES = (2448, 12_000)
TILE, PATCH, CELL = 512, 16, 96
COLOURS = ((60, 120, 60), (200, 190, 150), (40, 60, 140), (150, 150, 150), (120, 90, 60))


def _truth_band(y0: int, y1: int, width: int, seed: int = 0):
    """Class ids of rows y0..y1 (a blocky layout, deterministic by seed)."""
    import numpy as np

    cells_x = (width + CELL - 1) // CELL
    rows = np.arange(y0, y1) // CELL
    out = np.empty((y1 - y0, width), dtype=np.uint8)
    for r in np.unique(rows):
        cell_classes = np.random.default_rng([seed, int(r)]).integers(0, len(COLOURS), cells_x).astype(np.uint8)
        out[rows == r] = np.repeat(cell_classes, CELL)[:width]
    return out


def write_scene(path: str, size: int, seed: int = 0) -> None:
    """An uncompressed (size, size, 3) uint8 TIFF, written 512 rows at a time."""
    import numpy as np
    import tifffile

    colours = np.asarray(COLOURS, dtype=np.float32)
    mm = tifffile.memmap(path, shape=(size, size, 3), dtype=np.uint8, photometric="rgb")
    rng = np.random.default_rng(seed)
    for y0 in range(0, size, 512):
        y1 = min(size, y0 + 512)
        band = colours[_truth_band(y0, y1, size, seed)] + rng.normal(0, 25, (y1 - y0, size, 3)).astype(np.float32)
        mm[y0:y1] = np.clip(band, 0, 255).astype(np.uint8)
    mm.flush()
    del mm


def _worker(path: str, size: int, threads: int) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    import rslab.models.coninfer as ci
    from rslab.data.readers import open_raster
    from rslab.models.coninfer_large import refine_large_scene

    reset = _reset_peak_rss()
    rss0 = _status_kb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(1)
    protos = torch.tensor(COLOURS, dtype=torch.float32) / 255.0 + 0.2 * torch.randn(len(COLOURS), 3, generator=g)

    def prior_fn(tiles):
        mean = torch.nn.functional.avg_pool2d(tiles, PATCH)                        # (B, 3, h, w)
        d2 = ((mean[:, None] - protos[None, :, :, None, None]) ** 2).sum(2)       # (B, K, h, w)
        return torch.softmax(-d2 / 0.01, dim=1)

    def feature_fn(tiles):
        return torch.stack([ci.patch_statistics(t, PATCH, scales=(1, 3)) for t in tiles])

    raster = open_raster(path)
    res = refine_large_scene(prior_fn, feature_fn, raster, tile=TILE, config=ci.ConInferConfig(n_iter=5),
                             batch_tiles=8)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    correct_prior = correct_joint = 0
    for y0 in range(0, size, 1024):
        truth = _truth_band(y0, min(size, y0 + 1024), size)
        correct_prior += int((res.prior_labels[y0:y0 + 1024] == truth).sum())
        correct_joint += int((res.labels[y0:y0 + 1024] == truth).sum())
    print(json.dumps({
        "seconds": seconds, "peak_mb": (peak - rss0) / 1024.0, "backend": raster.backend,
        "tiles": len(res.positions), "patches": int(res.results[0].z.shape[0]),
        "labels_dtype": str(res.labels.dtype),
        "acc_prior": correct_prior / size**2, "acc_joint": correct_joint / size**2,
        "measure": "VmHWM after clear_refs minus VmRSS after imports" if reset else "ru_maxrss",
    }))


def main(threads: int = 1) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: dict = {"case": f"RGB uint8 TIFF on disk, tile {TILE}, patch {PATCH}, one pool, 5 EM iterations, "
                         f"cpu threads={threads}"}
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            path = os.path.join(tmp, f"scene_{size}.tif")
            write_scene(path, size)
            cmd = [sys.executable, "-m", "benchmarks.bench_large_scene", "--worker", path, str(size), str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{size} px worker failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            os.remove(path)
            out[f"{size}px"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
            out[f"{size}px"]["us_per_px"] = round(1e6 * r["seconds"] / size**2, 4)
    small, large = out[f"{SIZES[0]}px"], out[f"{SIZES[-1]}px"]
    out["time_ratio_per_px"] = round(large["us_per_px"] / small["us_per_px"], 2)
    out["target"] = "peak < 2048 MB above the interpreter at 12,000 px; time per pixel within 1.5x across sizes"
    out["meets_target"] = bool(large["peak_mb"] < 2048 and out["time_ratio_per_px"] < 1.5)
    for key, value in out.items():
        print(f"{key:>20}: {value}")
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
