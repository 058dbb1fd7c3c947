"""vlmspec.atomic: files and folders are the old version or the new one, never half-written."""

from __future__ import annotations

import json
import os

import pytest

from vlmspec.atomic import atomic_replace_dir, atomic_write_bytes, atomic_write_json


def test_file_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "report.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2}, mode=0o644, indent=1)
    assert json.loads(path.read_text()) == {"a": 2}
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_failed_file_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.txt"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_replace_dir_swaps_in_the_new_folder(tmp_path):
    final = tmp_path / "drafter"
    for version in ("one", "two"):
        staging = tmp_path / f".staging-{version}"
        staging.mkdir()
        (staging / "weights").write_text(version)
        atomic_replace_dir(staging, final)
        assert (final / "weights").read_text() == version
        assert sorted(p.name for p in tmp_path.iterdir()) == ["drafter"]  # no staging, no ".old" left
