"""User-facing errors.

Every error a user can cause (bad files, unknown ids, mismatched checkpoints) is raised as a
`FreshrecError` subclass with an actionable message; the CLI prints it without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def validation_problems(
    exc: ValidationError, empty: str = "", strip_value_error: bool = False
) -> str:
    """pydantic's errors as one line, `field.path: message; ...` (`empty` names a problem
    with no field path; `strip_value_error` drops pydantic's "Value error, " prefix)."""
    parts = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ") if strip_value_error else e["msg"]
        parts.append(f"{'.'.join(str(x) for x in e['loc']) or empty}: {msg}")
    return "; ".join(parts)
