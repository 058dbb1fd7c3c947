"""Atomic file writes: readers see the old file or the new one, never a partial one.

One implementation for everything vlmspec writes that someone may read concurrently or after
a crash (reports, summaries, configs, caches, training state): a temp file in the same
directory, fsync, then ``os.replace``; and for folders, ``atomic_replace_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (``mode``: file permissions, default the temp file's 0o600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, payload, mode: int | None = None, **dump_options) -> None:
    atomic_write_text(path, json.dumps(payload, **dump_options), mode)


def atomic_replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder ``staging`` to ``final`` (same parent). An existing ``final`` is
    renamed aside first and removed afterwards, so ``final`` is never half-written: it is the old
    folder or the new one, and missing only between the two renames."""
    staging, final = Path(staging), Path(final)
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
