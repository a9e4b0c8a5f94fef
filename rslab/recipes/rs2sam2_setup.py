"""Set up an RS2-SAM2 run from notebook 04's parameters: inputs, preset, SAM2 file, text encoder, rows.

The notebook's parameters name things (``model_size="tiny"``, ``sam2_checkpoint="sam2.1-hiera-large"``,
``union_encoder="beit3-large"``, ``ablation_rows="baseline,full"``); the functions here turn those
names into what :func:`rslab.recipes.rs2sam2.run_ablation` takes, and check them before anything
trains:

- :func:`require_rs2sam2_inputs`: every missing weights file and dataset in ONE error, first thing;
- :func:`rs2sam2_setup`: the :class:`RS2SAM2Config` preset and the SAM2 checkpoint file to load;
- :func:`union_text_encoder`: the token encoder of the union encoder, and the hook that loads
  BEiT-3's release weights into each ablation row's model;
- :func:`ablation_row_names`: the ablation rows to train, in the paper's table order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from rslab import weights as W
from rslab.data.catalog import require_datasets
from rslab.models.rs2sam2 import BEiT3TokenEncoder, MiniLMTokenEncoder, RS2SAM2Config, load_union_weights
from rslab.recipes.rs2sam2 import ABLATION_ROWS

__all__ = ["PRESETS", "UNION_ENCODERS", "RS2SAM2Setup", "ablation_row_names", "require_rs2sam2_inputs",
           "rs2sam2_setup", "union_text_encoder"]

PRESETS: dict[str, Callable[..., RS2SAM2Config]] = {
    "tiny": RS2SAM2Config.tiny, "small": RS2SAM2Config.small, "base": RS2SAM2Config.base}
UNION_ENCODERS = ("vit", "beit3-base", "beit3-large")  # vit: in-repo, MiniLM tokens; beit3-*: release weights
DATASETS = ("synthetic", "rrsisd", "refsegrs")


def _registry_names(*names) -> list[str]:
    """The names among ``names`` that are ``rslab.weights`` entries (a file path or None is not)."""
    return [str(n) for n in names if n and str(n) in W.WEIGHTS]


def require_rs2sam2_inputs(sam2_checkpoint, union_encoder: str, dataset: str, weights_dir=None, data_root=None,
                           allow_download: bool = False) -> None:
    """Check that every weights file the run names (with BEiT-3's tokenizer beside its weights) and
    its dataset are on disk; raise ONE ``FileNotFoundError`` listing all that are missing, so that a
    full-profile run stops in seconds with the complete list instead of failing one item at a time.

    ``sam2_checkpoint`` and ``union_encoder`` are checked only when they are registry names
    (``rslab weights list``); a path or ``None`` is resolved later by :func:`rs2sam2_setup`.
    ``dataset="synthetic"`` needs no files."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    problems: list[str] = []
    named = _registry_names(sam2_checkpoint, union_encoder)
    if named:
        try:
            W.require(named, weights_dir, allow_download=allow_download, companions=True)
        except FileNotFoundError as err:
            problems.append(str(err))
    if dataset != "synthetic":
        try:
            require_datasets([dataset], data_root)
        except FileNotFoundError as err:
            problems.append(str(err))
    if problems:
        raise FileNotFoundError("missing inputs of notebook 04:\n\n" + "\n\n".join(problems))


@dataclass(frozen=True)
class RS2SAM2Setup:
    """What :func:`rs2sam2_setup` resolved: the model config, the SAM2 checkpoint to load into it
    (``None``: none given) and the file of every registry name the run uses."""

    cfg: RS2SAM2Config
    checkpoint: Path | str | None = None
    files: dict[str, Path] = field(default_factory=dict)


def _standin_overrides(entry: W.WeightsEntry, model_size: str, image_size: int) -> dict:
    """A shipped stand-in is one tiny SAM2 at one size: refuse any other preset or input size."""
    if entry.family == "standin" and (model_size != "tiny" or image_size != entry.config.get("image_size")):
        raise ValueError(f"{entry.name} is a tiny SAM2 at {entry.config.get('image_size')} px; this run asks for "
                         f"model_size={model_size!r} at {image_size} px (use sam2_checkpoint=None or an official file)")
    return {"sam2_config": entry.config["sam2_config"]}


def rs2sam2_setup(model_size: str, image_size: int, *, train_hiera: bool = False, sam2_checkpoint=None,
                  union_encoder: str = "vit", weights_dir=None, allow_download: bool = False) -> RS2SAM2Setup:
    """The RS2-SAM2 config and SAM2 checkpoint of a run.

    ``model_size``: an :class:`RS2SAM2Config` preset (``tiny`` for the CPU, ``small``, ``base``: the
    paper's Hiera-L at 1024 px). ``image_size``: SAM2's input side; the tiny preset's union encoder
    sees the same pixels. ``sam2_checkpoint``: a registry name (its file, searched in
    ``weights_dir``, ``$RSLAB_WEIGHTS_DIR`` and the caches, and the sam2 config it was trained
    with), a file path, or ``None`` (random SAM2). ``union_encoder``: ``vit`` (in-repo, from scratch)
    or ``beit3-base`` / ``beit3-large`` (the paper's BEiT-3, from its release file).
    Missing registry files are ONE ``FileNotFoundError`` naming them all."""
    if model_size not in PRESETS:
        raise ValueError(f"model_size must be one of {list(PRESETS)}, got {model_size!r}")
    if union_encoder != "vit" and (not str(union_encoder).startswith("beit3-") or union_encoder not in W.WEIGHTS):
        raise ValueError(f"union_encoder must be one of {list(UNION_ENCODERS)}, got {union_encoder!r}")
    overrides = {"image_size": image_size, "train_hiera": train_hiera}
    if model_size == "tiny":
        overrides["union_image_size"] = image_size  # the union encoder sees the same pixels (patch 8)
    if sam2_checkpoint and str(sam2_checkpoint) in W.WEIGHTS:
        overrides |= _standin_overrides(W.get_entry(str(sam2_checkpoint)), model_size, image_size)
    needed = _registry_names(sam2_checkpoint, union_encoder)
    files = W.require(needed, weights_dir, allow_download=allow_download) if needed else {}  # one error lists all
    checkpoint = None
    if sam2_checkpoint:
        checkpoint = files.get(str(sam2_checkpoint)) or (
            sam2_checkpoint if os.path.isfile(str(sam2_checkpoint))
            else W.find_weights(str(sam2_checkpoint), allow_download=allow_download))
    cfg = PRESETS[model_size](**overrides)
    if union_encoder != "vit":
        cfg = cfg.with_beit3(union_encoder.split("-", 1)[1])
    return RS2SAM2Setup(cfg=cfg, checkpoint=checkpoint, files=files)


def union_text_encoder(union_encoder: str, cfg: RS2SAM2Config, weights_dir=None, allow_download: bool = False):
    """``(encoder, prepare)`` for the union encoder named ``union_encoder``.

    ``vit``: the frozen MiniLM token encoder and ``prepare=None``. ``beit3-*``: BEiT-3's own token
    ids (the release's sentencepiece model beside its weights) and ``prepare(model)``, which loads
    the release's weights into a freshly built row model (``run_ablation(..., prepare=prepare)``).
    Both keep ``cfg.max_text_tokens`` word pieces per expression."""
    if union_encoder not in UNION_ENCODERS:
        raise ValueError(f"union_encoder must be one of {list(UNION_ENCODERS)}, got {union_encoder!r}")
    if union_encoder == "vit":
        return MiniLMTokenEncoder(max_tokens=cfg.max_text_tokens), None
    if cfg.union_encoder != "beit3":
        raise ValueError(f"cfg has the {cfg.union_encoder!r} union encoder; build it with "
                         f"cfg.with_beit3(...) (rs2sam2_setup does) to use {union_encoder!r}")
    encoder = BEiT3TokenEncoder(W.find_companion(union_encoder, path=weights_dir), max_tokens=cfg.max_text_tokens)
    return encoder, partial(load_union_weights, name=union_encoder, path=weights_dir, allow_download=allow_download)


def ablation_row_names(rows: str = "all") -> list[str]:
    """The ablation rows to train, in the paper's table order (:data:`ABLATION_ROWS`).

    ``rows``: ``"all"`` or a comma-separated subset such as ``"baseline,full"``. The two ends,
    ``baseline`` and ``full``, are always trained: results.json reports both."""
    if not isinstance(rows, str):
        raise ValueError(f"rows must be 'all' or a comma-separated string of {list(ABLATION_ROWS)}, got {rows!r}")
    wanted = set(ABLATION_ROWS) if rows == "all" else {r.strip() for r in rows.split(",") if r.strip()}
    unknown = sorted(wanted - set(ABLATION_ROWS))
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown} in rows={rows!r}; choose from {list(ABLATION_ROWS)} "
                         "(comma-separated) or 'all'")
    return [r for r in ABLATION_ROWS if r in wanted | {"baseline", "full"}]
