"""Notebooks call the library in short cells; the logic lives in ``rslab`` (book/architecture.md).

Every code cell of every notebook is at most ``MAX_CELL_LINES`` lines and defines no function or
class: a helper a notebook needs belongs in ``rslab`` (a recipe, a metric or a figure), where it is
tested and reusable. The ``parameters`` cell is exempt from the length rule only: it is the
notebook's documented interface, one line per parameter, which papermill overrides as a whole.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CELL_LINES = 25


def _code_cells(path: Path):
    nb = json.loads(path.read_text())
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            yield index, source, cell.get("metadata", {}).get("tags", [])


def _python(source: str) -> str:
    """The cell without IPython magics and shell escapes (``%matplotlib inline``, ``!pip``)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 6, f"expected notebooks 00-05 under notebooks/, found {NOTEBOOKS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_are_short(path):
    long = [(i, len(src.splitlines())) for i, src, tags in _code_cells(path)
            if "parameters" not in tags and len(src.splitlines()) > MAX_CELL_LINES]
    assert not long, (f"{path.name}: code cells over {MAX_CELL_LINES} lines (cell index, lines): {long}; "
                      "move the logic into rslab (a recipe, metric or figure function) and call it")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_define_no_functions(path):
    defined = []
    for i, src, _ in _code_cells(path):
        tree = ast.parse(_python(src), filename=f"{path.name} cell {i}")
        defined += [(i, node.name) for node in ast.walk(tree)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        defined += [(i, "lambda") for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Lambda)]
    assert not defined, (f"{path.name}: functions defined in notebook cells (cell index, name): {defined}; "
                         "define them in rslab and import them")


def test_the_rules_catch_a_violation(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "%matplotlib inline\ndef f():\n    pass\n"},
                    {"cell_type": "code", "metadata": {}, "source": "\n".join(["x = 1"] * 26)},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "\n".join(["y = 1"] * 40)}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "99_bad.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match=r"\(1, 26\)"):
        test_cells_are_short(path)
    with pytest.raises(AssertionError, match="'f'"):
        test_cells_define_no_functions(path)
