"""rslab.io: atomic writes leave the whole old file or the whole new one, never a temporary file."""

import pytest

from rslab.io import write_atomically, write_text_atomically


def test_write_text_atomically_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "a.json"
    write_text_atomically(path, "old")
    assert write_text_atomically(path, "new") == path and path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")

    def half_write(tmp):
        tmp.write_bytes(b"ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_write)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]
