"""Tiny datasets in each catalog entry's official layout, for tests and for trying the full profile.

``write_tiny_dataset("loveda", tmp / "data")`` writes ``tmp/data/loveDA/img_dir/train/0.png`` ...
with the file formats, dtypes, band counts and label encodings of the release, so the catalog and
the real readers find and read them exactly as they would the downloaded dataset. Pixels come from
a random block-wise class map (the optical colour and the SAR backscatter follow the class, with
noise), so a model can learn something from them, but they are not real imagery.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from .catalog import DATASETS, get_dataset_entry
from .readers.labels import DEEPGLOBE_COLOURS, ISPRS_COLOURS

_SPLITS = ("train", "val")


def _class_map(rng: np.random.Generator, size: int, num_classes: int, block: int = 8) -> np.ndarray:
    cells = -(-size // block)
    coarse = rng.integers(0, num_classes, (cells, cells))
    return np.kron(coarse, np.ones((block, block), dtype=coarse.dtype))[:size, :size]


def _rgb(rng: np.random.Generator, classes: np.ndarray, num_classes: int) -> np.ndarray:
    palette = rng.integers(20, 235, (num_classes, 3))
    img = palette[classes] + rng.normal(0, 12, classes.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)  # (H, W, 3)


def _sar_db(rng: np.random.Generator, classes: np.ndarray, num_classes: int) -> np.ndarray:
    level = rng.uniform(-22, -4, (num_classes, 2))
    sar = level[classes].transpose(2, 0, 1) + rng.normal(0, 1.5, (2,) + classes.shape)
    return sar.astype(np.float32)  # (2, H, W) dB, VV then VH


def _s2(rng: np.random.Generator, classes: np.ndarray, num_classes: int, dtype) -> np.ndarray:
    level = rng.uniform(200, 4000, (num_classes, 13))
    s2 = level[classes].transpose(2, 0, 1) + rng.normal(0, 80, (13,) + classes.shape)
    return np.clip(s2, 1, 10000).astype(dtype)


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _save_tif(path: Path, arr: np.ndarray, **kw) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, **kw)


def _mmseg(folder: Path, rng, n: int, size: int, encoding: str) -> None:
    for split in _SPLITS:
        for i in range(n):
            if encoding == "loveda":
                classes = _class_map(rng, size, 7)
                raw = (classes + 1).astype(np.uint8)  # 1..7 classes, 0 no-data
                raw[:2, :2] = 0
                _save_png(folder / "img_dir" / split / f"{i}.png", _rgb(rng, classes, 7))
                _save_png(folder / "ann_dir" / split / f"{i}.png", raw)
            else:  # ISPRS: the official RGB colour code
                classes = _class_map(rng, size, len(ISPRS_COLOURS))
                colours = np.array(ISPRS_COLOURS, np.uint8)[classes]
                stem = f"{encoding}_{i}"
                _save_png(folder / "img_dir" / split / f"{stem}.png", _rgb(rng, classes, len(ISPRS_COLOURS)))
                _save_png(folder / "ann_dir" / split / f"{stem}.png", colours)


def _deepglobe(folder: Path, rng, n: int, size: int) -> None:
    from PIL import Image

    for i in range(n):
        classes = _class_map(rng, size, len(DEEPGLOBE_COLOURS))
        (folder / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(rng, classes, len(DEEPGLOBE_COLOURS))).save(folder / "train" / f"{100 + i}_sat.jpg",
                                                                        quality=95)
        _save_png(folder / "train" / f"{100 + i}_mask.png", np.array(DEEPGLOBE_COLOURS, np.uint8)[classes])


def _sen1floods11(folder: Path, rng, n: int, size: int) -> None:
    hand = folder / "v1.1" / "data" / "flood_events" / "HandLabeled"
    splits = folder / "v1.1" / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        rows = []
        for i in range(n):
            chip = f"Tiny{split.capitalize()}_{1000 + i}"
            classes = _class_map(rng, size, 2)
            sar = _sar_db(rng, classes, 2)
            sar[:, classes == 1] -= 8.0  # water is dark in SAR
            label = classes.astype(np.int16)
            label[0, :3] = -1
            _save_tif(hand / "S1Hand" / f"{chip}_S1Hand.tif", sar, photometric="minisblack")
            _save_tif(hand / "S2Hand" / f"{chip}_S2Hand.tif", _s2(rng, classes, 2, np.int16),
                      photometric="minisblack")
            _save_tif(hand / "LabelHand" / f"{chip}_LabelHand.tif", label, photometric="minisblack")
            rows.append(f"{chip}_S1Hand.tif,{chip}_LabelHand.tif")
        (splits / f"flood_{split}_data.csv").write_text("\n".join(rows) + "\n")


def _sen12ms(folder: Path, rng, n: int, size: int) -> None:
    for season, roi in (("spring", "ROIs1158"), ("fall", "ROIs1970")):
        for i in range(max(1, n // 2) if season == "fall" else n):
            scene, patch = 7 + i % 2, 30 + i
            classes = _class_map(rng, size, 6)
            base = folder / f"{roi}_{season}"
            _save_tif(base / f"s1_{scene}" / f"{roi}_{season}_s1_{scene}_p{patch}.tif", _sar_db(rng, classes, 6),
                      photometric="minisblack")
            _save_tif(base / f"s2_{scene}" / f"{roi}_{season}_s2_{scene}_p{patch}.tif",
                      _s2(rng, classes, 6, np.uint16), photometric="minisblack")
            lc = np.stack([classes + 1] * 4).astype(np.uint16)
            _save_tif(base / f"lc_{scene}" / f"{roi}_{season}_lc_{scene}_p{patch}.tif", lc, photometric="minisblack")


_RRSISD_CATEGORIES = ("airplane", "ship", "vehicle", "storage tank", "bridge")


def _box_polygon(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]


def _rrsisd(folder: Path, rng, n: int, size: int) -> None:
    images, annotations, refs = [], [], []
    ann_id = ref_id = sent_id = 0
    for split in ("train", "val", "test"):
        for i in range(n):
            image_id = len(images) + 1
            name = f"{image_id:05d}.jpg"
            classes = _class_map(rng, size, 3)
            from PIL import Image

            (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(rng, classes, 3)).save(folder / "JPEGImages" / name, quality=95)
            images.append({"id": image_id, "file_name": name, "height": size, "width": size})
            for side, (x0, x1) in (("left", (1, size // 2 - 2)), ("right", (size // 2 + 1, size - 2))):
                ann_id += 1
                cat = int(rng.integers(0, len(_RRSISD_CATEGORIES)))
                y0 = int(rng.integers(0, size // 2))
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat + 1, "iscrowd": 0,
                                    "segmentation": _box_polygon(x0, y0, x1, y0 + size // 3),
                                    "bbox": [x0, y0, x1 - x0, size // 3]})
                ref_id += 1
                sent_id += 1
                text = f"the {_RRSISD_CATEGORIES[cat]} on the {side}"
                refs.append({"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "split": split,
                             "category_id": cat + 1, "file_name": name,
                             "sentences": [{"raw": text, "sent": text, "sent_id": sent_id,
                                            "tokens": text.split()}]})
    instances = {"images": images, "annotations": annotations,
                 "categories": [{"id": i + 1, "name": c} for i, c in enumerate(_RRSISD_CATEGORIES)]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps(instances))
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))


def _refsegrs(folder: Path, rng, n: int, size: int) -> None:
    phrases = ("road", "vehicle", "building along the road", "low vegetation")
    for split in ("train", "val", "test"):
        lines = []
        for i in range(n):
            image_id = f"{split}{i}"
            classes = _class_map(rng, size, 2)
            _save_tif(folder / "images" / f"{image_id}.tif", _rgb(rng, classes, 2), photometric="rgb")
            _save_tif(folder / "masks" / f"{image_id}.tif", (classes * 255).astype(np.uint8))
            lines.append(f"{image_id} {phrases[i % len(phrases)]}")
        (folder / f"output_phrase_{split}.txt").write_text("\n".join(lines) + "\n")


def write_tiny_dataset(name: str, data_root: str | Path, seed: int = 0, n: int = 4, size: int = 64) -> Path:
    """Write a tiny copy of dataset ``name`` under ``data_root/<official folder>``; returns that folder.

    ``n`` items per split (scenes, chips, pairs or images with two expressions each) of ``size`` px.
    Deterministic by ``seed``. Refuses a folder that already exists (never overwrites real data)."""
    entry = get_dataset_entry(name)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 px, got {size!r}")
    folder = Path(data_root) / entry.folder
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; write tiny datasets into an empty data_root only")
    rng = np.random.default_rng(seed)
    if name in ("loveda", "potsdam", "vaihingen"):
        _mmseg(folder, rng, n, size, name)
    else:
        {"deepglobe": _deepglobe, "sen1floods11": _sen1floods11, "sen12ms": _sen12ms, "rrsisd": _rrsisd,
         "refsegrs": _refsegrs}[name](folder, rng, n, size)
    return folder


def write_tiny_catalog(data_root: str | Path, names=None, seed: int = 0, n: int = 4, size: int = 64) -> dict[str, Path]:
    """:func:`write_tiny_dataset` for several (default: all) catalog entries."""
    return {name: write_tiny_dataset(name, data_root, seed=seed + i, n=n, size=size)
            for i, name in enumerate(names or DATASETS)}
