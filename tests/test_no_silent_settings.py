"""No silent settings: the runner refuses a profile or -p key a notebook does not declare, and the
full profile refuses to fall back to the CPU unless device=cpu is given explicitly."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
import yaml

from rslab import notebooks as nbs
from rslab.cli import _parse_override


def _notebook(path: Path, params: str) -> None:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}})
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("raise SystemExit('must not run')")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    _notebook(tmp_path / "notebooks" / "00_a.ipynb", "profile = 'smoke'\nsteps = 1\ndevice = 'cpu'\ndata_root = None")
    _notebook(tmp_path / "notebooks" / "01_b.ipynb", "profile = 'smoke'\nlit_steps = 1\ndevice = 'cpu'")
    profiles = tmp_path / "notebooks" / "profiles"
    profiles.mkdir()
    for name in nbs.PROFILES:
        (profiles / f"{name}.yaml").write_text(yaml.safe_dump(
            {"defaults": {"device": "auto", "data_root": None}, "00_a": {"steps": 2}, "01_b": {}}))
    return tmp_path


def run(repo: Path, profile: str = "ci", **overrides):
    return nbs.run_notebooks(profile, root=repo, overrides=overrides, log=lambda m: None)


def test_undeclared_profile_key_stops_before_any_kernel(repo: Path):
    path = repo / "notebooks" / "profiles" / "ci.yaml"
    data = yaml.safe_load(path.read_text())
    data["01_b"] = {"lit_stpes": 3}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError,
                       match=r"01_b: profile 'ci' section 01_b sets 'lit_stpes'.*declares: device, lit_steps"):
        run(repo)
    assert not (repo / "build" / "notebooks").exists()  # nothing was executed


def test_undeclared_override_named_with_each_notebook(repo: Path):
    with pytest.raises(ValueError) as err:
        run(repo, steps=3)  # 01_b has lit_steps, not steps
    assert "01_b: -p steps" in str(err.value) and "00_a" not in str(err.value)
    with pytest.raises(ValueError, match="no selected notebook .* declares"):
        run(repo, nothing=1)
    with pytest.raises(ValueError, match=r"-p 01_b.steps"):
        run(repo, **{"01.steps": 3})
    with pytest.raises(ValueError, match="must name exactly one selected notebook"):
        run(repo, **{"0.steps": 3})  # matches both


def test_scoped_and_shared_overrides_resolve(repo: Path):
    sections = nbs.load_profile(repo, "ci")
    nb0, nb1 = sorted((repo / "notebooks").glob("*.ipynb"))
    over = {"00.steps": 7, "data_root": "/data/rs", "device": "cpu"}
    assert nbs.resolve_parameters(nb0, "ci", sections, over) == {
        "device": "cpu", "data_root": "/data/rs", "steps": 7, "profile": "ci"}
    # data_root is shared: 01_b does not declare it and simply does not get it
    assert nbs.resolve_parameters(nb1, "ci", sections, over) == {"device": "cpu", "profile": "ci"}
    assert _parse_override("03.steps=4") == ("03.steps", 4)
    assert _parse_override("03_vita_sga.steps=4") == ("03_vita_sga.steps", 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_full_profile_refuses_cpu_fallback(repo: Path):
    with pytest.raises(ValueError, match="full profile needs a GPU.*-p device=cpu.*00_a, 01_b"):
        run(repo, "full")
    with pytest.raises(ValueError, match="fall back: 01_b"):
        run(repo, "full", **{"00.device": "cpu"})
    with pytest.raises(RuntimeError, match="set device='cpu' explicitly"):
        nbs.resolve_device("auto", "full")
    assert nbs.resolve_device("auto", "smoke").type == "cpu"
    assert nbs.resolve_device("cpu", "full").type == "cpu"
    with pytest.raises(RuntimeError, match="sees no GPU"):
        nbs.resolve_device("cuda", "smoke")
    with pytest.raises(ValueError, match="device must be"):
        nbs.resolve_device("tpu", "smoke")


def test_cuda_build_without_driver_is_named(monkeypatch, repo: Path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(ValueError, match="CUDA 12.4 build but sees no GPU"):
        nbs.check_device("full", {"00_a": {"device": "auto"}})
    nbs.check_device("full", {"00_a": {"device": "cpu"}})  # explicit: allowed
    nbs.check_device("smoke", {"00_a": {"device": "auto"}})  # only the full profile is guarded
