"""Errors raised by dataset readers, and the shared helpers that raise them.

Every reader in :mod:`datamodules` reports a broken release with a :class:`DatasetFormatError`
that names the file and, where it applies, the line (1-based) or the field, so that a user can
open the file and fix it instead of reading a traceback. The helpers here are the one place where
bytes become text (:func:`decode_utf8`, :func:`read_text`, :func:`text_lines`), text becomes JSON
(:func:`read_json`, :func:`read_jsonl`, :func:`read_json_header`, :func:`json_field`), repeated ids
are counted (:class:`DuplicateRows`) and an empty split is refused (:func:`require_rows`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Hashable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any


class DatasetFormatError(ValueError):
    """A dataset file is missing, malformed or inconsistent with its siblings.

    ``str(err)`` reads ``<path>:<line>: [<field>] <message>``. ``DatasetFormatError(text)`` with one
    argument (how a DataLoader worker's error is re-raised in the main process) keeps ``text`` as the
    whole message, with ``path`` ``None``.
    """

    def __init__(
        self,
        path: str | Path,
        message: str | None = None,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.line = line
        self.field = field
        if message is None:  # an already formatted message
            self.path, self.message = None, str(path)
            super().__init__(self.message)
            return
        self.path = Path(path)
        self.message = message
        where = str(self.path) + (f":{line}" if line is not None else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")

    def __reduce__(self):  # pickles with its path, line and field (e.g. across processes)
        if self.path is None:
            return type(self), (self.message,)
        return functools.partial(type(self), line=self.line, field=self.field), (self.path, self.message)


_BOM = b"\xef\xbb\xbf"


def read_bytes(path: str | Path, contents: str) -> bytes:
    """The bytes of a publisher's file, a UTF-8 BOM dropped; a missing file raises a
    :class:`DatasetFormatError` saying what it should contain (``contents``)."""
    try:
        return Path(path).read_bytes().removeprefix(_BOM)
    except FileNotFoundError:
        raise DatasetFormatError(path, f"missing file; it should contain {contents}") from None


def read_lines(path: Path, contents: str) -> list[bytes]:
    """Raw lines of a publisher's text file, without line ends (LF or CRLF: a trailing ``\\r`` stays for
    the caller to strip), a UTF-8 BOM and trailing blank lines dropped. A missing file raises a
    :class:`DatasetFormatError` saying what it should contain (``contents``)."""
    lines = read_bytes(path, contents).split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def decode_utf8(data: bytes, path: str | Path, line: int | None = None) -> str:
    """``data`` as UTF-8 text. Other bytes raise a :class:`DatasetFormatError` naming the line and the
    byte: ``line`` when ``data`` is that line of ``path``, else the whole file (line counted here)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        where = f"byte {err.start} of the line" if line is not None else f"byte offset {err.start}"
        raise DatasetFormatError(
            path,
            f"not valid UTF-8 at {where} ({data[err.start]:#04x}: {err.reason}); save the file as UTF-8",
            line=line if line is not None else data.count(b"\n", 0, err.start) + 1,
        ) from None


def text_lines(path: str | Path, contents: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line of :func:`read_lines` (a trailing ``\\r`` dropped), each
    decoded as UTF-8 when it is reached, so the first bad line of the file is the one reported."""
    for number, raw in enumerate(read_lines(Path(path), contents), start=1):
        yield number, decode_utf8(raw.removesuffix(b"\r"), path, number)


def read_text(path: str | Path, contents: str) -> str:
    """The whole text of a UTF-8 file (a BOM dropped); missing file and bad bytes raise as above."""
    return decode_utf8(read_bytes(path, contents), path)


def _loads(text: str, path: str | Path, line: int | None, object_hook: Callable | None = None) -> Any:
    try:
        return json.loads(text, object_hook=object_hook)
    except json.JSONDecodeError as err:
        at = line if line is not None else err.lineno
        raise DatasetFormatError(path, f"invalid JSON ({err.msg}, column {err.colno})", line=at) from None


def read_json(path: str | Path, contents: str, object_hook: Callable | None = None) -> Any:
    """The JSON value of a UTF-8 file; missing, empty, non-UTF-8 or invalid files raise with the line.
    ``object_hook`` receives every object as it is parsed (so the fields a reader does not use never
    pile up in memory)."""
    text = read_text(path, contents)
    if not text.strip():
        raise DatasetFormatError(path, f"empty file; it should contain {contents}")
    return _loads(text, path, None, object_hook)


def parse_json_object(text: str, path: str | Path, line: int) -> dict[str, Any]:
    """One JSON object on ``line`` of a JSON-lines file."""
    value = _loads(text, path, line)
    if not isinstance(value, dict):
        raise DatasetFormatError(path, f"expected a JSON object, found {type(value).__name__}", line=line)
    return value


def read_jsonl(path: str | Path, contents: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every line of a JSON-lines file (one object per line)."""
    return [(number, parse_json_object(text, path, number)) for number, text in text_lines(path, contents)]


def read_json_header(path: str | Path) -> dict[str, Any]:
    """The first line of a JSON-lines file (an index's header) as an object, without reading the rest."""
    with open(path, "rb") as f:
        first = f.readline().rstrip(b"\r\n").removeprefix(_BOM)
    return parse_json_object(decode_utf8(first, path, 1), path, 1)


def json_field(
    obj: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    path: str | Path,
    line: int | None = None,
    where: str = "",
) -> Any:
    """``obj[name]``, which must exist and be a ``kind`` (``bool`` is not a number here). ``where``
    prefixes the message (e.g. ``"entry 3: "`` for a JSON list)."""
    if not isinstance(obj, Mapping):
        raise DatasetFormatError(
            path, f"{where}expected a JSON object, found {type(obj).__name__}", line=line, field=name
        )
    if name not in obj:
        raise DatasetFormatError(path, f"{where}missing field", line=line, field=name)
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise DatasetFormatError(
            path, f"{where}expected {expected}, found {type(value).__name__}", line=line, field=name
        )
    return value


class DuplicateRows:
    """Repeated ids within one file: the first row of an id is kept; later rows are dropped and
    counted as ``identical`` (same content) or ``conflicting`` (other content: the first such row is
    remembered, so the log can name it). ``unit`` names a position (``line``, ``entry``)."""

    def __init__(self, path: str | Path, unit: str = "line") -> None:
        self.path, self.unit = Path(path), unit
        self._first: dict[Hashable, tuple[int, Any]] = {}
        self.identical = self.conflicting = 0
        self.example: tuple[int, int, Hashable] | None = None

    def is_new(self, key: Hashable, content: Any, position: int) -> bool:
        """True for the first row of ``key``; a repeat is counted and False."""
        if key not in self._first:
            self._first[key] = (position, content)
            return True
        first_position, first_content = self._first[key]
        if content == first_content:
            self.identical += 1
        else:
            self.conflicting += 1
            self.example = self.example or (position, first_position, key)
        return False

    @property
    def dropped(self) -> int:
        return self.identical + self.conflicting

    def log(self, logger: logging.Logger) -> None:
        """Log what was dropped: identical repeats at INFO, conflicting ones at WARNING with the first."""
        if self.identical:
            logger.info(
                "%s: dropped %d repeated %s(s) identical to an earlier one",
                self.path,
                self.identical,
                self.unit,
            )
        if self.conflicting:
            position, first, key = self.example
            logger.warning(
                "%s: dropped %d repeated %s(s) whose content differs from the first one of their id "
                "(the first is kept), e.g. %s %d repeats %r of %s %d",
                self.path,
                self.conflicting,
                self.unit,
                self.unit,
                position,
                key,
                self.unit,
                first,
            )


def require_rows(
    items: Sized, split: str, *sources: str | Path, dropped: Mapping[str, int] | None = None
) -> Sized:
    """``items`` if the ``split`` has any; else a :class:`DatasetFormatError` naming the split, the
    files it came from (``sources``, at least one) and what was dropped on the way (``dropped``: reason
    -> count), instead of an empty loader or a division by zero later. Returns ``items``."""
    if not sources:
        raise TypeError("require_rows needs the source file(s) of the split")
    if len(items):
        return items
    counts = ", ".join(f"{n} {reason}" for reason, n in (dropped or {}).items() if n)
    why = f"every row was dropped ({counts})" if counts else "the file(s) list no usable rows"
    others = f" (also read: {', '.join(map(str, sources[1:]))})" if len(sources) > 1 else ""
    raise DatasetFormatError(sources[0], f"the {split} split is empty: {why}{others}")
