"""Shared pieces of the full-profile end-to-end tests (tests/test_full_profile*.py).

The full profile needs official weights and real datasets; the tests write random-weight files in
the official layouts (:mod:`rslab.weights_testing`) and tiny datasets in the official folder layouts
(:mod:`rslab.data.catalog_testing`) into temporary folders, then run notebooks with
``--profile full -p device=cpu`` and :data:`TINY` overrides (a few steps, a few items, small images;
the registry's model sizes stay as the paper's where the notebook loads official weights).

Reuse from another test module::

    from full_profile_fixtures import TINY, full_inputs, run_full, write_inputs  # noqa: F401  (fixture import)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Weights and datasets each notebook's full profile reads (written by :func:`full_inputs`).
NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "00_data_tour": {"weights": (), "datasets": ()},
    "01_sar_alignment": {"weights": ("clip-vit-b16-openai",), "datasets": ("sen12ms", "sen1floods11")},
    "02_qsacl_pretraining": {"weights": (), "datasets": ("sen12ms", "sen1floods11")},
    "03_vita_sga": {"weights": ("clip-vit-b16-openai",), "datasets": ("loveda",)},
}

#: Per-notebook overrides that shrink the full profile to seconds on one CPU core.
TINY: dict[str, dict[str, object]] = {
    "00_data_tour": {"n_scenes": 2, "size": 128, "large_size": 256},
    "01_sar_alignment": {"image_size": 64, "crop": 48, "real_tile": 64, "n_align": 4, "n_eval_pairs": 3,
                         "align_steps": 2, "align_batch_size": 2, "warmup_steps": 1, "num_threads": 1,
                         "num_workers": 0},
    "02_qsacl_pretraining": {"backbone_preset": "tiny", "qsacl_preset": "tiny", "scene_size": 64, "n_pretrain": 6,
                             "n_probe_train": 2, "n_probe_test": 2, "steps": 2, "batch_size": 2, "num_queries": 2,
                             "global_size": 32, "local_size": 16, "num_local": 1, "probe_steps": 2,
                             "bench_repeats": 1, "threads": 1, "num_workers": 0},
    "03_vita_sga": {"size": 64, "n_train": 4, "n_eval": 2, "steps": 2, "batch_size": 2, "ablations": False,
                    "num_threads": 1},
}

#: Tiny datasets: items per split and their side in pixels.
DATA_N, DATA_SIZE = 4, 64


def write_inputs(base: Path, weights=(), datasets=(), n: int = DATA_N, size: int = DATA_SIZE) -> dict[str, Path]:
    """Random official-format files of the registry entries ``weights`` under ``base/weights`` and tiny
    official-layout ``datasets`` under ``base/data``; returns ``{"weights_dir", "data_root"}``."""
    from rslab.data.catalog_testing import write_tiny_dataset
    from rslab.weights_testing import write_official_weights

    weights_dir, data_root = Path(base) / "weights", Path(base) / "data"
    weights_dir.mkdir(parents=True, exist_ok=True)
    data_root.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(weights)):
        write_official_weights(name, weights_dir)
    for i, name in enumerate(sorted(set(datasets))):
        write_tiny_dataset(name, data_root, seed=i, n=n, size=size)
    return {"weights_dir": weights_dir, "data_root": data_root}


@pytest.fixture(scope="session")
def full_inputs(tmp_path_factory) -> dict[str, Path]:
    """:func:`write_inputs` for every weights entry and dataset in :data:`NEEDS` (once per session).
    Another module (e.g. notebooks 04/05) adds its notebooks to :data:`NEEDS` and :data:`TINY` at
    import time, or calls :func:`write_inputs` in its own fixture."""
    return write_inputs(tmp_path_factory.mktemp("full_profile"),
                        weights={w for need in NEEDS.values() for w in need["weights"]},
                        datasets={d for need in NEEDS.values() for d in need["datasets"]})


def overrides_args(stems, extra: dict[str, object] | None = None) -> list[str]:
    """``-p NN.key=value`` arguments of :data:`TINY` for ``stems`` (plus ``extra`` plain keys)."""
    args = []
    for stem in stems:
        for key, value in TINY.get(stem, {}).items():
            args += ["-p", f"{stem}.{key}={json.dumps(value)}"]
    for key, value in (extra or {}).items():
        args += ["-p", f"{key}={value}"]
    return args


def run_full(stems, tmp_path: Path, weights_dir: Path | None, data_root: Path | None,
             extra: dict[str, object] | None = None, timeout: float = 600,
             keep_going: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``rslab notebooks run --profile full --only <stems> -p device=cpu`` with :data:`TINY`
    overrides, ``data_root`` and ``$RSLAB_WEIGHTS_DIR=weights_dir`` (random weights: no sha256 check);
    artifacts and executed notebooks go under ``tmp_path`` (``build/results_summary.json`` holds each
    notebook's status and ``runner_wall_s``). Returns (process, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RSLAB_SKIP_SHA256": "1", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RSLAB_DATA_ROOT", None)
    if weights_dir is not None:
        env["RSLAB_WEIGHTS_DIR"] = str(weights_dir)
    else:
        env.pop("RSLAB_WEIGHTS_DIR", None)
    params = {"device": "cpu", **({"data_root": str(data_root)} if data_root is not None else {}), **(extra or {})}
    cmd = [sys.executable, "-m", "rslab.cli", "notebooks", "run", "--profile", "full", "--only", *stems,
           "--artifacts-dir", str(tmp_path / "artifacts"), "--build-dir", str(tmp_path / "build"),
           *(["--keep-going"] if keep_going else []), *overrides_args(stems, params)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def read_results(tmp_path: Path, stem: str) -> dict:
    return json.loads((tmp_path / "artifacts" / stem / "results.json").read_text())


def missing_inputs_message(tmp_path: Path, stem: str, weights=(), datasets=()) -> str:
    """After a ``run_full`` with empty weights and data folders: ``stem`` failed within 30 s
    (kernel start included) with ONE error that quotes every missing weights entry and every missing
    dataset with its address, and wrote no results. Returns that message for further checks."""
    import nbformat

    from rslab.data.catalog import DATASETS

    summary = {r["notebook"]: r for r in json.loads((tmp_path / "build" / "results_summary.json").read_text())}
    assert summary[stem]["status"] == "failed" and "FileNotFoundError" in summary[stem]["error"], summary[stem]
    assert summary[stem]["runner_wall_s"] < 30, f"{stem} took {summary[stem]['runner_wall_s']} s"
    executed = nbformat.read(str(tmp_path / "build" / "notebooks" / f"{stem}.ipynb"), as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == 1, stem
    message = errors[0]["evalue"]
    for name in weights:
        assert f"weights {name!r}" in message, (stem, name, message)
    for name in datasets:
        assert f"- {name}:" in message and DATASETS[name].url in message, (stem, name, message)
    assert not (tmp_path / "artifacts" / stem / "results.json").exists()
    return message
