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
    """The JSON object in `path` ("the <what>"); `error` when the file is missing (+ `hint`),
    unreadable, not valid JSON, not an object, or lacks one of the `required` keys."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} is not a JSON object")
    missing = [k for k in required if k not in data]
    if missing:
        raise error(f"{path}: {what} missing field(s) {', '.join(missing)}")
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
    if format is not None and data.get("format") != format:
        raise error(
            f"{path}: unsupported {what} format {data.get('format')!r} (expected {format!r})"
        )
    if version is not None and data.get(version_key) != version:
        raise error(
            f"{path}: {what} has {version_key} {data.get(version_key)!r}, expected {version}"
        )
    return data
