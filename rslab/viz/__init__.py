"""Visualisation: class colours that follow the semantic tree, SAR display, sample figures, maps.

- :mod:`rslab.viz.palette`: ``colorize_labels``, ``label_legend``, ``overlay``, ``level_palette``.
- :mod:`rslab.viz.sar`: ``sar_to_display`` (dB stretch, false colour, nodata colour), ``optical_to_display``.
- :mod:`rslab.viz.figures`: ``show_sample``, ``show_levels``, the data-tour figures and
  ``show_gallery`` (input | prompt | prediction | ground truth | score); each returns a
  ``matplotlib.figure.Figure`` not registered with pyplot and, in a notebook kernel, displays it
  once (in a loop or when assigned too; :mod:`rslab.viz.display`).
- :mod:`rslab.viz.report`: ``report`` / ``report_table``, Markdown written from the run's variables.
- :mod:`rslab.viz.maps`: ``scene_map`` / ``save_map_html`` (leafmap, imported on first use).
- :mod:`rslab.viz.embeddings`: ``pca_2d`` (one 2-D PCA over several embedding sets, for scatter plots).
- :mod:`rslab.viz.widgets`: ``widgets_enabled`` (explorers only at a live kernel, never headless).
- One module per notebook's own figures and explorers, imported from the submodule:
  :mod:`rslab.viz.tour` (00), :mod:`rslab.viz.alignment` (01), :mod:`rslab.viz.qsacl` (02),
  :mod:`rslab.viz.vita` (03), :mod:`rslab.viz.referring` (04), :mod:`rslab.viz.coninfer` (05).

Training curves are drawn by ``rslab.train.plot_history``.
"""

from rslab.viz.display import LabFigure, figure_png, show
from rslab.viz.embeddings import pca_2d
from rslab.viz.figures import (
    plot_backscatter_by_class,
    plot_db_histogram,
    show_class_on_sar,
    show_gallery,
    show_images,
    show_large_scene,
    show_levels,
    show_looks,
    show_mask_prediction,
    show_prediction,
    show_referring,
    show_sample,
    show_styles,
    speckle_std_db,
)
from rslab.viz.maps import png_data_uri, save_map_html, scene_map, to_rgba_uint8
from rslab.viz.palette import (
    colorize_labels,
    flat_tree,
    format_tree,
    label_legend,
    level_palette,
    node_color,
    overlay,
)
from rslab.viz.report import Report, report, report_table
from rslab.viz.sar import NODATA_COLOR, optical_to_display, sar_to_display
from rslab.viz.widgets import HEADLESS_ENV, HEADLESS_NOTE, widgets_enabled

__all__ = [
    "HEADLESS_ENV",
    "LabFigure",
    "pca_2d",
    "Report",
    "figure_png",
    "report",
    "report_table",
    "show",
    "show_gallery",
    "HEADLESS_NOTE",
    "NODATA_COLOR",
    "colorize_labels",
    "flat_tree",
    "format_tree",
    "label_legend",
    "level_palette",
    "node_color",
    "optical_to_display",
    "overlay",
    "plot_backscatter_by_class",
    "plot_db_histogram",
    "png_data_uri",
    "sar_to_display",
    "save_map_html",
    "scene_map",
    "show_class_on_sar",
    "show_images",
    "show_large_scene",
    "show_levels",
    "show_looks",
    "show_mask_prediction",
    "show_prediction",
    "show_referring",
    "show_sample",
    "show_styles",
    "speckle_std_db",
    "to_rgba_uint8",
    "widgets_enabled",
]
