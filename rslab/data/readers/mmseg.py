"""mmsegmentation-style folders: ``img_dir/[split/]*`` beside ``ann_dir/[split/]*``.

This is the layout mmsegmentation's converters write for LoveDA, ISPRS Potsdam and
ISPRS Vaihingen (and the one ``real_samples/loveda`` uses). Images and masks pair
by file stem: ``img_dir/train/42.png`` <-> ``ann_dir/train/42.png``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ..sample import Sample
from ._io import IMAGE_SUFFIXES, check_same_size, read_mask, read_optical
from .checks import check_bands, mask_to_index
from .labels import ISPRS_CLASSES, ISPRS_COLOURS, LOVEDA_CLASSES, decode_isprs, decode_loveda

#: encoding name -> (class names, label decoder, ground sampling distance in m, band names)
ENCODINGS = {
    "loveda": (LOVEDA_CLASSES, decode_loveda, 0.3, ("R", "G", "B")),
    "potsdam": (ISPRS_CLASSES, decode_isprs, 0.05, ("R", "G", "B")),
    # mmseg's Vaihingen tiles are the false-colour IRRG orthophotos (NIR, R, G).
    "vaihingen": (ISPRS_CLASSES, decode_isprs, 0.09, ("NIR", "R", "G")),
}
#: encoding name -> {band count: band names} the images may have (anything else is refused).
#: Potsdam's 4-band tiles are the official ``4_Ortho_RGBIR`` (R, G, B, NIR).
IMAGE_BANDS = {
    "loveda": {3: ("R", "G", "B")},
    "potsdam": {3: ("R", "G", "B"), 4: ("R", "G", "B", "NIR")},
    "vaihingen": {3: ("NIR", "R", "G")},
}
#: encoding name -> (mask form the encoding allows, colour table for colour masks)
MASK_FORMS = {
    "loveda": ("index", ()),
    "potsdam": ("either", ISPRS_COLOURS),
    "vaihingen": ("either", ISPRS_COLOURS),
}


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    """Image files of ``folder`` by stem; two files with one stem (``a.png`` + ``a.tif``) are an error."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    out: dict[str, Path] = {}
    dups: dict[str, list[str]] = {}
    for path in files:
        if path.stem in out:
            dups.setdefault(path.stem, [out[path.stem].name]).append(path.name)
        else:
            out[path.stem] = path
    if dups:
        shown = "; ".join(f"{stem}: {', '.join(names)}" for stem, names in list(dups.items())[:5])
        raise ValueError(
            f"{len(dups)} {what} stem(s) in {folder} have more than one file ({shown}); pairing by stem would "
            "depend on directory order. Keep one file per stem."
        )
    return out


class MMSegFolder(Sequence):
    """Image/mask pairs of an mmseg-style folder, read lazily as :class:`Sample`.

    Args:
        root: folder holding ``img_dir/`` and ``ann_dir/``.
        split: optional subfolder (``"train"``, ``"val"``, ``"test"``) under both.
        encoding: how masks are coded, which fixes the class ids:

            - ``"loveda"``: raw LoveDA PNG, 0 no-data -> 255, 1..7 -> 0..6
              (:data:`LOVEDA_CLASSES`: background, building, road, water, barren,
              forest, agriculture).
            - ``"potsdam"`` / ``"vaihingen"``: either the official RGB colour code
              (impervious (255,255,255), building (0,0,255), low vegetation
              (0,255,255), tree (0,255,0), car (255,255,0), clutter (255,0,0); black
              boundary -> 255) or mmseg's converted single-band PNG (0 ignore, 1..6
              classes; we apply mmseg's ``reduce_zero_label`` so ids are 0..5 and 0 ->
              255). The form is detected per file from its band count.
              Ids follow :data:`ISPRS_CLASSES`.
        with_labels: ``False`` for unlabelled splits (LoveDA test): ``ann_dir`` is not read.

    Images must have the encoding's band count (:data:`IMAGE_BANDS`: 3, or 4 = RGB+NIR for
    Potsdam). Masks are decoded the way the file says (:func:`.checks.mask_to_index`): palette
    PNGs by their palette colours when these are the dataset's, by index otherwise; grey masks
    saved as three identical channels as index masks (with a warning). Two files with one stem in
    ``img_dir`` or ``ann_dir``, images without masks and masks without images are errors.

    Each Sample has ``optical`` (C, H, W) float32 in [0, 1] (8-bit / 255, see
    :func:`.checks.optical_to_unit` for other dtypes), ``labels`` (H, W) uint8, and ``meta``
    with ``source``, ``label_source``, ``dataset``,
    ``class_names``, ``gsd_m`` and ``bands``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        encoding: str = "loveda",
        with_labels: bool = True,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}.")
        self.root = Path(root)
        self.split = split
        self.encoding = encoding
        self.class_names, self._decode, self.gsd_m, self.bands = ENCODINGS[encoding]
        self.with_labels = with_labels

        img_dir = self.root / "img_dir"
        ann_dir = self.root / "ann_dir"
        if split is not None:
            img_dir, ann_dir = img_dir / split, ann_dir / split
        if not img_dir.is_dir():
            raise FileNotFoundError(
                f"image folder not found: {img_dir}; an mmseg-style root holds img_dir/[split/] and ann_dir/[split/]."
            )
        by_image_stem = _by_stem(img_dir, "image")
        images = [by_image_stem[k] for k in sorted(by_image_stem)]
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}.")
        self.images: list[Path] = images
        self.masks: list[Path | None] = [None] * len(images)
        if with_labels:
            if not ann_dir.is_dir():
                raise FileNotFoundError(
                    f"mask folder not found: {ann_dir}; pass with_labels=False for an unlabelled split."
                )
            by_stem = _by_stem(ann_dir, "mask")
            missing = [p.name for p in images if p.stem not in by_stem]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) in {img_dir} have no mask in {ann_dir} (same file stem): {missing[:5]}"
                )
            orphans = sorted(by_stem[k].name for k in set(by_stem) - set(by_image_stem))
            if orphans:
                raise FileNotFoundError(
                    f"{len(orphans)} mask(s) in {ann_dir} have no image in {img_dir} (same file stem): {orphans[:5]}; "
                    "remove them or add their images."
                )
            self.masks = [by_stem[p.stem] for p in images]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images in {self.root}")
        image_path, mask_path = self.images[index], self.masks[index]
        optical = read_optical(image_path)
        allowed = IMAGE_BANDS[self.encoding]
        check_bands(optical.shape[0], sorted(allowed), image_path, f"{self.encoding} image",
                    allowed[min(allowed)])
        labels = None
        if mask_path is not None:
            raw, palette = read_mask(mask_path)
            check_same_size(optical.shape[1:], raw.shape[:2], image_path, mask_path)
            kind, colours = MASK_FORMS[self.encoding]
            raw, _form = mask_to_index(raw, mask_path, kind=kind, palette=palette, colours=colours)
            labels = self._decode(raw, mask_path)
        return Sample(
            optical=optical,
            labels=labels,
            meta={
                "source": str(image_path),
                "label_source": str(mask_path) if mask_path else None,
                "dataset": self.encoding,
                "class_names": self.class_names,
                "gsd_m": self.gsd_m,
                "bands": allowed[optical.shape[0]],
            },
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"MMSegFolder(root={str(self.root)!r}, split={self.split!r}, encoding={self.encoding!r}, n={len(self)})"
