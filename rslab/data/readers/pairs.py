"""Folder readers for co-registered optical/SAR sets and whole-folder scene sets.

- :class:`SEN12MSPairs`: SEN12MS (Schmitt et al., 2019) patches, Sentinel-1 (VV, VH dB) + Sentinel-2
  (13 bands), paired by the ``_s1_`` / ``_s2_`` naming convention of the release.
- :class:`Sen1Floods11Folder`: one official split of Sen1Floods11's hand-labelled chips (the
  ``flood_{train,valid,test}_data.csv`` lists), each read by :func:`read_sen1floods11`.
- :class:`DeepGlobeFolder`: every ``*_sat.jpg`` + ``*_mask.png`` of a DeepGlobe Land Cover folder.

All are lazy ``Sequence`` s of :class:`~rslab.data.sample.Sample`: an item is read from disk when it
is indexed, so a full dataset never sits in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..sample import Sample
from ._io import check_same_size, read_tiff
from .scenes import S2_BANDS, S2_REFLECTANCE_SCALE, read_deepglobe, read_sen1floods11


class _LazyFolder(Sequence):
    def __len__(self) -> int:
        return len(self.items)

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items in {self.root}")
        return int(index) % len(self)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


class SEN12MSPairs(_LazyFolder):
    """SEN12MS Sentinel-1/Sentinel-2 pairs under ``root`` (the ``SEN12MS`` folder).

    Layout of the release: ``ROIs<id>_<season>/s1_<scene>/ROIs<id>_<season>_s1_<scene>_p<patch>.tif``
    with the Sentinel-2 twin at the same path with ``s1`` replaced by ``s2``. Each Sample has
    ``sar`` (2, 256, 256) float32 dB (VV, VH), ``optical`` (13, H, W) float32 TOA reflectance
    (digital numbers / 10000, :data:`S2_BANDS` order) and ``meta["source"]``. ``limit`` keeps the
    first N pairs (sorted by path), which is how the notebooks take a documented subset.
    """

    def __init__(self, root: str | Path, limit: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"SEN12MS folder not found: {self.root}")
        if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        s1_files = sorted(self.root.glob("ROIs*/s1_*/*_s1_*_p*.tif"))
        if not s1_files:
            raise FileNotFoundError(
                f"no Sentinel-1 patches ROIs*/s1_*/*_s1_*_p*.tif under {self.root}; extract the SEN12MS "
                "tarballs (ROIs1158_spring_s1.tar.gz, ..._s2.tar.gz) into it"
            )
        pairs, unpaired = [], []
        for s1 in s1_files:
            s2 = s1.parent.parent / s1.parent.name.replace("s1_", "s2_", 1) / s1.name.replace("_s1_", "_s2_", 1)
            (pairs if s2.is_file() else unpaired).append((s1, s2))
        if unpaired:
            raise FileNotFoundError(
                f"{len(unpaired)} SEN12MS Sentinel-1 patch(es) have no Sentinel-2 twin, e.g. {unpaired[0][0]} "
                f"-> {unpaired[0][1]}; extract the matching *_s2.tar.gz"
            )
        self.items: list[tuple[Path, Path]] = pairs[:limit] if limit else pairs

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        s1_path, s2_path = self.items[self._check_index(index)]
        sar, _ = read_tiff(s1_path)
        if sar.shape[0] != 2 or not np.issubdtype(sar.dtype, np.floating):
            raise ValueError(f"{s1_path}: SEN12MS S1 patches hold 2 float bands (VV, VH dB), got "
                             f"{sar.shape[0]} band(s) of {sar.dtype}")
        s2, _ = read_tiff(s2_path)
        if s2.shape[0] != len(S2_BANDS):
            raise ValueError(f"{s2_path}: SEN12MS S2 patches hold 13 bands, got {s2.shape[0]}")
        check_same_size(sar.shape[1:], s2.shape[1:], s1_path, s2_path)
        return Sample(
            optical=s2.astype(np.float32) / S2_REFLECTANCE_SCALE,
            sar=sar.astype(np.float32),
            meta={"source": str(s1_path), "optical_source": str(s2_path), "dataset": "sen12ms",
                  "gsd_m": 10.0, "bands": S2_BANDS, "sar_bands": ("VV", "VH")},
        )

    def __repr__(self) -> str:
        return f"SEN12MSPairs(root={str(self.root)!r}, n={len(self)})"


SEN1FLOODS11_SPLITS = ("train", "valid", "test")


class Sen1Floods11Folder(_LazyFolder):
    """One official split of Sen1Floods11's hand-labelled chips.

    ``root`` is the ``sen1floods11`` folder (a copy of the ``gs://sen1floods11`` bucket): the split
    list ``v1.1/splits/flood_handlabeled/flood_<split>_data.csv`` names ``<chip>_S1Hand.tif,
    <chip>_LabelHand.tif`` per row; the chips live in ``v1.1/data/flood_events/HandLabeled/
    {S1Hand,S2Hand,LabelHand}/``. ``split``: ``train``, ``valid`` (``val`` accepted) or ``test``.
    Items are :func:`read_sen1floods11` Samples (``sar``, 13-band ``optical``, ``labels``).
    """

    def __init__(self, root: str | Path, split: str = "test", with_optical: bool = True) -> None:
        self.root = Path(root)
        split = "valid" if split == "val" else split
        if split not in SEN1FLOODS11_SPLITS:
            raise ValueError(f"Sen1Floods11 split must be one of {SEN1FLOODS11_SPLITS} (or 'val'), got {split!r}")
        self.split = split
        base = self.root / "v1.1"
        listing = base / "splits" / "flood_handlabeled" / f"flood_{split}_data.csv"
        if not listing.is_file():
            raise FileNotFoundError(f"Sen1Floods11 split list not found: {listing}")
        hand = base / "data" / "flood_events" / "HandLabeled"
        self.items: list[dict[str, Path]] = []
        with listing.open(newline="") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                row = [c.strip() for c in row if c.strip()]
                if not row:
                    continue
                if not row[0].endswith("_S1Hand.tif"):
                    raise ValueError(f"{listing} line {line_no}: expected '<chip>_S1Hand.tif,...', got {row}")
                chip = row[0][: -len("_S1Hand.tif")]
                paths = {"s1_path": hand / "S1Hand" / f"{chip}_S1Hand.tif",
                         "label_path": hand / "LabelHand" / f"{chip}_LabelHand.tif"}
                if with_optical:
                    paths["s2_path"] = hand / "S2Hand" / f"{chip}_S2Hand.tif"
                absent = [str(p) for p in paths.values() if not p.is_file()]
                if absent:
                    raise FileNotFoundError(f"{listing} line {line_no} names chip {chip!r}, but {absent[0]} is missing")
                self.items.append(paths)
        if not self.items:
            raise ValueError(f"{listing} lists no chips")

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return read_sen1floods11(**self.items[self._check_index(index)])

    def __repr__(self) -> str:
        return f"Sen1Floods11Folder(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


class DeepGlobeFolder(_LazyFolder):
    """Every labelled DeepGlobe Land Cover scene in ``root/<split>`` (``*_sat.jpg`` + ``*_mask.png``)."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        folder = self.root / split
        sats = sorted(folder.glob("*_sat.jpg"))
        if not sats:
            raise FileNotFoundError(f"no *_sat.jpg in {folder}")
        self.items = []
        for sat in sats:
            mask = sat.with_name(sat.name[: -len("_sat.jpg")] + "_mask.png")
            if not mask.is_file():
                raise FileNotFoundError(f"{sat} has no mask {mask.name} beside it")
            self.items.append((sat, mask))

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return read_deepglobe(*self.items[self._check_index(index)])


#: Sentinel-2 bands B4, B3, B2, B8 (ids in :data:`S2_BANDS`): the RGB + NIR that the synthetic world's
#: optical images and the project's encoders use.
S2_RGBN: tuple[int, ...] = (3, 2, 1, 7)


def crop_pair(sample: Sample, size: int, rng: np.random.Generator | None = None,
              optical_bands: tuple[int, ...] | None = S2_RGBN) -> dict[str, np.ndarray | None]:
    """A ``size x size`` window of a co-registered sample: ``{"optical", "sar", "labels"}``.

    Centre window without ``rng``, a random one with it. ``optical`` keeps ``optical_bands``
    (default B4, B3, B2, B8 of 13-band Sentinel-2; None keeps all) clipped to [0, 1] (TOA reflectance
    above 1 is cloud glare); ``sar`` stays in dB with NaN nodata; absent fields are None.
    """
    h, w = sample.shape
    if not isinstance(size, (int, np.integer)) or not 8 <= size <= min(h, w):
        raise ValueError(f"size must be an int in [8, {min(h, w)}] for a {h}x{w} sample, got {size!r}")
    if rng is None:
        y, x = (h - size) // 2, (w - size) // 2
    else:
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    win = (slice(y, y + size), slice(x, x + size))
    optical = None
    if sample.optical is not None:
        optical = sample.optical if optical_bands is None else sample.optical[list(optical_bands)]
        optical = np.clip(optical[(slice(None), *win)], 0.0, 1.0).astype(np.float32)
    return {
        "optical": optical,
        "sar": None if sample.sar is None else sample.sar[(slice(None), *win)].astype(np.float32),
        "labels": None if sample.labels is None else sample.labels[win],
    }
