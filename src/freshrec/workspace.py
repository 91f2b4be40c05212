"""Where each stage writes its outputs: one work folder per dataset (git-ignored).

<work>/prepared/            the prepared Split (data stage)
<work>/embeddings/          cached item text embeddings (embed stage)
<work>/tokenizer/           fitted SID tokenizer + SidTable (semid stage)
<work>/checkpoints/<name>/  training runs: best/, last/, train_log.json (train stage)
<work>/reports/<name>/      metrics JSON/markdown + plots (evaluate stage)
<work>/edits/<pack>/        edit packs (edit stage)
<work>/cache/               reusable statistics (e.g. key covariances)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(".freshrec")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def for_dataset(cls, name: str, base: str | Path = DEFAULT_ROOT) -> Workspace:
        return cls(Path(base) / name)

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def reports(self, name: str) -> Path:
        return self.root / "reports" / name

    def edits(self) -> Path:
        return self.root / "edits"
