"""The `rslab` command line, run as users run it (the installed console script, in a subprocess)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rslab import notebooks as nbs
from rslab.cli import _parse_override, build_parser

ROOT = Path(__file__).resolve().parents[1]
RSLAB = Path(sys.executable).parent / "rslab"


def rslab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(RSLAB), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    proc = rslab("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("notebooks", "book", "readme-table", "weights"):
        assert command in proc.stdout
    run_help = rslab("notebooks", "run", "--help")
    assert run_help.returncode == 0
    for flag in ("--profile", "--only", "--keep-going", "--param"):
        assert flag in run_help.stdout


def test_notebooks_list_names_every_tutorial_notebook():
    proc = rslab("notebooks", "list", "--profile", "ci")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert listed == [nb.stem for nb in nbs.discover_notebooks(ROOT)] + [
        s for s in nbs.NOTEBOOK_STEMS if not (ROOT / "notebooks" / f"{s}.ipynb").exists()
    ]
    assert set(nbs.NOTEBOOK_STEMS) <= set(listed)


def test_outside_a_checkout_is_a_clear_error(tmp_path: Path):
    proc = rslab("notebooks", "list", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no rslab repository found" in proc.stderr and "pyproject.toml" in proc.stderr


def test_unknown_only_filter_fails_before_running(tmp_path: Path):
    proc = rslab("notebooks", "run", "--profile", "ci", "--only", "99")
    assert proc.returncode == 2 and "matches no notebook" in proc.stderr


def test_results_and_readme_table_from_artifacts(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    art = tmp_path / "artifacts" / "03_vita_sga"
    art.mkdir(parents=True)
    metrics = {"miou_visual": 0.61, "miou_text": 0.52, "miou_fused": 0.66,
               "miou_text_unseen_synonyms": 0.41, "miou_sar_fused": 0.48, "extra": 3}
    (art / "results.json").write_text(json.dumps(
        {"notebook": "03_vita_sga", "profile": "smoke", "metrics": metrics, "wall_s": 123.4, "device": "cpu"}))
    proc = rslab("notebooks", "results", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "03_vita_sga" in ln)
    assert "| ok " in row and "miou_fused=0.660" in row and "123.4" in row
    assert "extra" not in row  # only DESIGN.md's key metrics in the table

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{nbs.RESULTS_START}\nstale\n{nbs.RESULTS_END}\nend\n")
    proc = rslab("readme-table", "--write", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "stale" not in text and "miou_text_unseen_synonyms=0.410" in text
    assert text.startswith("intro\n") and text.endswith(f"{nbs.RESULTS_END}\nend\n")
    readme.write_text("no markers\n")
    proc = rslab("readme-table", "--write", cwd=tmp_path)
    assert proc.returncode == 2 and "results:start" in proc.stderr


def test_weights_find_reports_where_it_looked(tmp_path: Path):
    proc = subprocess.run(
        [str(RSLAB), "weights", "find", "nothing_here.pt"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RSLAB_WEIGHTS_DIR": str(tmp_path / "w")},
    )
    assert proc.returncode == 2
    assert "nothing_here.pt" in proc.stderr and str(tmp_path / "w" / "nothing_here.pt") in proc.stderr


def test_param_override_parsing():
    assert _parse_override("steps=20") == ("steps", 20)
    assert _parse_override("data_root=/data/rs") == ("data_root", "/data/rs")
    assert _parse_override("flags=[1, 2]") == ("flags", [1, 2])
    for bad in ("steps", "2x=1", "=3"):
        with pytest.raises(argparse.ArgumentTypeError):
            _parse_override(bad)
    args = build_parser().parse_args(["notebooks", "run", "-p", "steps=5", "--only", "01", "03"])
    assert args.param == [("steps", 5)] and args.only == ["01", "03"] and args.profile == "smoke"


def test_benchmarks_runner_lists_and_rejects_unknown_topics(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "no_such_topic", "--out", str(tmp_path / "b.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no benchmark named no_such_topic" in proc.stderr
    assert not (tmp_path / "b.json").exists()
