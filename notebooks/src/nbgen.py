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
        self.stem = stem
        self.path = NOTEBOOKS_DIR / f"{stem}.ipynb"
        self.cells: list = []

    def md(self, text: str) -> None:
        self.cells.append(new_markdown_cell(text.strip("\n")))

    def code(self, text: str, tags: list[str] | None = None) -> None:
        cell = new_code_cell(text.strip("\n"))
        if tags:
            cell.metadata["tags"] = list(tags)
        self.cells.append(cell)

    def over_seeds(self) -> None:
        """The "Over seeds" section before a notebook's Summary: its verdicts from the committed
        evidence page (``rslab.evidence.notebook_evidence``), as a report cell."""
        self.md("""
### Over seeds

One run is one draw of the scenes, the initialisation and the batches. The evidence page
(`make evidence`, `book/evidence.md`) repeats this notebook's key comparisons over several seeds
and judges each claim against the seed-to-seed spread; its verdicts for this notebook:
""")
        self.code(f"""
from IPython.display import Markdown, display

from rslab.evidence import notebook_evidence

display(Markdown(notebook_evidence("{self.stem}")))
""", tags=["report"])

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
