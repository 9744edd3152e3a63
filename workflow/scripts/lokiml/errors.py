"""Errors that carry enough context for a user to fix their input."""

from __future__ import annotations


class LokimlError(Exception):
    """Base class for errors meant to be read by a user, not a developer."""


class InputError(LokimlError):
    """Bad user input: names the file, the row (1-based line in the file) and what to do."""

    def __init__(self, path, problem: str, row: int | None = None, hint: str | None = None):
        self.path = str(path)
        self.row = row
        self.problem = problem
        self.hint = hint
        where = self.path if row is None else f"{self.path}, row {row}"
        msg = f"{where}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class ConfigError(LokimlError):
    """The workflow configuration is invalid."""
