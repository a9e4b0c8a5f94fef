"""benchmarks.gpu_check runs end to end on the CPU with tiny models and writes its JSON report."""

import json

import pytest


@pytest.mark.slow
def test_gpu_check_cpu_tiny_writes_a_report(tmp_path):
    pytest.importorskip("sam2")
    from benchmarks.gpu_check import NOTEBOOKS, main

    out = tmp_path / "gpu_check.json"
    report = main(["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "0", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report)) and saved["tiny"] and saved["ok"]
    assert [r["notebook"] for r in saved["notebooks"]] == list(NOTEBOOKS)
    for row in saved["notebooks"]:
        assert row["step_s"] > 0 and row["images_per_s"] > 0 and row["params_m"] > 0
        assert row["agreement"]["max_rel_diff"] == 0.0  # the same device twice: bit-identical
        assert row.get("loss_finite", True)
    assert [r["kind"] for r in saved["notebooks"]][-1] == "inference batch"


def test_gpu_check_refuses_a_missing_gpu_and_bad_arguments(tmp_path):
    import torch

    from benchmarks.gpu_check import main

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--device", "cuda", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--tiny", "--steps", "0", "--out", str(tmp_path / "x.json")])
