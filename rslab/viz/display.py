"""Figures that show themselves in a notebook, exactly once per cell.

Every ``rslab.viz.show_*`` / ``plot_*`` function builds a :class:`LabFigure` (a plain
``matplotlib.figure.Figure``, not registered with pyplot) and passes it to :func:`show`, which,
inside an IPython kernel, displays it as a PNG right away. So a figure appears whether the call
is the last expression of a cell, assigned to a variable (``fig = viz.show_sample(...)``) or made
in a loop, headless (``rslab notebooks run``) or live. A :class:`LabFigure` that was already
displayed in the running cell is not displayed a second time when it is also the cell's last
expression or passed to ``display``; in a later cell, ``fig`` on its own shows it again.

:func:`show` also takes a pyplot figure: it displays it once and closes it (so that the inline
backend does not draw it again at the end of the cell). Outside IPython (scripts, tests)
:func:`show` does nothing: save with ``fig.savefig(path)``.
"""

from __future__ import annotations

import io
import sys

from matplotlib.figure import Figure

__all__ = ["LabFigure", "figure_png", "show"]


def _shell():
    """The running IPython shell with a kernel behind it (Jupyter, papermill), else None."""
    if "IPython" not in sys.modules:  # never import IPython into a plain script
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes, cropped to its content (as Jupyter's inline backend draws it)."""
    if not isinstance(fig, Figure):
        raise ValueError(f"expected a matplotlib Figure, got {type(fig).__name__}.")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=dpi or fig.dpi, facecolor="white")
    return buf.getvalue()


class LabFigure(Figure):
    """A ``Figure`` that IPython displays at most once per cell (see the module docstring)."""

    _shown_in: int | None = None  # execution count of the cell that displayed it

    def _emit(self, shell) -> None:
        from IPython.display import display

        w, h = (self.get_size_inches() * self.dpi).astype(int)
        display({"image/png": figure_png(self), "text/plain": f"<Figure size {w}x{h} with {len(self.axes)} Axes>"},
                raw=True)
        self._shown_in = shell.execution_count

    def _ipython_display_(self) -> None:
        shell = _shell()
        if shell is None:
            return
        if self._shown_in is not None and self._shown_in == shell.execution_count:
            return  # already drawn by show() in this very cell
        self._emit(shell)


def show(fig: Figure) -> Figure:
    """Display ``fig`` now when running in a notebook kernel; return it (for ``savefig``)."""
    if not isinstance(fig, Figure):
        raise ValueError(f"show expects a matplotlib Figure, got {type(fig).__name__}.")
    shell = _shell()
    if shell is None:
        return fig
    if isinstance(fig, LabFigure):
        fig._ipython_display_()
    else:
        from IPython.display import Image, display

        display(Image(figure_png(fig)))
        if getattr(fig.canvas, "manager", None) is not None:
            # a pyplot figure: the inline backend would draw it a second time at the cell's end,
            # and pyplot would keep it alive; it has been shown, so release it
            import matplotlib.pyplot as plt

            plt.close(fig)
    return fig
