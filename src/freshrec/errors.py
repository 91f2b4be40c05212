"""User-facing errors.

Every error a user can cause (bad files, unknown ids, mismatched checkpoints) is raised as a
`FreshrecError` subclass with an actionable message; the CLI prints it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class FreshrecError(Exception):
    """Base class of errors caused by input, configuration or state, not by a bug."""


class DataError(FreshrecError):
    """A data file is malformed. Says which file, line (1-based, header = line 1) and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        where = []
        if self.file is not None:
            where.append(self.file)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(FreshrecError):
    """A recipe, option or CLI argument does not make sense."""


class UnknownItemError(FreshrecError):
    """An item id is not in the catalog."""


class TokenizerMismatchError(FreshrecError):
    """A checkpoint, edit pack or merge input was built with a different SID tokenizer/base."""


class CheckpointError(FreshrecError):
    """A checkpoint or edit pack is missing, incomplete or incompatible."""
