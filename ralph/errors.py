"""Errors ralph reports to people: one line, naming the file and line where it can."""

from __future__ import annotations

from pathlib import Path


class RalphError(Exception):
    """Bad input or usage: reported on one line, exit status 2, no file touched."""

    exit_code = 2

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return where + self.message


class ParseError(RalphError):
    """The task file cannot be understood."""


class EnvironmentFailure(RalphError):
    """The machine failed ralph (a full disk, a read-only folder): one line, exit status 1,
    every file left whole, and the message says what could not be written."""

    exit_code = 1


class LockedError(RalphError):
    """Another ralph process is running the same task file."""
