"""When to build ipywidgets explorers.

Explorers are for people at a live kernel. In headless runs (``rslab notebooks run``, papermill,
CI) nobody can move a slider, and creating widgets there is not harmless: a widget's comm
messages can leave the notebook client waiting forever for a reply the kernel has already sent
(jupyter/nbclient#312; here it hung ``make tutorial`` on an idle kernel, intermittently, in a
cell that only drew two precomputed images). So the runner sets ``RSLAB_HEADLESS=1`` for its
kernels and the notebooks build widgets only when :func:`widgets_enabled` says so; each explorer
cell draws its static figure either way.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["HEADLESS_ENV", "HEADLESS_NOTE", "widgets_enabled"]

HEADLESS_ENV = "RSLAB_HEADLESS"
HEADLESS_NOTE = ("(headless run: the interactive explorer is built only in a live notebook; "
                 "open this notebook in JupyterLab to use it)")


def widgets_enabled() -> bool:
    """True when explorers should be built: ipywidgets is installed and ``RSLAB_HEADLESS`` is
    unset, empty or ``0``. Set ``RSLAB_HEADLESS=1`` yourself when you run a notebook headlessly
    with another tool (plain papermill, nbconvert)."""
    value = os.environ.get(HEADLESS_ENV, "").strip().lower()
    if value not in ("", "0", "false", "no"):
        return False
    return importlib.util.find_spec("ipywidgets") is not None
