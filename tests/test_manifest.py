"""The one reader of freshrec's JSON files: every failure is a FreshrecError naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freshrec.errors import CheckpointError, DataError
from freshrec.manifest import read_json_object, read_manifest
from freshrec.model.edit_packs import EditPack


def test_read_json_object_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    with pytest.raises(CheckpointError, match=r"m\.json: thing not found; is it\?"):
        read_json_object(path, "thing", hint="is it?")
    path.write_text("{nope")
    with pytest.raises(CheckpointError, match=r"m\.json: thing is not valid JSON"):
        read_json_object(path, "thing")
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"m\.json: thing is not a JSON object"):
        read_json_object(path, "thing", error=DataError)
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match=r"missing field\(s\) b, c in the thing"):
        read_json_object(path, "thing", required=("a", "b", "c"))
    assert read_json_object(path, "thing", required=("a",)) == {"a": 1}


def test_read_manifest_checks_format_and_version(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": "x", "version": 2}))
    assert read_manifest(path, "pack", format="x", version=2)["version"] == 2
    assert read_manifest(path, "pack", format=None, version=None)["format"] == "x"
    with pytest.raises(CheckpointError, match=r"unsupported pack format 'x' \(expected 'y'\)"):
        read_manifest(path, "pack", format="y", version=2)
    with pytest.raises(CheckpointError, match="pack has version 2, expected 1"):
        read_manifest(path, "pack", format="x", version=1)
    # an edit pack folder whose manifest has another format is refused, naming the file
    with pytest.raises(CheckpointError, match=r"manifest\.json: unsupported edit pack manifest"):
        EditPack.load(tmp_path)
