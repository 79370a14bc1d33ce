"""Generate a synthetic dataset once, atomically, and reuse it while its parameters match.

Every synthetic writer records ``{"generator": ..., "version": ..., "params": {...}}`` (plus what
it likes) in ``<root>/synthetic_meta.json``; that file is the completion marker. :func:`ensure_generated`
writes into a temporary sibling folder and renames it into place under a file lock, so concurrent
callers (DDP ranks, parallel sweeps) neither collide nor see half a dataset. The staging folders a
killed generation left behind are removed by the next generation of the same dataset (under the same
lock, so never one still being written), and a generated folder gets the usual permissions (``0777``
minus the umask), not ``mkdtemp``'s ``0700``, so a shared data folder stays readable to teammates.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from datamodules.files import current_umask, read_json_or

META_FILE = "synthetic_meta.json"


def read_meta(root: Path, generator: str) -> dict[str, Any] | None:
    """The meta file of a dataset written by ``generator``, or ``None``."""
    meta = read_json_or(root / META_FILE)
    return meta if isinstance(meta, dict) and meta.get("generator") == generator else None


def is_complete(root: Path, generator: str, version: int, params: dict[str, Any]) -> bool:
    meta = read_meta(root, generator)
    return meta is not None and meta.get("version") == version and meta.get("params") == params


def write_meta(
    folder: Path,
    generator: str,
    version: int,
    params: dict[str, Any],
    record: dict[str, Any],
    *,
    end: str = "\n",
    **dumps: Any,
) -> dict[str, Any]:
    """Write ``folder``'s meta file: generator, version and parameters, then ``record``; return it.
    ``dumps`` (``json.dumps`` options) and ``end`` keep each twin's file byte for byte as it always was."""
    meta = {"generator": generator, "version": version, "params": params, **record}
    (folder / META_FILE).write_text(json.dumps(meta, **dumps) + end)
    return meta


def require_empty(root: Path, writer: str) -> None:
    """Refuse to write into a folder that holds anything (a real release, say)."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; {writer} needs a new or empty folder")


def ensure_generated(
    root: str | Path, *, generator: str, version: int, params: dict[str, Any], write: Callable[[Path], Any]
) -> Path:
    """Make sure ``root`` holds the dataset ``write(folder)`` produces for ``params``; return ``root``.

    Nothing is written when the meta file records the same generator, version and parameters. A
    dataset of the same generator with other parameters is replaced; any other non-empty ``root``
    (a real release, say) is never touched: :class:`FileExistsError`.
    """
    root = Path(root)
    if is_complete(root, generator, version, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_complete(root, generator, version, params):
            return root
        if root.exists() and read_meta(root, generator) is None and any(root.iterdir()):
            raise FileExistsError(f"{root} exists and was not written by {generator}; not touching it")
        remove_stale_staging(root)
        with staged(root) as staging:
            write(staging)
            if not is_complete(staging, generator, version, params):
                raise RuntimeError(f"{generator} did not write {META_FILE} with its parameters")
    return root


def ensure_written(
    root: str | Path,
    write: Callable[..., Any],
    params: dict[str, Any],
    *,
    generator: str,
    version: int,
    what: str,
    normalize: Callable[..., dict[str, Any]] | None = None,
) -> Path:
    """:func:`ensure_generated` for a writer ``write(folder, **params)`` whose keyword-only arguments are
    the twin's parameters. ``params`` is completed with their defaults, so the meta file names every
    parameter (a default left out and the same value given are one twin); a name ``write`` does not
    take raises a ``TypeError`` naming the twin (``what``). ``normalize(**params)``, when given,
    validates them before anything is written and returns them as ``write`` records them."""
    defaults = {
        name: p.default for name, p in inspect.signature(write).parameters.items() if p.kind is p.KEYWORD_ONLY
    }
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown {what} parameters {sorted(unknown)}")
    full = {**defaults, **params}
    if normalize is not None:
        full = normalize(**full)
    return ensure_generated(
        root, generator=generator, version=version, params=full, write=lambda folder: write(folder, **full)
    )


def remove_stale_staging(root: Path) -> None:
    """Delete the staging (``.<name>.tmp-*``) and replaced (``.<name>.old-*``) folders of ``root`` that a
    killed generation left next to it; call with the generation lock held."""
    for pattern in (f".{root.name}.tmp-*", f".{root.name}.old-*"):
        for path in list(root.parent.glob(pattern)):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def staged(root: Path) -> Iterator[Path]:
    """Yield a new folder next to ``root`` that replaces ``root`` on a clean exit and is removed on a
    failed one; it gets the usual permissions, not ``mkdtemp``'s ``0700``."""
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    os.chmod(staging, 0o777 & ~current_umask())
    try:
        yield staging
        if root.exists():  # moved aside, then deleted
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old)
            os.rename(staging, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
