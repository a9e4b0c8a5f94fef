"""The notebooks and their runner.

* every ``notebooks/NN_*.ipynb``: one ``parameters`` cell (the first code cell), committed without
  outputs, profile sections that name only declared parameters; and (``-m notebook``) a real run
  on the ``ci`` profile whose results.json carries DESIGN.md's metric keys;
* the runner itself on tiny temporary notebooks: parameter injection, failure reporting (notebook
  + cell), "ran but wrote no results.json", stop vs ``--keep-going``;
* the book staging step and (one) real offline Jupyter Book build.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from rslab import notebooks as nbs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = nbs.discover_notebooks(ROOT)
IDS = [nb.stem for nb in NOTEBOOKS]


# --- the real notebooks ------------------------------------------------------------------------

@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=IDS)
def test_notebook_is_stripped_with_one_parameters_cell(notebook: Path):
    nb = nbformat.read(str(notebook), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name}: {len(tagged)} cells tagged 'parameters', need exactly one"
    assert code and code[0] is tagged[0], f"{notebook.name}: the parameters cell must be the first code cell"
    assert "profile" in nbs.declared_parameters(notebook), f"{notebook.name}: parameters cell must set `profile`"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs; run `.venv/bin/nbstripout {notebook}`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter(notebook: Path):
    """papermill skips (with only a log warning) assignments it cannot parse, e.g. a comment
    holding '=': such a parameter silently ignores its profile value. Every one must parse."""
    import ast

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    missing = assigned - nbs.declared_parameters(notebook)
    assert not missing, (f"{notebook.name}: papermill cannot parse the assignment of {sorted(missing)}; "
                         "simplify its comment")


@pytest.mark.parametrize("profile", nbs.PROFILES)
def test_profiles_have_a_section_per_notebook_naming_declared_parameters(profile: str):
    sections = nbs.load_profile(ROOT, profile)
    for nb in NOTEBOOKS:
        assert nb.stem in sections, f"notebooks/profiles/{profile}.yaml has no section {nb.stem!r}"
        unknown = set(sections[nb.stem]) - nbs.declared_parameters(nb)
        assert not unknown, f"{profile}.yaml sets {sorted(unknown)} for {nb.stem}, not in its parameters cell"


def check_metrics(name: str, results: dict) -> None:
    """DESIGN.md's keys are present; every numeric metric is finite; in [0, 1] unless `_s`."""
    metrics = results["metrics"]
    missing = [k for k in nbs.METRIC_KEYS.get(name, ()) if k not in metrics]
    assert not missing, f"{name}: results.json lacks {missing}"
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        assert math.isfinite(value), f"{name}: {key}={value} is not finite"
        if key in nbs.METRIC_KEYS.get(name, ()):
            if key.endswith("_s"):
                assert value > 0, f"{name}: {key}={value} should be positive"
            else:
                assert 0.0 <= value <= 1.0, f"{name}: {key}={value} outside [0, 1]"
    assert isinstance(results["wall_s"], (int, float)) and results["wall_s"] >= 0


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=IDS)
def test_notebook_runs_on_ci_profile(notebook: Path, tmp_path: Path):
    params = nbs.resolve_parameters(notebook, "ci", nbs.load_profile(ROOT, "ci"))
    result = nbs.execute_notebook(
        notebook, "ci", root=ROOT, build_dir=tmp_path / "build",
        artifacts_dir=tmp_path / "artifacts", parameters=params,
    )
    assert result.ok, f"{notebook.stem}: {result.status}: {result.error}"
    results = json.loads((tmp_path / "artifacts" / notebook.stem / "results.json").read_text())
    assert results["notebook"] == notebook.stem and results["profile"] == "ci"
    check_metrics(notebook.stem, results)
    # cells tagged 'figure' drew an image, cells tagged 'report' wrote Markdown (tests/test_book.py)
    assert not (problems := nbs.tagged_cells_without_output(result.executed)), f"{notebook.stem}: {problems}"


#: The ci profile loads the shipped stand-in foundations, as the smoke profile does; these runs take
#: the other branch, a small foundation trained inside the notebook, so that code path cannot rot.
FOUNDATION_TRAINED_HERE = {"01_sar_alignment": {"optical_tower": None},
                           "04_rs2sam2": {"sam2_checkpoint": None, "standin_steps": 2}}


@pytest.mark.notebook
@pytest.mark.parametrize("stem", sorted(FOUNDATION_TRAINED_HERE))
def test_notebook_trains_its_own_small_foundation_when_asked(stem: str, tmp_path: Path):
    notebook = next(nb for nb in NOTEBOOKS if nb.stem == stem)
    params = nbs.resolve_parameters(notebook, "ci", nbs.load_profile(ROOT, "ci"), FOUNDATION_TRAINED_HERE[stem])
    result = nbs.execute_notebook(notebook, "ci", root=ROOT, build_dir=tmp_path / "build",
                                  artifacts_dir=tmp_path / "artifacts", parameters=params)
    assert result.ok, f"{stem}: {result.status}: {result.error}"
    cells = nbformat.read(str(result.executed), as_version=4).cells
    text = "\n".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert ("locked-text tuning: final loss" in text) if stem == "01_sar_alignment" else ("made " in text)


def test_check_metrics_rejects_out_of_range_and_missing():
    good = {"metrics": {"scenes_per_s": 40.0}, "wall_s": 1.0}
    check_metrics("00_data_tour", good)
    with pytest.raises(AssertionError, match="lacks"):
        check_metrics("00_data_tour", {"metrics": {}, "wall_s": 1.0})
    with pytest.raises(AssertionError, match="outside"):
        check_metrics("04_rs2sam2", {"metrics": {k: 0.5 for k in nbs.METRIC_KEYS["04_rs2sam2"]} | {"miou_full": 1.5},
                                     "wall_s": 1.0})
    with pytest.raises(AssertionError, match="not finite"):
        check_metrics("00_data_tour", {"metrics": {"scenes_per_s": float("nan")}, "wall_s": 1.0})


# --- the runner on tiny temporary notebooks ----------------------------------------------------

def make_notebook(path: Path, cells: list[tuple[str, list[str] | None]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {path.stem}"))
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


PASS_SOURCE = (
    "from rslab.notebooks import start_run\n"
    "from rslab.viz.widgets import widgets_enabled\n"
    "run = start_run('00_pass', profile, seed)\n"
    "run.save_results({'steps_seen': steps, 'lr_seen': lr, 'tag_seen': tag, "
    "'widgets_seen': widgets_enabled(), 'acc': 0.75})"
)


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    """A repository root with three notebooks: one passes, one fails in cell[2], one writes
    no results.json."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    nbdir = tmp_path / "notebooks"
    make_notebook(nbdir / "00_pass.ipynb", [
        ("profile = 'smoke'\nseed = 0\nsteps = 300\nlr = 0.1\ntag = 'x'", ["parameters"]),
        (PASS_SOURCE, None),
    ])
    make_notebook(nbdir / "01_fail.ipynb", [
        ("profile = 'smoke'", ["parameters"]),
        ("x = 1", None),
        ("\n# divide by zero on purpose\nz = x + 1\ny = x / 0\n", None),
        ("print('never here')", None),
    ])
    make_notebook(nbdir / "02_nores.ipynb", [("profile = 'smoke'", ["parameters"]), ("x = 1", None)])
    profiles = nbdir / "profiles"
    profiles.mkdir()
    for name in nbs.PROFILES:
        (profiles / f"{name}.yaml").write_text(yaml.safe_dump({
            "defaults": {"lr": 0.01, "not_declared_anywhere": 1},
            "00_pass": {"steps": 3},
            "01_fail": {},
        }))
    return tmp_path


def test_resolve_parameters_order_and_refusals(fake_repo: Path):
    nb = fake_repo / "notebooks" / "00_pass.ipynb"
    sections = nbs.load_profile(fake_repo, "ci")
    params = nbs.resolve_parameters(nb, "ci", sections, overrides={"tag": "cli", "data_root": "/d"})
    # defaults only where declared, own section over defaults, overrides last, profile always;
    # a shared key (data_root) the notebook does not declare is skipped
    assert params == {"lr": 0.01, "steps": 3, "tag": "cli", "profile": "ci"}
    sections["00_pass"]["stpes"] = 5  # a typo: refused, naming the notebook and the key
    with pytest.raises(ValueError, match=r"00_pass: profile 'ci' section 00_pass sets 'stpes'"):
        nbs.resolve_parameters(nb, "ci", sections)


def test_runner_reports_failing_cell_and_missing_results(fake_repo: Path):
    stale = fake_repo / "artifacts" / "02_nores" / "results.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"profile": "ci", "metrics": {}, "wall_s": 1}))  # from an older run
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "rslab.cli", "notebooks", "run", "--profile", "ci", "--keep-going"],
        cwd=fake_repo, capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "FAILED 01_fail: cell[3]" in err, err  # markdown title is cell[0], parameters cell[1]
    # the cell's first line of code, then the line that raised (from the traceback), then the error
    assert "`z = x + 1`, line" in err and "`y = x / 0`: ZeroDivisionError: division by zero" in err
    assert "FAILED 02_nores" in err and "wrote no" in err and "results.json" in err
    assert "00_pass" not in err
    summary = json.loads((fake_repo / "build" / "results_summary.json").read_text())
    assert [(r["notebook"], r["status"]) for r in summary] == [
        ("00_pass", "ok"), ("01_fail", "failed"), ("02_nores", "no results")]
    # the ci profile's values reached the kernel: section over defaults, undeclared default not injected
    metrics = summary[0]["metrics"]
    # and the kernel knew it was headless, so no notebook builds widgets there (rslab.viz.widgets)
    assert metrics == {"steps_seen": 3, "lr_seen": 0.01, "tag_seen": "x", "widgets_seen": False, "acc": 0.75}
    executed = nbformat.read(str(fake_repo / "build" / "notebooks" / "00_pass.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "not_declared_anywhere" not in injected[0].source
    # one table on stdout, naming every notebook with its status
    table = proc.stdout[proc.stdout.index("| notebook"):]
    for name, status in [("00_pass", "ok"), ("01_fail", "failed"), ("02_nores", "no results")]:
        assert any(name in ln and f" {status} " in ln for ln in table.splitlines()), table
    assert (fake_repo / "build" / "results_summary.md").read_text().startswith("| notebook")


def test_runner_stops_at_first_failure_without_keep_going(fake_repo: Path):
    results = nbs.run_notebooks("ci", only=["01", "02_nores"], root=fake_repo, log=lambda m: None)
    assert [(r.name, r.status) for r in results] == [("01_fail", "failed"), ("02_nores", "not run")]
    assert not (fake_repo / "build" / "notebooks" / "02_nores.ipynb").exists()


def test_runner_times_out_a_hung_cell_and_retries_once(fake_repo: Path):
    # hangs on its first run only (a marker file remembers it), like the rare idle-kernel hang
    marker = fake_repo / "hung_once"
    make_notebook(fake_repo / "notebooks" / "05_hang_once.ipynb", [
        ("profile = 'smoke'\nseed = 0", ["parameters"]),
        (f"import pathlib, time\nm = pathlib.Path({str(marker)!r})\n"
         "if not m.exists():\n    m.touch()\n    time.sleep(60)\n", None),
        ("from rslab.notebooks import start_run\n"
         "start_run('05_hang_once', profile, seed).save_results({'acc': 1.0})", None),
    ])
    make_notebook(fake_repo / "notebooks" / "06_hang_always.ipynb", [
        ("profile = 'smoke'", ["parameters"]), ("import time\ntime.sleep(60)", None),
    ])
    logs: list[str] = []
    results = nbs.run_notebooks("ci", only=["05", "06"], root=fake_repo, keep_going=True, cell_timeout=8,
                                log=logs.append)
    assert [(r.name, r.status) for r in results] == [("05_hang_once", "ok"), ("06_hang_always", "failed")]
    assert results[0].metrics == {"acc": 1.0} and not results[0].timed_out
    assert results[1].timed_out and "8 s cell timeout" in results[1].error
    assert sum("running 05_hang_once again" in m for m in logs) == 1
    assert sum("running 06_hang_always again" in m for m in logs) == 1  # one retry, then reported
    with pytest.raises(ValueError, match="cell_timeout"):
        nbs.run_notebooks("ci", only=["05"], root=fake_repo, cell_timeout=-1, log=lambda m: None)


def test_widgets_enabled_only_at_a_live_kernel(monkeypatch):
    from rslab.viz.widgets import HEADLESS_ENV, widgets_enabled

    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    assert widgets_enabled()  # ipywidgets is a dependency, and nothing says headless
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(HEADLESS_ENV, value)
        assert not widgets_enabled(), value
    for value in ("", "0", "false"):
        monkeypatch.setenv(HEADLESS_ENV, value)
        assert widgets_enabled(), value


def test_runner_rejects_notebook_without_parameters_cell(fake_repo: Path):
    nb = make_notebook(fake_repo / "notebooks" / "03_noparams.ipynb", [("profile = 'smoke'", None)])
    result = nbs.execute_notebook(nb, "ci", root=fake_repo, parameters={})
    assert result.status == "failed" and "0 cells tagged 'parameters'" in result.error


def test_only_filter_and_root_discovery(fake_repo: Path):
    assert [p.stem for p in nbs.discover_notebooks(fake_repo, ["02", "00_pass"])] == ["00_pass", "02_nores"]
    with pytest.raises(ValueError, match="matches no notebook"):
        nbs.discover_notebooks(fake_repo, ["9"])
    (fake_repo / "deep" / "er").mkdir(parents=True)
    assert nbs.find_root(fake_repo / "deep" / "er") == fake_repo.resolve()
    with pytest.raises(FileNotFoundError, match="pyproject.toml"):
        nbs.find_root(fake_repo.parent)
    with pytest.raises(ValueError, match="unknown profile"):
        nbs.load_profile(fake_repo, "huge")


def test_read_results_flags_wrong_profile_and_missing_keys(tmp_path: Path):
    run_dir = tmp_path / "04_rs2sam2"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"profile": "smoke", "metrics": {"miou_full": 0.5}, "wall_s": 2}))
    assert nbs.read_results(tmp_path, "04_rs2sam2", "ci").error.endswith("not 'ci'")
    missing = nbs.read_results(tmp_path, "04_rs2sam2", "smoke")
    assert missing.status == "failed" and "miou_baseline" in missing.error
    assert nbs.read_results(tmp_path, "05_coninfer_inference").status == "not run"


def test_update_readme_replaces_only_the_marked_block(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\nbefore\n{nbs.RESULTS_START}\nold table\n{nbs.RESULTS_END}\nafter\n")
    text = nbs.update_readme(readme, "| new |")
    assert text == f"# t\nbefore\n{nbs.RESULTS_START}\n| new |\n{nbs.RESULTS_END}\nafter\n"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:start"):
        nbs.update_readme(readme, "| new |")


# --- the book ----------------------------------------------------------------------------------

@pytest.fixture
def book_repo(fake_repo: Path) -> Path:
    """fake_repo plus the real book/ sources, 00_data_tour executed (with a results.json),
    01_sar_alignment only as a source notebook, the other four absent."""
    shutil.copytree(ROOT / "book", fake_repo / "book", ignore=shutil.ignore_patterns("_build"))
    make_notebook(fake_repo / "notebooks" / "01_sar_alignment.ipynb", [("profile = 'smoke'", ["parameters"])])
    executed = make_notebook(fake_repo / "build" / "notebooks" / "00_data_tour.ipynb", [("1 + 1", None)])
    nb = nbformat.read(str(executed), as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nbformat.write(nb, str(executed))
    art = fake_repo / "artifacts" / "00_data_tour"
    art.mkdir(parents=True)
    (art / "results.json").write_text(json.dumps(
        {"notebook": "00_data_tour", "profile": "smoke", "metrics": {"scenes_per_s": 37.5}, "wall_s": 4.0}))
    return fake_repo


def test_stage_book_uses_executed_notebooks_and_skips_missing(book_repo: Path):
    logs: list[str] = []
    staging = nbs.stage_book(book_repo, log=logs.append)
    toc_files = [e["file"] for e in nbs._toc_files(yaml.safe_load((staging / "_toc.yml").read_text()))]
    assert [f for f in toc_files if f.startswith("notebooks/")] == ["notebooks/00_data_tour",
                                                                     "notebooks/01_sar_alignment"]
    assert sum("leaving" in m for m in logs) == 4
    staged = nbformat.read(str(staging / "notebooks" / "00_data_tour.ipynb"), as_version=4)
    assert staged.cells[1].outputs[0]["data"]["text/plain"] == "2"  # the executed copy, outputs kept
    source = nbformat.read(str(staging / "notebooks" / "01_sar_alignment.ipynb"), as_version=4)
    assert "without outputs" in source.cells[0].source
    assert any("01_sar_alignment: NOT executed" in m for m in logs)
    assert "| `scenes_per_s` | 37.5 |" in (staging / "results.md").read_text()


def test_real_book_toc_lists_every_notebook_stem():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [e["file"] for e in nbs._toc_files(toc)]
    assert [f for f in files if f.startswith("notebooks/")] == [f"notebooks/{s}" for s in nbs.NOTEBOOK_STEMS]
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"


@pytest.mark.slow
def test_book_builds_offline(book_repo: Path):
    html = nbs.build_book(book_repo, log=lambda m: None)
    assert html == (book_repo / "build" / "book" / "html").resolve()
    page = (html / "notebooks" / "00_data_tour.html").read_text()
    assert "00_data_tour" in page
    # the metric's row with its value (the page's prose names `scenes_per_s` too, never a value)
    assert re.search(r"scenes_per_s</span></code></p></td>\s*<td><p>37\.5</p></td>",
                     (html / "results.html").read_text(), re.S)
    assert (html / "notebooks" / "01_sar_alignment.html").is_file()
    assert not (html / "notebooks" / "03_vita_sga.html").exists()
