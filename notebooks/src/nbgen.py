"""Shared helper of the notebook generators: ``notebooks/src/make_NN_*.py`` write the notebooks.

Edit the generator, not the ``.ipynb``: notebooks are generated with empty outputs, so they are
committed stripped. Regenerate all with ``make notebooks-gen``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1]


class Notebook:
    """Collects cells in order; ``write()`` validates and saves ``notebooks/<stem>.ipynb``."""

    def __init__(self, stem: str):
        self.path = NOTEBOOKS_DIR / f"{stem}.ipynb"
        self.cells: list = []

    def md(self, text: str) -> None:
        self.cells.append(new_markdown_cell(text.strip("\n")))

    def code(self, text: str, tags: list[str] | None = None) -> None:
        cell = new_code_cell(text.strip("\n"))
        if tags:
            cell.metadata["tags"] = list(tags)
        self.cells.append(cell)

    def write(self) -> Path:
        for i, cell in enumerate(self.cells):
            cell.id = str(i)  # stable ids (as nbstripout writes them): regenerating gives no spurious diff
        nb = new_notebook(cells=self.cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(nb)
        nbformat.write(nb, self.path)
        print(f"wrote {self.path}")
        return self.path
