"""Reading the JSON files freshrec writes (checkpoint configs, edit pack and grid manifests,
tokenizer configs, prepared-data meta, service configs): one reader, so every one of them fails
the same way -- a `FreshrecError` naming the file and what is wrong, never a JSON traceback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from freshrec.errors import CheckpointError, FreshrecError


def read_json_object(
    path: str | Path,
    what: str,
    *,
    required: Sequence[str] = (),
    hint: str = "",
    error: type[FreshrecError] = CheckpointError,
) -> dict[str, Any]:
    """The JSON object in `path` ("the <what>"); `error` (its message: the file, what is
    wrong, then `hint`) when the file is missing, unreadable, not valid JSON, not an object, or
    lacks one of the `required` keys."""
    path = Path(path)
    end = f"; {hint}" if hint else ""
    if not path.is_file():
        raise error(f"{path}: {what} not found{end}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc}){end}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: unreadable {what} ({exc}){end}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} is not a JSON object{end}")
    missing = [k for k in required if k not in data]
    if missing:
        raise error(f"{path}: missing field(s) {', '.join(missing)} in the {what}{end}")
    return data


def read_manifest(
    path: str | Path,
    what: str,
    *,
    format: str | None,
    version: int | None,
    version_key: str = "version",
    required: Sequence[str] = (),
    hint: str = "",
    error: type[FreshrecError] = CheckpointError,
) -> dict[str, Any]:
    """`read_json_object` of a versioned file: its "format" must equal `format` and its
    `version_key` must equal `version` (None: not checked)."""
    data = read_json_object(path, what, required=required, hint=hint, error=error)
    end = f"; {hint}" if hint else ""
    if format is not None and data.get("format") != format:
        got = data.get("format")
        raise error(f"{path}: unsupported {what} format {got!r} (expected {format!r}){end}")
    if version is not None and data.get(version_key) != version:
        got = data.get(version_key)
        raise error(f"{path}: {what} has {version_key} {got!r}, expected {version}{end}")
    return data
