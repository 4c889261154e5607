"""write_atomic: the one writer of every file maskzoo writes."""

import os
import stat

import pytest

from maskzoo import files


def test_bytes_text_and_writer_functions_all_land_whole(tmp_path):
    files.write_atomic(tmp_path / "a.bin", b"\x00\x01")
    files.write_atomic(tmp_path / "b.txt", "héllo")
    files.write_atomic(tmp_path / "c.bin", lambda f: f.write(b"written by a function"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "c.bin").read_bytes() == b"written by a function"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt", "c.bin"]  # no temporary files left


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def broken(f):
        f.write(b"half of the new con")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        files.write_atomic(path, broken)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_the_file_and_then_its_folder_are_synced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    files.write_atomic(tmp_path / "x", b"data")
    # The rename lives in the folder: without its sync a power cut could undo it.
    assert synced == (["file", "folder"] if hasattr(os, "O_DIRECTORY") else ["file"])


def test_files_get_the_permissions_a_plain_open_gives(tmp_path):
    files.write_atomic(tmp_path / "atomic", b"x")
    with open(tmp_path / "plain", "wb") as f:
        f.write(b"x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(tmp_path / "plain").st_mode
