"""Errors a user can act on: each names the file, the line and the field that was wrong."""

from __future__ import annotations

from pathlib import Path


class UniretError(Exception):
    """Base class of uniret's own errors."""


class DataFormatError(UniretError, ValueError):
    """Input data does not have the expected format.

    The message reads ``<file>:<line>: <field>: <what was wrong>; expected <what>``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.expected = expected
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        what = f"field '{field}': " if field else ""
        tail = f"; expected {expected}" if expected else ""
        super().__init__(f"{where}{what}{message}{tail}")


class IndexMismatchError(UniretError, ValueError):
    """A persisted index is paired with an encoder or settings it was not built with."""


class MissingExtraError(UniretError, ImportError):
    """An optional dependency is missing; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"'{package}' is not installed; install it with: pip install 'uniret[{extra}]'"
        )
