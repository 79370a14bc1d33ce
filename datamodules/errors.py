"""Errors raised by dataset readers.

Every reader in :mod:`datamodules` reports a broken release with a :class:`DatasetFormatError`
that names the file and, where it applies, the line (1-based) or the field, so that a user can
open the file and fix it instead of reading a traceback.
"""

from __future__ import annotations

from pathlib import Path


class DatasetFormatError(ValueError):
    """A dataset file is missing, malformed or inconsistent with its siblings.

    ``str(err)`` reads ``<path>:<line>: [<field>] <message>``.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.message = message
        where = str(self.path) + (f":{line}" if line is not None else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


_BOM = b"\xef\xbb\xbf"


def read_lines(path: Path, contents: str) -> list[bytes]:
    """Raw lines of a publisher's text file, without line ends (LF or CRLF: a trailing ``\\r`` stays for
    the caller to strip), a UTF-8 BOM and trailing blank lines dropped. A missing file raises a
    :class:`DatasetFormatError` saying what it should contain (``contents``)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(path, f"missing file; it should contain {contents}") from None
    lines = data.removeprefix(_BOM).split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines
