"""book/architecture.md cannot go stale: every function of its equation table exists and cites its
equation, every equation a notebook cites is in the table, and the page is in the book."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "architecture.md"

#: notebook number -> the paper whose equation numbers its text cites
NOTEBOOK_PAPER = {"02": "SkySense V2", "05": "ConInfer"}

_CITE = re.compile(r"Eqs?\.\s*\(?(\d+(?:\s*(?:[-–,]|and)\s*\d+)*)")


def cited_numbers(text: str) -> set[int]:
    """Equation numbers cited in ``text``: ``Eq. 4``, ``Eqs. 13-14``, ``Eqs. 6 and 11``, ``Eqs. 1, 3``."""
    out: set[int] = set()
    for group in _CITE.findall(text):
        for part in re.split(r"\s*(?:,|and)\s*", group):
            ends = re.split(r"\s*[-–]\s*", part)
            lo, hi = int(ends[0]), int(ends[-1])
            out.update(range(lo, hi + 1))
    return out


def equation_table() -> list[tuple[str, int, str]]:
    text = PAGE.read_text(encoding="utf-8")
    body = text.split("<!-- equations:start -->")[1].split("<!-- equations:end -->")[0]
    rows = []
    for line in body.splitlines():
        m = re.fullmatch(r"\|\s*([^|]+?)\s*\|\s*Eq\. (\d+)\s*\|\s*`([\w.]+)`\s*\|", line.strip())
        if m:
            rows.append((m.group(1), int(m.group(2)), m.group(3)))
    return rows


def resolve(dotted: str):
    """Import ``a.b.c`` as a module, or a module attribute (``a.b.func``, ``a.b.Class.method``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def citation_text(obj) -> str:
    """The docstring, plus for a function/class the comment lines right above it (a section header)."""
    text = inspect.getdoc(obj) or ""
    if not inspect.ismodule(obj):
        text += "\n" + (inspect.getcomments(inspect.unwrap(obj)) or "")
    return text


def test_cited_numbers_reads_ranges_and_lists():
    assert cited_numbers("Eq. 4; Eqs. 13-14 and (Eq. 7), Eqs. 6 and 11, Eqs. 1, 3") == {1, 3, 4, 6, 7, 11, 13, 14}
    assert cited_numbers("no equation here") == set()


def test_the_table_is_read():
    rows = equation_table()
    assert len(rows) >= 10 and {p for p, _, _ in rows} == set(NOTEBOOK_PAPER.values())


@pytest.mark.parametrize("paper, number, dotted", equation_table())
def test_each_function_exists_and_cites_its_equation(paper, number, dotted):
    obj = resolve(dotted)
    assert number in cited_numbers(citation_text(obj)), (
        f"{dotted} is listed for {paper} Eq. {number} in book/architecture.md, but its docstring does not cite it")


def test_every_equation_a_notebook_cites_is_in_the_table():
    table = {(p, n) for p, n, _ in equation_table()}
    missing = []
    for src in sorted((ROOT / "notebooks" / "src").glob("make_[0-9][0-9]_*.py")):
        nn_ = src.name[5:7]
        numbers = cited_numbers(src.read_text(encoding="utf-8"))
        if numbers and nn_ not in NOTEBOOK_PAPER:
            missing.append(f"{src.name} cites Eqs. {sorted(numbers)}: add its paper to NOTEBOOK_PAPER")
            continue
        missing += [f"{src.name}: {NOTEBOOK_PAPER[nn_]} Eq. {n}" for n in sorted(numbers)
                    if (NOTEBOOK_PAPER[nn_], n) not in table]
    assert not missing, "equations cited by notebooks but missing from book/architecture.md:\n" + "\n".join(missing)


def test_the_page_is_in_the_book_after_the_running_page():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text(encoding="utf-8"))
    files = [c["file"] for part in toc["parts"] for c in part.get("chapters", [])]
    assert "architecture" in files and files.index("architecture") == files.index("docs_running") + 1
