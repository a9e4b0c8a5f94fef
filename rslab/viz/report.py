"""Prose and tables written from the run's own variables, so a notebook never pastes a number.

``report("The fused mode reached {miou:.3f} after {steps} steps.", miou=m, steps=n)`` fills the
placeholders with :meth:`str.format` and returns :class:`Report`, a ``str`` that Jupyter renders
as Markdown (``_repr_markdown_``); leave it as a cell's last expression. ``report_table`` turns
rows (dicts) into a Markdown table. A placeholder without a value, or a value that is not a finite
number where a number format is asked for, is an error, never a silent blank.
"""

from __future__ import annotations

import math
import string
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Report", "report", "report_table"]


class Report(str):
    """Markdown text; Jupyter (and the book) render it as Markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


def _check_value(name: str, value: Any, spec: str) -> None:
    if spec and spec[-1:] in "eEfFgG%" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ValueError(f"report: {name}={value} is not a finite number; the run produced no valid value for it.")


def report(text: str, /, **values: Any) -> Report:
    """``text`` with ``{name:format}`` placeholders filled from ``values`` (keyword arguments).

    Every placeholder needs a value and every value must be used (a value nobody reads is usually
    a typo in a placeholder). Numbers formatted with ``f``/``g``/``%`` must be finite."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("report needs a non-empty Markdown template string.")
    names = set()
    for _, field, spec, _ in string.Formatter().parse(text):
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError(f"report: use named placeholders like '{{miou:.3f}}', not '{{{field}}}'.")
        root = field.split(".")[0].split("[")[0]
        if root not in values:
            raise ValueError(f"report: placeholder '{{{field}}}' has no value; pass {root}=... to report().")
        if root == field:
            _check_value(field, values[root], spec or "")
        names.add(root)
    unused = set(values) - names
    if unused:
        raise ValueError(f"report: values {sorted(unused)} are not used by any placeholder; "
                         "check the template's names.")
    return Report(text.format(**values).strip())


def _cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return format(value, floatfmt)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        return _cell(value.item(), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def report_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 floatfmt: str = ".3f", caption: str | None = None) -> Report:
    """A Markdown table of ``rows`` (one dict each; ``columns`` picks and orders the keys, default
    the first row's). Floats use ``floatfmt``; missing values show as ``-``."""
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("report_table needs at least one row.")
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError("report_table rows must be mappings of column -> value.")
    columns = list(columns or rows[0].keys())
    unknown = [c for c in columns if not any(c in r for r in rows)]
    if unknown:
        raise ValueError(f"report_table: columns {unknown} appear in no row; "
                         f"row keys are {sorted(set().union(*rows))}.")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c), floatfmt) for c in columns) + " |")
    text = "\n".join(lines)
    return Report((f"{caption}\n\n" if caption else "") + text)
