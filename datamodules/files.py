"""Atomic file output, used for every file the suite writes (indexes, summaries, checkpoints, exports,
figures).

A file is written to a temporary sibling in the destination folder, flushed to disk (``fsync``) and
renamed over the destination (``os.replace``, atomic within one filesystem): a kill, a full disk or
a failed write leaves the previous file intact, never half a file. The new file gets the usual
permissions (``0666`` minus the umask), not the ``0600`` of :func:`tempfile.mkstemp`, so shared
run and data folders stay readable to teammates. A failure names the destination path.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with suppress(OSError):  # some filesystems do not open (or sync) directories
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it is synced and renamed to ``path``.

    For writers that want a path (``torch.save``, ``safetensors``, ``savefig``)::

        with atomic_path(out / "model.safetensors") as tmp:
            save_file(state, str(tmp))
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}", str(path)) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"cannot write {path} (the previous file, if any, is intact): {err.strerror or err}",
            str(path),
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json_or(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``; ``default`` when the file is missing or not valid JSON. For the project's
    own files (markers, manifests); a publisher's file goes through :mod:`datamodules.errors`."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return Path(path)


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any], ensure_ascii: bool = True) -> Path:
    """Write one JSON value per line (UTF-8, ``\\n`` line ends) atomically; returns ``path``."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            # json.dumps with no options uses its cached encoder: the fast path for large files
            text = json.dumps(row) if ensure_ascii else json.dumps(row, ensure_ascii=False)
            out.write(text + "\n")
    return Path(path)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` of ``array`` to ``path``, atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return Path(path)


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` (uncompressed) of ``arrays`` to ``path``, atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)
