"""Notebooks 04 and 05 on the full profile, on the CPU, reach their results.json.

The full profile's code path (weights by registry name, datasets through the catalog, the
resumable ablation, MaskCLIP* + DINOv2 branches, the tiled scene, the real benchmarks) runs with
random-weight files in the official layouts and tiny official-layout datasets, and tiny overrides
(a few steps, a few items, small inputs). Model sizes: SAM 2.1 Hiera-T (the smallest sibling of the
paper's Hiera-L) through the registry; OpenAI CLIP ViT-B/16 and DINOv2 ViT-B/14 at their real size.
Notebook 04 keeps the in-repo union encoder here: the smallest BEiT-3 release file (base) is
0.9 GB, too large for a CPU test; loading BEiT-3 through the registry is tested in tests/test_rs2sam2.py.
"""

from __future__ import annotations

import json

import pytest
from full_profile_fixtures import (  # noqa: F401 (fixture import)
    DATA_N,
    DATA_SIZE,
    full_inputs,
    missing_inputs_message,
    read_results,
    run_full,
)

pytest.importorskip("sam2")
pytest.importorskip("open_clip")

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

WEIGHTS_0405 = ("sam2.1-hiera-tiny", "clip-vit-b16-openai", "dinov2-vitb14")
DATASETS_0405 = ("rrsisd", "loveda", "potsdam", "vaihingen", "deepglobe")

TINY_0405: dict[str, dict[str, object]] = {
    "04_rs2sam2": {"model_size": "small", "image_size": 256, "sam2_checkpoint": "sam2.1-hiera-tiny",
                   "union_encoder": "vit", "steps": 1, "full_row_steps": 2, "batch_size": 2, "checkpoint_every": 1,
                   "estimate_warmup": 1, "num_threads": 1, "num_workers": 0},
    "05_coninfer_inference": {"size": 128, "n_test_scenes": 2, "n_val_scenes": 2, "pool_images": 2, "n_iter": 2,
                              "large_size": 256, "tile": 128, "consensus_temperatures": [5, 50], "use_real": False,
                              "clip_input_size": 224, "context_size": 224, "n_benchmark_images": 2,
                              "n_prior_scenes": 2, "n_context_scenes": 2},
}


@pytest.fixture(scope="session")
def inputs_0405(full_inputs):  # noqa: F811 (fixture)
    """The shared full-profile folders plus what notebooks 04 and 05 read."""
    from rslab import weights as W
    from rslab.data.catalog import DATASETS
    from rslab.data.catalog_testing import write_tiny_dataset
    from rslab.weights_testing import write_official_weights

    weights_dir, data_root = full_inputs["weights_dir"], full_inputs["data_root"]
    for name in WEIGHTS_0405:
        try:
            W.find(name, weights_dir)
        except FileNotFoundError:
            write_official_weights(name, weights_dir)
    for i, name in enumerate(DATASETS_0405):
        if not (data_root / DATASETS[name].folder).exists():
            write_tiny_dataset(name, data_root, seed=10 + i, n=DATA_N, size=DATA_SIZE)
    return full_inputs


def _run(stem, tmp_path, inputs, **extra):
    params = {f"{stem[:2]}.{k}": json.dumps(v) for k, v in {**TINY_0405[stem], **extra}.items()}
    proc, seconds = run_full([stem], tmp_path, inputs["weights_dir"], inputs["data_root"], extra=params, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return read_results(tmp_path, stem), seconds


def test_notebook_04_full_profile_reaches_results_and_resumes(inputs_0405, tmp_path):
    results, _ = _run("04_rs2sam2", tmp_path, inputs_0405)
    m = results["metrics"]
    assert results["profile"] == "full" and {"miou_baseline", "miou_full", "oiou_full", "pr50_full"} <= set(m)
    assert results["row_steps"] == {"baseline": 1, "tbl": 1, "tbl_mpg": 1, "tbl_bhfm": 1, "full": 2}
    assert results["sam2_checkpoint"].endswith("sam2.1_hiera_tiny.pt")
    assert m["n_eval_expressions"] == 2 * DATA_N  # the RRSIS-D test split the catalog found
    executed = (tmp_path / "build" / "notebooks" / "04_rs2sam2.ipynb").read_text()
    assert "rslab.train estimate" in executed  # steps, images per step and expected time before training
    ablation = tmp_path / "artifacts" / "04_rs2sam2" / "ablation"
    assert sorted(p.name for p in ablation.iterdir()) == ["baseline", "full", "tbl", "tbl_bhfm", "tbl_mpg"]
    # a re-run on the same artifacts skips every finished row and gives the same numbers
    again, _ = _run("04_rs2sam2", tmp_path, inputs_0405)
    assert {k: v for k, v in again["metrics"].items() if not k.endswith("_s") and k != "train_s_per_row"} == \
        {k: v for k, v in m.items() if not k.endswith("_s") and k != "train_s_per_row"}
    executed = (tmp_path / "build" / "notebooks" / "04_rs2sam2.ipynb").read_text()
    assert executed.count("finished earlier") == 5


def test_notebook_05_full_profile_reaches_results_with_benchmarks(inputs_0405, tmp_path):
    results, _ = _run("05_coninfer_inference", tmp_path, inputs_0405)
    m = results["metrics"]
    assert m["prior_source"] == "maskclip_star" and m["context_source"] == "dinov2-vitb14"
    assert {"miou_prior", "miou_context_only", "miou_decoupled", "miou_joint"} <= set(m)
    assert "miou_large_joint" in m  # the tiled large-scene section ran (no silent skip)
    for name in ("loveda", "potsdam", "vaihingen", "deepglobe"):
        assert 0.0 <= m[f"miou_{name}_prior"] <= 1.0 and 0.0 <= m[f"miou_{name}_joint"] <= 1.0


def test_notebooks_04_05_missing_inputs_stop_fast_with_one_message(tmp_path):
    """No weights, no datasets: each notebook stops within 30 s (kernel start included) with ONE
    error naming every missing weights entry (with where to get it) and every missing dataset."""
    from rslab.weights import get_entry

    empty_weights, empty_data = tmp_path / "no_weights", tmp_path / "no_data"
    empty_weights.mkdir()
    empty_data.mkdir()
    stems = ("04_rs2sam2", "05_coninfer_inference")
    proc, _ = run_full(stems, tmp_path, empty_weights, empty_data, timeout=300, keep_going=True)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    wanted = {"04_rs2sam2": (("sam2.1-hiera-large", "beit3-large"), ("rrsisd",)),
              "05_coninfer_inference": (("clip-vit-b16-openai", "dinov2-vitb14"),
                                        ("loveda", "potsdam", "vaihingen", "deepglobe"))}
    for stem, (weights, datasets) in wanted.items():
        message = missing_inputs_message(tmp_path, stem, weights, datasets)
        assert all(get_entry(name).name in message for name in weights), message
        assert message.count("to get them:") >= len(weights), message  # where to download each
