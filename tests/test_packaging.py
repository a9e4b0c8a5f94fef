"""pyproject.toml and environment.yml agree; the `rslab` command is declared; importing rslab
stays light (no sam2 / leafmap / transformers / open_clip at import time)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sam2", "leafmap", "transformers", "open_clip")


def normalise(requirement: str) -> str:
    """'open_clip_torch>=2.24' -> 'open-clip-torch' (PEP 503 style; conda specs too)."""
    name = re.split(r"[<>=!~;\[\s]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_normalise_handles_pip_and_conda_specs():
    assert normalise("open_clip_torch>=2.24") == "open-clip-torch"
    assert normalise("Jupyter.Book >=1.0,<2") == "jupyter-book"
    assert normalise("sam2==1.1.0") == "sam2"
    assert normalise("python=3.11") == "python"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment() -> tuple[dict, list[str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for item in env["dependencies"]:
        if isinstance(item, dict):
            assert set(item) == {"pip"}, f"unexpected mapping in dependencies: {item}"
            pip += [p for p in item["pip"] if not p.startswith("-")]  # '-e .' installs rslab itself
        else:
            conda.append(item)
    return env, conda, pip


def test_environment_yml_matches_pyproject_dependencies():
    project = _pyproject()["project"]
    expected = {normalise(d) for d in project["dependencies"]}
    expected |= {normalise(d) for d in project.get("optional-dependencies", {}).get("dev", [])}
    env, conda, pip = _environment()
    conda_names = {normalise(c) for c in conda} - {"python", "pip"}
    pip_names = {normalise(p) for p in pip}
    assert not conda_names & pip_names, f"listed twice (conda and pip): {sorted(conda_names & pip_names)}"
    got = conda_names | pip_names
    assert got == expected, (
        f"only in pyproject: {sorted(expected - got)}; only in environment.yml: {sorted(got - expected)}"
    )


def test_environment_yml_shape():
    env, conda, pip = _environment()
    assert env["name"] == "rslab"
    assert env["channels"] == ["conda-forge"]
    assert "python=3.11" in conda and "pip" in conda
    # torch wheels come from PyPI: conda-forge's pytorch next to a pip torch would be two copies.
    assert {"torch", "torchvision"} <= {normalise(p) for p in pip}
    assert "pytorch" not in {normalise(c) for c in conda}
    raw = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+- -e \.\s*$", raw, re.M), "the pip section should install rslab itself (-e .)"


def test_console_script_declared_and_installed():
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["rslab"] == "rslab.cli:main"
    from rslab.cli import main

    assert callable(main)
    exe = Path(sys.executable).parent / "rslab"
    assert exe.is_file(), f"{exe} missing: reinstall with `pip install -e .`"


def _modules_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_rslab_and_cli_is_light():
    loaded = _modules_after("import rslab, rslab.cli, rslab.notebooks, rslab.weights")
    heavy = sorted({m.split(".")[0] for m in loaded} & {*HEAVY, "papermill", "jupyter_book", "torch"})
    assert heavy == [], f"importing rslab's CLI pulled in {heavy}; import them inside functions"


def test_no_rslab_module_imports_heavy_optional_packages():
    code = (
        "import importlib, pkgutil, rslab\n"
        "for m in pkgutil.walk_packages(rslab.__path__, 'rslab.'):\n"
        "    importlib.import_module(m.name)"
    )
    loaded = {m.split(".")[0] for m in _modules_after(code)}
    assert not loaded & set(HEAVY), f"an rslab module imports {sorted(loaded & set(HEAVY))} at import time"
