"""The dataset catalog: what ``data_root`` means in every notebook.

``data_root`` is ONE folder holding the real datasets under their official folder names::

    data_root/
      loveDA/            LoveDA in mmsegmentation's converted layout (img_dir/, ann_dir/)
      potsdam/           ISPRS Potsdam, mmsegmentation layout
      vaihingen/         ISPRS Vaihingen, mmsegmentation layout
      deepglobe/         DeepGlobe Land Cover (Kaggle release: train/*_sat.jpg + *_mask.png)
      sen1floods11/      the sen1floods11 bucket (v1.1/data/flood_events/HandLabeled/..., v1.1/splits/...)
      SEN12MS/           SEN12MS (ROIs1158_spring/s1_1/..., s2_1/..., lc_1/...)
      rrsisd/            RRSIS-D (refs(unc).p, instances.json, JPEGImages/)
      RefSegRS/          RefSegRS (images/, masks/, output_phrase_{train,val,test}.txt)

Each :class:`DatasetEntry` says where to get the dataset, the layout expected under its folder and
which :mod:`rslab.data.readers` reader reads it. Notebooks call :func:`require_datasets` in their
first cells: one ``FileNotFoundError`` lists every dataset that is missing (with the layout it
expected and where to download it), so a full-profile run stops in seconds, not hours.
:func:`open_dataset` returns the reader for one split.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rslab.data.readers import RRSISD, MMSegFolder, RefSegRS
from rslab.data.readers.pairs import DeepGlobeFolder, Sen1Floods11Folder, SEN12MSPairs

#: Environment variable read when a notebook's ``data_root`` parameter is left empty.
DATA_ROOT_ENV = "RSLAB_DATA_ROOT"


@dataclass(frozen=True)
class DatasetEntry:
    """One real dataset: its official folder name under ``data_root`` and how it is laid out.

    ``markers``: what must exist under ``data_root/folder`` for the dataset to count as present;
    each marker is a tuple of alternative glob patterns (relative to the folder), one of which must
    match at least one file or folder.
    """

    name: str
    folder: str
    layout: str
    url: str
    reader: str
    used_by: tuple[str, ...]
    title: str = ""
    paper_use: str = ""
    markers: tuple[tuple[str, ...], ...] = ()


_MMSEG_LAYOUT = """{folder}/img_dir/{{train,val}}/*.png   ({bands} tiles)
{folder}/ann_dir/{{train,val}}/*.png   (labels, same file stems)"""

DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in (
        DatasetEntry(
            name="loveda",
            folder="loveDA",
            title="LoveDA (Wang et al., NeurIPS 2021 Datasets and Benchmarks)",
            layout=_MMSEG_LAYOUT.format(folder="loveDA", bands="RGB 1024 x 1024")
            + "\n(mmsegmentation's tools/dataset_converters/loveda.py writes it from the Zenodo zips; "
            "raw PNG label values 0 no-data, 1..7 classes)",
            url="https://zenodo.org/records/5706578 (convert with mmsegmentation's loveda.py)",
            reader="MMSegFolder(root, split, 'loveda')",
            used_by=("03_vita_sga", "05_coninfer_inference"),
            paper_use="SkySense-VITA V/T/F evaluation; ConInfer benchmark",
            markers=(("img_dir/train/*",), ("ann_dir/train/*",), ("img_dir/val/*",), ("ann_dir/val/*",)),
        ),
        DatasetEntry(
            name="potsdam",
            folder="potsdam",
            title="ISPRS Potsdam 2D semantic labelling",
            layout=_MMSEG_LAYOUT.format(folder="potsdam", bands="RGB 512 x 512")
            + "\n(mmsegmentation's tools/dataset_converters/potsdam.py; labels as its index PNGs or the "
            "official RGB colour code)",
            url="https://www.isprs.org/education/benchmarks/UrbanSemLab/2d-sem-label-potsdam.aspx",
            reader="MMSegFolder(root, split, 'potsdam')",
            used_by=("03_vita_sga", "05_coninfer_inference"),
            paper_use="SkySense-VITA V/T/F evaluation; ConInfer benchmark",
            markers=(("img_dir/train/*",), ("ann_dir/train/*",), ("img_dir/val/*",), ("ann_dir/val/*",)),
        ),
        DatasetEntry(
            name="vaihingen",
            folder="vaihingen",
            title="ISPRS Vaihingen 2D semantic labelling",
            layout=_MMSEG_LAYOUT.format(folder="vaihingen", bands="IRRG 512 x 512")
            + "\n(mmsegmentation's tools/dataset_converters/vaihingen.py)",
            url="https://www.isprs.org/education/benchmarks/UrbanSemLab/2d-sem-label-vaihingen.aspx",
            reader="MMSegFolder(root, split, 'vaihingen')",
            used_by=("05_coninfer_inference",),
            paper_use="ConInfer benchmark",
            markers=(("img_dir/train/*",), ("ann_dir/train/*",), ("img_dir/val/*",), ("ann_dir/val/*",)),
        ),
        DatasetEntry(
            name="deepglobe",
            folder="deepglobe",
            title="DeepGlobe Land Cover Classification (Demir et al., CVPRW 2018)",
            layout="deepglobe/train/<id>_sat.jpg   (RGB 2448 x 2448)\n"
            "deepglobe/train/<id>_mask.png  (RGB colour-coded labels)\n"
            "(the Kaggle release; valid/ and test/ hold images without masks)",
            url="https://www.kaggle.com/datasets/balraj98/deepglobe-land-cover-classification-dataset",
            reader="read_deepglobe(sat_path, mask_path)",
            used_by=("05_coninfer_inference",),
            paper_use="ConInfer benchmark",
            markers=(("train/*_sat.jpg",), ("train/*_mask.png",)),
        ),
        DatasetEntry(
            name="sen1floods11",
            folder="sen1floods11",
            title="Sen1Floods11 (Bonafilia et al., CVPRW 2020), hand-labelled chips",
            layout="sen1floods11/v1.1/data/flood_events/HandLabeled/S1Hand/<chip>_S1Hand.tif   (VV, VH dB)\n"
            "sen1floods11/v1.1/data/flood_events/HandLabeled/S2Hand/<chip>_S2Hand.tif   (13 S2 L1C bands)\n"
            "sen1floods11/v1.1/data/flood_events/HandLabeled/LabelHand/<chip>_LabelHand.tif\n"
            "sen1floods11/v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.csv\n"
            "(`gsutil -m rsync -r gs://sen1floods11 sen1floods11` writes it)",
            url="https://github.com/cloudtostreet/Sen1Floods11 (bucket gs://sen1floods11)",
            reader="Sen1Floods11Folder(root, split)",
            used_by=("01_sar_alignment",),
            paper_use="SAR zero-shot evaluation (water / not water) after SAR-optical alignment",
            markers=(
                ("v1.1/data/flood_events/HandLabeled/S1Hand/*_S1Hand.tif",),
                ("v1.1/data/flood_events/HandLabeled/S2Hand/*_S2Hand.tif",),
                ("v1.1/data/flood_events/HandLabeled/LabelHand/*_LabelHand.tif",),
                ("v1.1/splits/flood_handlabeled/flood_test_data.csv",),
            ),
        ),
        DatasetEntry(
            name="sen12ms",
            folder="SEN12MS",
            title="SEN12MS (Schmitt et al., ISPRS Annals 2019): co-registered Sentinel-1/2 patches",
            layout="SEN12MS/ROIs<id>_<season>/s1_<scene>/ROIs<id>_<season>_s1_<scene>_p<patch>.tif   (VV, VH dB)\n"
            "SEN12MS/ROIs<id>_<season>/s2_<scene>/ROIs<id>_<season>_s2_<scene>_p<patch>.tif   (13 S2 bands)\n"
            "SEN12MS/ROIs<id>_<season>/lc_<scene>/...   (optional land cover, not read)\n"
            "(the mediaTUM tarballs ROIs1158_spring_s1.tar.gz etc. extracted in place)",
            url="https://mediatum.ub.tum.de/1474000",
            reader="SEN12MSPairs(root)",
            used_by=("01_sar_alignment", "02_qsacl_pretraining"),
            paper_use="co-registered optical/SAR pairs: SAR-optical alignment; multi-modal pre-training",
            markers=(("ROIs*/s1_*/*_s1_*_p*.tif",), ("ROIs*/s2_*/*_s2_*_p*.tif",)),
        ),
        DatasetEntry(
            name="rrsisd",
            folder="rrsisd",
            title="RRSIS-D (Liu et al., CVPR 2024)",
            layout="rrsisd/refs(unc).p\nrrsisd/instances.json\n"
            "rrsisd/JPEGImages/*.jpg   (or rrsisd/images/, or RMSIN's images/rrsisd/JPEGImages/ "
            "beside rrsisd/)",
            url="https://github.com/Lsan2401/RMSIN",
            reader="RRSISD(root, split)",
            used_by=("04_rs2sam2",),
            paper_use="RS2-SAM2 training and evaluation",
            markers=(("refs(unc).p",), ("instances.json",),
                     ("JPEGImages", "images", "../images/rrsisd/JPEGImages")),
        ),
        DatasetEntry(
            name="refsegrs",
            folder="RefSegRS",
            title="RefSegRS (Yuan et al., TGRS 2024)",
            layout="RefSegRS/images/<id>.tif\nRefSegRS/masks/<id>.tif\n"
            "RefSegRS/output_phrase_{train,val,test}.txt   ('<id> phrase ...' per line)",
            url="https://github.com/zhu-xlab/rrsis",
            reader="RefSegRS(root, split)",
            used_by=("04_rs2sam2",),
            paper_use="RS2-SAM2 second benchmark",
            markers=(("images/*",), ("masks/*",), ("output_phrase_test.txt",)),
        ),
    )
}


def get_dataset_entry(name: str) -> DatasetEntry:
    """The catalog entry called ``name``; a ``ValueError`` lists the known names otherwise."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; the catalog knows: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_root(data_root: str | Path | None) -> Path:
    """``data_root`` as a Path (``$RSLAB_DATA_ROOT`` when it is empty); errors say how to set it."""
    if data_root is None or (isinstance(data_root, str) and not data_root.strip()):
        env = os.environ.get(DATA_ROOT_ENV, "").strip()
        if not env:
            raise FileNotFoundError(
                "no data_root given: pass the folder holding the datasets under their official names "
                f"(e.g. `rslab notebooks run --profile full -p data_root=/data/rs`) or set ${DATA_ROOT_ENV}"
            )
        data_root = env
    if not isinstance(data_root, (str, Path)):
        raise ValueError(f"data_root must be a folder path, got {type(data_root).__name__} {data_root!r}")
    return Path(data_root).expanduser()


def _matches(folder: Path, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return next(iter(folder.glob(pattern)), None) is not None
    return (folder / pattern).exists()


def _missing_markers(entry: DatasetEntry, folder: Path) -> list[str]:
    return [" or ".join(alts) for alts in entry.markers if not any(_matches(folder, p) for p in alts)]


def _problem(entry: DatasetEntry, root: Path) -> str | None:
    """Why ``entry`` is not usable under ``root`` (None when it is)."""
    folder = root / entry.folder
    if not folder.is_dir():
        hint = ""
        if root.is_dir() and not _missing_markers(entry, root):
            hint = (f" ({root} itself looks like the {entry.name} folder: data_root must be the folder "
                    f"ABOVE it, holding {entry.folder}/)")
        else:
            near = [p.name for p in root.iterdir() if p.is_dir() and p.name.lower() == entry.folder.lower()] \
                if root.is_dir() else []
            if near:
                hint = f" (found {near[0]!r}: the folder name is case-sensitive, rename it to {entry.folder!r})"
        return f"folder {folder} not found{hint}"
    missing = _missing_markers(entry, folder)
    if missing:
        return f"{folder} lacks {'; '.join(missing)}"
    return None


def _describe(entry: DatasetEntry, problem: str) -> str:
    layout = "\n".join(f"      {line}" for line in entry.layout.splitlines())
    return f"- {entry.name}: {problem}\n    expected layout under data_root:\n{layout}\n    get it from: {entry.url}"


def find_dataset(name: str, data_root: str | Path | None) -> Path:
    """``data_root/<official folder>`` of dataset ``name`` after checking its layout.

    Raises ``ValueError`` for an unknown name and ``FileNotFoundError`` naming the expected layout
    and the download address when the folder or a part of its layout is missing."""
    entry = get_dataset_entry(name)
    root = resolve_data_root(data_root)
    problem = _problem(entry, root)
    if problem is not None:
        raise FileNotFoundError(f"dataset {name!r} is not usable under data_root={root}:\n{_describe(entry, problem)}")
    return root / entry.folder


def require_datasets(names: Iterable[str], data_root: str | Path | None) -> dict[str, Path]:
    """``{name: folder}`` for every dataset in ``names``; ONE ``FileNotFoundError`` lists all that
    are missing (layout and download address of each). Unknown names are a ``ValueError``."""
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))
    entries = [get_dataset_entry(n) for n in names]
    root = resolve_data_root(data_root)
    found: dict[str, Path] = {}
    problems: list[str] = []
    for entry in entries:
        problem = _problem(entry, root)
        if problem is None:
            found[entry.name] = root / entry.folder
        else:
            problems.append(_describe(entry, problem))
    if problems:
        raise FileNotFoundError(
            f"{len(problems)} of {len(entries)} dataset(s) missing under data_root={root}:\n" + "\n".join(problems)
        )
    return found


def open_dataset(name: str, data_root: str | Path | None, split: str | None = "train", **kwargs: Any) -> Sequence:
    """The reader of ``name``'s ``split`` (a Sequence of :class:`rslab.data.sample.Sample`).

    Splits: loveda/potsdam/vaihingen ``train``/``val``; sen1floods11 ``train``/``valid``/``test``;
    rrsisd ``train``/``val``/``test``; refsegrs ``train``/``val``/``test``; sen12ms and deepglobe
    have no official split (``split`` must be None or "train", which means all of it)."""
    if name in ("sen12ms", "deepglobe") and split not in (None, "train"):
        raise ValueError(f"{name} has no official split {split!r}; pass split=None (the whole set)")
    folder = find_dataset(name, data_root)
    if name in ("loveda", "potsdam", "vaihingen"):
        return MMSegFolder(folder, split, name, **kwargs)
    if name == "sen1floods11":
        return Sen1Floods11Folder(folder, split or "train", **kwargs)
    if name == "rrsisd":
        return RRSISD(folder, split or "train", **kwargs)
    if name == "refsegrs":
        return RefSegRS(folder, split or "train", **kwargs)
    if name == "sen12ms":
        return SEN12MSPairs(folder, **kwargs)
    return DeepGlobeFolder(folder, **kwargs)


def datasets_table() -> str:
    """Markdown table of the catalog (name, folder under data_root, reader, notebooks, source)."""
    rows = ["| dataset | folder under `data_root` | reader | used by | get it from |", "|---|---|---|---|---|"]
    for e in DATASETS.values():
        rows.append(f"| {e.name} | `{e.folder}/` | `{e.reader}` | {', '.join(e.used_by)} | {e.url} |")
    return "\n".join(rows)


def require_inputs(weights=(), datasets=(), weights_dir=None, data_root=None, allow_download: bool = False):
    """``(weights paths, dataset folders)`` for a notebook's full profile, or ONE ``FileNotFoundError``
    listing every missing weights file (see :func:`rslab.weights.require`) AND every missing dataset:
    a full-profile run stops in seconds with the complete list instead of failing one item at a time."""
    weights, datasets = list(weights), list(datasets)
    problems: list[str] = []
    found_w: dict[str, Path] = {}
    found_d: dict[str, Path] = {}
    if weights:
        from rslab.weights import require

        try:
            found_w = require(weights, weights_dir, allow_download=allow_download)
        except FileNotFoundError as exc:
            problems.append(str(exc))
    if datasets:
        try:
            found_d = require_datasets(datasets, data_root)
        except FileNotFoundError as exc:
            problems.append(str(exc))
    if problems:
        raise FileNotFoundError("missing inputs of the full profile:\n\n" + "\n\n".join(problems))
    return found_w, found_d
