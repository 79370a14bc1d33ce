"""Whether a prepared index is current: the stamps of its sources, the digest of its settings and the
metadata stored next to its arrays.

A reader that prepares an index once (in ``prepare``) records with it the settings it was built with
and a stamp of every source it read, ``[size, mtime_ns]`` (a folder's time changes when a file in it
is added, removed or renamed, so a folder's stamp stands for its files without a ``stat`` per image).
The index is rebuilt when either differs; which files and settings count, and how a difference is
reported, is each reader's own rule. Not noticed: a file rewritten in place with the same size and
modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.files import atomic_savez


def file_stamp(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file or folder; ``None`` when it cannot be read (the reader names it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def source_stamp(path: str | Path) -> dict[str, Any]:
    """What identifies an input file's version: its resolved path, size and modification time."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def subfolder_times(folder: str | Path) -> list[tuple[str, int]]:
    """``(name, mtime_ns)`` of every sub-folder of ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.is_dir())


def settings_digest(settings: Any, length: int = 12, algorithm: str = "sha1") -> str:
    """A short digest of ``settings`` (as JSON, keys sorted): the name of what was built with them, so
    that indexes of other settings live side by side."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.new(algorithm, text.encode()).hexdigest()[:length]


def records_match(recorded: Mapping[str, Any] | None, **expected: Any) -> bool:
    """True when an index's stored metadata ``recorded`` holds every ``expected`` value."""
    return recorded is not None and all(recorded.get(key) == value for key, value in expected.items())


def save_npz(path: str | Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``meta`` (as the JSON text of array ``meta``) to one ``.npz``, atomically."""
    return atomic_savez(path, meta=np.array(json.dumps(meta)), **arrays)


def load_npz(path: str | Path, names: Iterable[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, {name: array})`` of a file :func:`save_npz` wrote (no pickle). A missing or damaged file
    raises ``OSError``, ``ValueError`` or ``KeyError``, which the reader turns into its message."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"])), {name: data[name] for name in names}


def npz_meta(path: str | Path) -> dict[str, Any] | None:
    """The ``meta`` of a file :func:`save_npz` wrote; ``None`` when it is missing or unreadable."""
    try:
        return load_npz(path, ())[0]
    except (OSError, ValueError, KeyError):
        return None
