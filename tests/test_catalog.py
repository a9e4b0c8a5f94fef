"""The dataset catalog: one data_root, official folder names, one error listing what is missing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rslab.data.catalog import (
    DATA_ROOT_ENV,
    DATASETS,
    datasets_table,
    find_dataset,
    get_dataset_entry,
    open_dataset,
    require_datasets,
)
from rslab.data.catalog_testing import write_tiny_catalog, write_tiny_dataset

FIRST_SPLIT = {"sen1floods11": "test", "rrsisd": "test", "refsegrs": "test", "sen12ms": None, "deepglobe": None}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_catalog(root, n=2, size=32)
    return root


def test_catalog_names_the_contract_datasets():
    for name in ("loveda", "potsdam", "vaihingen", "deepglobe", "sen1floods11", "rrsisd", "refsegrs", "sen12ms"):
        entry = get_dataset_entry(name)
        assert entry.name == name and entry.folder and entry.layout and entry.url and entry.reader
        assert entry.used_by and all(s[:2].isdigit() for s in entry.used_by)
        assert f"`{entry.folder}/`" in datasets_table()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_found_and_read_from_one_data_root(tiny_root, name):
    folder = find_dataset(name, tiny_root)
    assert folder == tiny_root / DATASETS[name].folder
    data = open_dataset(name, tiny_root, FIRST_SPLIT.get(name, "train"))
    assert len(data) >= 2
    sample = data[0]
    h, w = sample.shape
    assert (h, w) == (32, 32)
    if name in ("sen12ms", "sen1floods11"):
        assert sample.sar.shape == (2, 32, 32) and sample.optical.shape == (13, 32, 32)
        assert np.isfinite(sample.sar).all() and 0 < sample.optical.mean() < 1
    if name in ("rrsisd", "refsegrs"):
        expr = sample.referring[0]
        assert expr.text and expr.mask.any() and not expr.mask.all()
    if name in ("loveda", "potsdam", "vaihingen", "deepglobe", "sen1floods11"):
        valid = sample.labels[sample.labels != 255]
        assert valid.size > 0 and valid.max() < len(sample.meta["class_names"])


def test_require_lists_every_missing_dataset_once(tmp_path):
    write_tiny_dataset("loveda", tmp_path, n=1, size=16)
    with pytest.raises(FileNotFoundError) as err:
        require_datasets(["loveda", "sen12ms", "sen1floods11", "rrsisd"], tmp_path)
    text = str(err.value)
    assert "3 of 4 dataset(s) missing" in text
    for name in ("sen12ms", "sen1floods11", "rrsisd"):
        assert f"- {name}:" in text and DATASETS[name].url in text
    assert "- loveda:" not in text
    assert "ROIs<id>_<season>/s1_<scene>" in text  # the layout it expected
    assert require_datasets(["loveda"], tmp_path) == {"loveda": tmp_path / "loveDA"}


def test_partial_layout_names_the_missing_part(tmp_path):
    folder = write_tiny_dataset("potsdam", tmp_path, n=1, size=16)
    shutil.rmtree(folder / "ann_dir" / "val")
    with pytest.raises(FileNotFoundError, match=r"lacks ann_dir/val/\*"):
        find_dataset("potsdam", tmp_path)


def test_data_root_that_is_the_dataset_folder_itself_gets_a_hint(tmp_path):
    folder = write_tiny_dataset("rrsisd", tmp_path, n=1, size=16)
    with pytest.raises(FileNotFoundError, match="must be the folder ABOVE it"):
        find_dataset("rrsisd", folder)
    assert find_dataset("rrsisd", tmp_path) == folder


def test_wrong_case_folder_is_named(tmp_path):
    folder = write_tiny_dataset("loveda", tmp_path, n=1, size=16)
    folder.rename(tmp_path / "LoveDA")
    with pytest.raises(FileNotFoundError, match="case-sensitive"):
        find_dataset("loveda", tmp_path)


def test_bad_names_and_roots(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="the catalog knows: loveda"):
        find_dataset("lovedaa", tmp_path)
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="-p data_root="):
        require_datasets(["loveda"], None)
    write_tiny_dataset("refsegrs", tmp_path, n=1, size=16)
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert find_dataset("refsegrs", "") == tmp_path / "RefSegRS"
    with pytest.raises(ValueError, match="data_root must be a folder path"):
        find_dataset("refsegrs", 3)
    with pytest.raises(FileExistsError):
        write_tiny_dataset("refsegrs", tmp_path)
    with pytest.raises(ValueError, match="no official split"):
        open_dataset("sen12ms", tmp_path, "val")


def test_sen12ms_unpaired_patch_is_refused(tmp_path):
    from rslab.data.readers.pairs import SEN12MSPairs

    folder = write_tiny_dataset("sen12ms", tmp_path, n=2, size=16)
    assert len(SEN12MSPairs(folder, limit=1)) == 1
    next(folder.glob("ROIs*/s2_*/*.tif")).unlink()
    with pytest.raises(FileNotFoundError, match="no Sentinel-2 twin"):
        SEN12MSPairs(folder)


def test_sen1floods11_split_list_naming_a_missing_chip(tmp_path):
    from rslab.data.readers.pairs import Sen1Floods11Folder

    folder = write_tiny_dataset("sen1floods11", tmp_path, n=1, size=16)
    assert len(Sen1Floods11Folder(folder, "val")) == 1
    next(folder.glob("v1.1/data/flood_events/HandLabeled/LabelHand/TinyTest_*")).unlink()
    with pytest.raises(FileNotFoundError, match="names chip 'TinyTest_1000'"):
        Sen1Floods11Folder(folder, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        Sen1Floods11Folder(folder, "holdout")


def test_cli_lists_found_and_missing_datasets(tmp_path, capsys):
    from rslab.cli import main

    write_tiny_dataset("sen12ms", tmp_path, n=1, size=16)
    assert main(["notebooks", "datasets", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"sen12ms       found    {tmp_path / 'SEN12MS'}" in out
    assert "loveda        MISSING" in out and DATASETS["loveda"].url in out
    assert f"1 of {len(DATASETS)} catalog datasets" in out
