"""The full profile end to end on the CPU: notebooks 00-03 with random official-format weights and tiny
official-layout datasets reach their results.json; missing inputs stop a run within seconds with one
message listing all of them. (Notebooks 04/05 reuse the fixtures in tests/full_profile_fixtures.py.)"""

from __future__ import annotations

import pytest
from full_profile_fixtures import NEEDS, full_inputs, missing_inputs_message, read_results, run_full  # noqa: F401 (fixture)

from rslab.data.catalog import DATASETS
from rslab.notebooks import METRIC_KEYS
from rslab.weights import get_entry

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

STEMS = ("00_data_tour", "01_sar_alignment", "02_qsacl_pretraining", "03_vita_sga")


def test_full_profile_reaches_results_for_00_to_03(full_inputs, tmp_path):  # noqa: F811 (fixture)
    proc, seconds = run_full(STEMS, tmp_path, full_inputs["weights_dir"], full_inputs["data_root"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for stem in STEMS:
        result = read_results(tmp_path, stem)
        assert result["profile"] == "full"
        assert set(METRIC_KEYS[stem]) <= set(result["metrics"]), (stem, sorted(result["metrics"]))
    # the paper setups ran on the catalog's data and the registry's weights, not the synthetic world
    r01 = read_results(tmp_path, "01_sar_alignment")
    assert r01["teacher"] == "clip-vit-b16-openai" and r01["pair_dataset"] == "sen12ms"
    assert r01["n_eval_pairs"] == 3 and r01["n_eval_chips"] >= 1 and r01["budget"]["steps"] == 2
    assert 0.0 <= r01["metrics"]["sar2opt_r1_after"] <= 1.0
    r03 = read_results(tmp_path, "03_vita_sga")
    assert r03["metrics"]["miou_sar_fused"] is None  # LoveDA has no SAR: not measured, not made up
    assert all(0.0 <= r03["metrics"][k] <= 1.0 for k in ("miou_visual", "miou_text", "miou_fused"))
    executed = (tmp_path / "build" / "notebooks" / "00_data_tour.ipynb").read_text()
    for name in ("loveda", "sen12ms", "sen1floods11"):
        assert f"{name}: {4 if name != 'sen12ms' else 6} items in {DATASETS[name].folder}/" in executed
    for stem in ("01_sar_alignment", "02_qsacl_pretraining", "03_vita_sga"):
        text = (tmp_path / "build" / "notebooks" / f"{stem}.ipynb").read_text()
        assert "steps x" in text and "images per step on cpu" in text, stem  # the plan printed before training
    print(f"notebooks 00-03, full profile, tiny inputs: {seconds:.0f} s")


def test_missing_inputs_stop_within_seconds_listing_all(tmp_path):
    empty_weights, empty_data = tmp_path / "no_weights", tmp_path / "no_data"
    empty_weights.mkdir()
    empty_data.mkdir()
    stems = ("01_sar_alignment", "02_qsacl_pretraining", "03_vita_sga")
    proc, _ = run_full(stems, tmp_path, empty_weights, empty_data, timeout=300, keep_going=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    for stem in stems:
        # within seconds (kernel start included), one message naming every missing entry and dataset
        message = missing_inputs_message(tmp_path, stem, NEEDS[stem]["weights"], NEEDS[stem]["datasets"])
        for name in NEEDS[stem]["weights"]:  # with where to get it
            assert get_entry(name).url in message, (stem, name, message)


def test_full_profile_refuses_the_cpu_unless_asked(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the behaviour without a GPU")
    proc, seconds = run_full(["02_qsacl_pretraining"], tmp_path, None, None, extra={"device": "auto"}, timeout=120)
    assert proc.returncode == 2 and "full profile needs a GPU" in proc.stderr and seconds < 30, proc.stderr[-2000:]
