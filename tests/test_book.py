"""The book a learner reads: built offline for real, and every tagged cell left its output.

* ``check_book`` on hand-written pages: remote scripts / stylesheets (also inside a notebook
  output's iframe) and missing images are reported, local ones are not;
* ``tagged_cells_without_output``: a ``figure`` cell without an image is reported;
* the results page table: one row per key metric with target and paper columns;
* (slow) a real Jupyter Book build of the real ``book/`` pages and notebooks, with an executed
  notebook holding math, a figure and a report: no offline problem, MathJax served locally.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from rslab import notebooks as nbs

ROOT = Path(__file__).resolve().parents[1]


def _page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    page = tmp_path / "site" / name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"<html><head></head><body>{body}</body></html>")
    return page


def test_check_book_flags_remote_assets_and_missing_images(tmp_path: Path):
    (tmp_path / "site" / "_static").mkdir(parents=True)
    (tmp_path / "site" / "_static" / "ok.png").write_bytes(b"png")
    _page(tmp_path, '<script src="_static/local.js"></script><img src="_static/ok.png">'
                    '<img src="data:image/png;base64,AAAA"><link rel="stylesheet" href="_static/a.css">')
    assert nbs.check_book(tmp_path / "site") == []
    leaflet = html.escape('<script src="https://cdn.jsdelivr.net/npm/leaflet.js"></script>', quote=True)
    _page(tmp_path, '<script src="https://cdn.example.org/x.js"></script>'
                    '<link href="//cdn.example.org/x.css" rel="stylesheet">'
                    '<img src="_static/gone.png"><img src="https://tiles.example.org/1.png">'
                    f'<iframe srcdoc="{leaflet}"></iframe>', "bad.html")
    problems = nbs.check_book(tmp_path / "site")
    assert len(problems) == 5, problems
    assert all(p.startswith("bad.html") for p in problems)
    assert any("(iframe): remote script https://cdn.jsdelivr.net" in p for p in problems)
    assert any("image _static/gone.png is missing" in p for p in problems)
    # math needs a MathJax that is really there
    _page(tmp_path, '<span class="math notranslate">\\(x\\)</span><script src="_static/mathjax/MathJax.js?config=X">'
                    "</script>", "math.html")
    assert any("math.html: MathJax script" in p for p in nbs.check_book(tmp_path / "site"))
    with pytest.raises(FileNotFoundError, match="build the book"):
        nbs.check_book(tmp_path / "empty")


def _executed(path: Path, cells: list[tuple[str, str, list, list[str]]]) -> Path:
    """A notebook with the given (type, source, outputs, tags) cells, as the runner leaves it."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source, outputs, tags in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        if kind == "code":
            cell.outputs = outputs
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def _png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_tagged_cells_without_output_are_reported(tmp_path: Path):
    image = nbformat.v4.new_output("display_data", {"image/png": _png(), "text/plain": "<Figure>"})
    md = nbformat.v4.new_output("execute_result", {"text/markdown": "mIoU 0.5", "text/plain": "'mIoU 0.5'"},
                                execution_count=3)
    text = nbformat.v4.new_output("stream", name="stdout", text="hello\n")
    nb = _executed(tmp_path / "nb.ipynb", [
        ("code", "viz.show_sample(s, tree)", [image], ["figure"]),
        ("code", "# a comment\nfig = viz.show_levels(s, tree)", [text], ["figure"]),
        ("code", "viz.report('mIoU {m:.1f}', m=0.5)", [md], ["report"]),
        ("code", "viz.report('x')", [], ["report"]),
        ("code", "print('hello')", [text], []),
    ])
    problems = nbs.tagged_cells_without_output(nb)
    assert problems == [
        "cell[1] `fig = viz.show_levels(s, tree)` is tagged 'figure' "
        "but produced no image/png / image/svg+xml / image/jpeg output",
        "cell[3] `viz.report('x')` is tagged 'report' but produced no text/markdown output",
    ]


def test_generated_notebooks_tag_their_figure_cells():
    """Every generator tags the cells that draw, so the ci run can check they drew (tests/test_notebooks_run.py)."""
    for stem in nbs.NOTEBOOK_STEMS:
        nb = nbformat.read(str(ROOT / "notebooks" / f"{stem}.ipynb"), as_version=4)
        tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
        assert tags.count("figure") >= 2, f"{stem}: only {tags.count('figure')} cells tagged 'figure'"
        assert "report" in tags, f"{stem}: no cell tagged 'report' (this run's numbers, rslab.viz.report)"
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "## Summary" in text and "## Exercises" in text, f"{stem}: needs a Summary and Exercises section"
        bad = [c for c in text if c < " " and c not in "\n\t"]
        assert not bad, f"{stem}: control characters {bad!r} in markdown (a non-raw generator string?)"


def test_results_page_table_has_target_and_paper_columns():
    ok = nbs.NotebookResult("04_rs2sam2", "smoke", "ok", wall_s=201.3, device="cpu:x86_64 x2",
                            metrics={k: 0.25 for k in nbs.METRIC_KEYS["04_rs2sam2"]})
    missing = nbs.NotebookResult("05_coninfer_inference", "-", "not run", error="no results.json")
    table = nbs.results_page_table([ok, missing]).splitlines()
    assert table[0] == "**04_rs2sam2**: ok, profile `smoke`, cpu:x86_64 x2, 201.3 s"
    assert table[2] == "| metric | this run | target | paper |"
    assert "| `miou_baseline` | 0.250 | below full | - |" in table
    assert "| `miou_full` | 0.250 | >= 0.5 | 0.667 (RRSIS-D) |" in table
    assert table[-1] == "**05_coninfer_inference**: not run (no results.json)"
    assert max(len(line) for line in table) < 80  # no horizontal scrolling


@pytest.mark.slow
def test_real_book_builds_offline_with_local_mathjax(tmp_path: Path):
    """The real book/ pages and notebooks (one executed, holding math, a figure and a report;
    the rest as stripped sources) build into a site with no remote asset and a local MathJax."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    shutil.copytree(ROOT / "book", repo / "book", ignore=shutil.ignore_patterns("_build"))
    for stem in nbs.NOTEBOOK_STEMS:
        shutil.copy2(ROOT / "notebooks" / f"{stem}.ipynb", repo / "notebooks" / f"{stem}.ipynb")
    image = nbformat.v4.new_output("display_data", {"image/png": _png(), "text/plain": "<Figure>"})
    # a report as rslab.viz.report / report_table write it: inline math and a Markdown table
    md = nbformat.v4.new_output("execute_result", {"text/markdown": "R@1 **0.33** of $N = 64$\n\n"
                                                   "| mode | mIoU |\n| --- | --- |\n| fused | 0.612 |"},
                                execution_count=2)
    _executed(repo / "build" / "notebooks" / "01_sar_alignment.ipynb", [
        ("md", "# SAR alignment\n\n$$\\mathcal{L}_{img} = \\lambda_{CL}\\,\\mathcal{L}_{CL} + \\frac{1}{2}x$$", [], []),
        ("code", "viz.show_sample(s, tree)", [image], ["figure"]),
        ("code", "viz.report('...')", [md], ["report"]),
    ])
    art = repo / "artifacts" / "01_sar_alignment"
    art.mkdir(parents=True)
    (art / "results.json").write_text(json.dumps({"notebook": "01_sar_alignment", "profile": "ci", "wall_s": 3.0,
                                                  "metrics": {k: 0.5 for k in nbs.METRIC_KEYS["01_sar_alignment"]}}))
    html_dir = nbs.build_book(repo, log=lambda m: None)
    assert nbs.check_book(html_dir) == []
    page = (html_dir / "notebooks" / "01_sar_alignment.html").read_text()
    assert "_static/mathjax/MathJax.js" in page and (html_dir / "_static" / "mathjax" / "MathJax.js").is_file()
    assert "\\frac{1}{2}" in page and "<img" in page
    # report outputs are rendered as MyST: their math is typeset and their tables are tables
    assert "$N = 64$" not in page and "N = 64" in page, "inline math in a report output left as raw $...$"
    assert re.search(r"<table.*?fused.*?0\.612", page, re.S), "a report table rendered as plain text"
    results = (html_dir / "results.html").read_text()
    assert "sar2opt_r1_after" in results and "&gt;= 0.8" in results
