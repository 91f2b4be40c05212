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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from freshrec.data.schema import Split
    from freshrec.semid import SemanticTokenizer, SidTable

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

    # ------------------------------------------------------------------ stage outputs
    def load_split(self) -> Split:
        """The prepared Split; CheckpointError when `freshrec prepare` has not run."""
        from freshrec.data.store import load_split
        from freshrec.errors import CheckpointError

        if not self.prepared.exists():
            raise CheckpointError(
                f"no prepared dataset in {self.prepared}; run `freshrec prepare` first"
            )
        return load_split(self.prepared)

    def load_tokenized(self) -> tuple[SemanticTokenizer, SidTable]:
        """(tokenizer, SidTable); CheckpointError when `freshrec tokenize` has not run."""
        from freshrec.errors import CheckpointError
        from freshrec.semid import load_sid_table, load_tokenizer

        if not self.tokenizer.exists():
            raise CheckpointError(
                f"no tokenizer in {self.tokenizer}; run `freshrec tokenize` first"
            )
        return load_tokenizer(self.tokenizer), load_sid_table(self.tokenizer)

    def item_embeddings(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        """float32[n_items, 384] MiniLM embeddings of item texts (cached under embeddings/)."""
        from freshrec.embed import embed_texts

        return embed_texts(texts, cache_dir=self.embeddings, progress=progress)
