"""The grid manifest (`out_dir/manifest.json`): `Grid` and its `GridEntry` checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from freshrec.atomic import write_json
from freshrec.errors import CheckpointError
from freshrec.manifest import read_manifest
from freshrec.merge.grid.config import ALL

__all__ = ["MANIFEST", "MANIFEST_VERSION", "Grid", "GridEntry", "load_grid"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclasses.dataclass
class GridEntry:
    """One checkpoint of the grid. `path` is relative to the grid root; `window` is the
    training data (`start`/`end` unix s, counts); `validation` the early-stopping requests."""

    name: str
    phase: str
    domain: str
    parent: str | None
    path: str
    window: dict[str, Any]
    validation: dict[str, Any]
    metrics: dict[str, Any]


@dataclasses.dataclass
class Grid:
    """A built grid: `manifest.json` of `root` as objects."""

    root: Path
    dataset: str
    spec: dict[str, Any]
    spec_hash: str
    tokenizer_fingerprint: str
    cutoffs: tuple[int, int]
    bounds: list[int]
    phases: list[str]
    domains: dict[str, dict[str, Any]]
    entries: dict[str, GridEntry]
    complete: bool = False
    created: str = ""

    def path(self, name: str) -> Path:
        """Absolute checkpoint folder of entry `name` (CheckpointError if unknown)."""
        if name not in self.entries:
            raise CheckpointError(
                f"{self.root}: no checkpoint {name!r} in the grid; have {', '.join(self.entries)}"
            )
        return self.root / self.entries[name].path

    @property
    def work_dir(self) -> Path:
        """The freshrec work folder (`--set work_dir=`) holding prepared data and tokenizer."""
        return self.root

    @property
    def tracks(self) -> list[str]:
        """Domain names in order, then `all` if it was trained."""
        return [d for d in self.domains if d != ALL] + ([ALL] if ALL in self.domains else [])

    def name(self, phase: str, domain: str) -> str:
        """Entry name of (phase, domain); pretrain/init ignore the domain."""
        return phase if phase in ("init", "pretrain") else f"{phase}-{domain}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "dataset": self.dataset,
            "spec": self.spec,
            "spec_hash": self.spec_hash,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "cutoffs": list(self.cutoffs),
            "bounds": self.bounds,
            "phases": self.phases,
            "domains": self.domains,
            "checkpoints": [dataclasses.asdict(e) for e in self.entries.values()],
            "complete": self.complete,
            "created": self.created,
        }

    def save(self) -> Path:
        """Write `root/manifest.json` atomically."""
        path = self.root / MANIFEST
        write_json(path, self.to_dict())
        return path


def load_grid(root: str | Path) -> Grid:
    """Read `root/manifest.json`; CheckpointError when missing or malformed."""
    root = Path(root)
    path = root / MANIFEST
    hint = "build one with `freshrec grid`"
    data = read_manifest(path, "grid manifest", format=None, version=MANIFEST_VERSION, hint=hint)
    try:
        entries = {e["name"]: GridEntry(**e) for e in data["checkpoints"]}
        return Grid(
            root=root,
            dataset=data["dataset"],
            spec=data["spec"],
            spec_hash=data["spec_hash"],
            tokenizer_fingerprint=data["tokenizer_fingerprint"],
            cutoffs=tuple(data["cutoffs"]),  # type: ignore[arg-type]
            bounds=list(data["bounds"]),
            phases=list(data["phases"]),
            domains=dict(data["domains"]),
            entries=entries,
            complete=bool(data.get("complete", False)),
            created=str(data.get("created", "")),
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed grid manifest ({exc!r})") from None
