"""`ServeConfig`: everything the recommendation service needs, validated once at start.

Where things live (defaults follow the recipe's workspace, `freshrec.workspace`):

    <work>/prepared/, tokenizer/, embeddings/   what the model was trained on (read only)
    <work>/cache/                               edit statistics (key covariances), reused
    <state_dir> = <work>/serve/                 the service's own state (`state.py`):
        catalog.db, catalog.db.writer.lock      SQLite catalog + edit ledger (or `db_url`)
        edits/                                  the pack store (`edits_dir`), owned by the
                                                service: <pack_id>/, quarantine/

The API key is never part of the config: it comes from the environment variable
`FRESHREC_API_KEY` or from `api_key_file` (first line, stripped), checked in that order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from freshrec.config import Recipe, load_recipe
from freshrec.edit.config import EditConfig
from freshrec.errors import ConfigError, validation_problems
from freshrec.manifest import read_json_object
from freshrec.workspace import Workspace

API_KEY_ENV = "FRESHREC_API_KEY"
MIN_KEY_CHARS = 16
MIN_KEY_DISTINCT = 8  # distinct characters: refuses "aaaaaaaaaaaaaaaa" and short patterns

# Serving defaults for edits: the reliability check (two beam searches over the pack's edit
# requests) would roughly double the time to live; it stays available as an option.
DEFAULT_EDIT: dict[str, Any] = {"measure_reliability": False}


class ServeConfig(BaseModel):
    """Validated service settings (immutable; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what to serve
    checkpoint: Path = Field(description="trained checkpoint folder (…/checkpoints/<run>/best)")
    recipe: str = Field("cpu", description="built-in recipe name or YAML file (locates <work>)")
    overrides: list[str] = Field(default_factory=list, description="recipe `section.key=value`")
    work_dir: Path | None = Field(None, description="shortcut for the override work_dir=...")
    # --- where state goes
    state_dir: Path | None = Field(None, description="service state (default <work>/serve)")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL of the catalog (default sqlite:///<state_dir>/catalog.db)"
    )
    edits_dir: Path | None = Field(
        None,
        description="the pack store (default <state_dir>/edits): a folder of its own, shared by "
        "the writer and its read replicas",
    )
    read_only: bool = Field(
        False,
        description="a read replica: serves the catalog that the writer keeps in the same "
        "database and pack folder (polled every follow_interval_s); writes answer 503",
    )
    follow_interval_s: float = Field(
        1.0, gt=0, le=60, description="seconds between a replica's polls of the catalog"
    )
    # --- access
    api_key_file: Path | None = Field(None, description=f"used when ${API_KEY_ENV} is unset")
    open_reads: bool = Field(True, description="False: reads need the API key too")
    # --- recommendation
    batching: bool = Field(True, description="micro-batch concurrent /recommend calls")
    max_batch: int = Field(32, ge=1, le=4096, description="requests per beam search")
    batch_window_ms: float = Field(
        2.0, ge=0, le=1000, description="how long the first request waits for company"
    )
    beam_size: int = Field(
        20,
        ge=1,
        le=1000,
        description="beam of the constrained search (mode beam, with wider-beam retries of "
        "short rows); mode fresh uses at least the recipe's evaluation beam, as calibrated",
    )
    mode: Literal["fresh", "beam"] = Field(
        "fresh",
        description="fresh: GR beam + new-item channel, an added item is recommendable as soon "
        "as it has an embedding and a SID (its edit refines it later); beam: the GR model "
        "alone, an added item is recommendable once its edit is applied",
    )
    max_top_k: int = Field(100, ge=1, le=1000)
    max_history_items: int = Field(1000, ge=1, description="longest history a request may send")
    request_timeout_s: float = Field(30.0, gt=0)
    # --- load shedding and shutdown
    max_inflight_recommend: int = Field(
        12,
        ge=1,
        description="/recommend requests in flight at most; beyond, 429 at once (about "
        "throughput x latency target: ~50 req/s in mode fresh on 2 cores x 0.25 s)",
    )
    max_inflight_writes: int = Field(
        4, ge=1, description="POST /items and DELETE /edits in flight at most; beyond, 429"
    )
    max_inflight_other: int = Field(
        64, ge=1, description="other requests in flight at most (probes excepted); beyond, 429"
    )
    drain_grace_s: float = Field(
        1.0,
        ge=0,
        le=600,
        description="after SIGTERM: seconds the service keeps serving with /ready failing, so "
        "that load balancers stop sending, before it stops accepting connections",
    )
    drain_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="after SIGTERM: seconds in-flight requests may take"
    )
    # --- writes
    max_payload_bytes: int = Field(1_000_000, ge=1024)
    max_items_per_post: int = Field(500, ge=1)
    edit_batch_window_s: float = Field(
        0.5, ge=0, le=600, description="items arriving within this window share one edit"
    )
    max_edit_batch: int = Field(512, ge=1, description="items per edit pack at most")
    edit: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_EDIT),
        description="EditConfig overrides (freshrec.edit.EditConfig)",
    )
    edit_seed: int = 0
    warmup: bool = Field(True, description="compute edit statistics at start, not on 1st edit")
    compact: bool = Field(True, description="fold old packs into one pack in the background")
    compact_keep: int = Field(
        8, ge=0, description="the newest applied packs kept as they are (rolled back one by one)"
    )
    compact_min: int = Field(
        8, ge=2, description="fold once this many applied packs are older than the kept ones"
    )
    # --- process
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads of the recommender (None = half the cores)"
    )
    edit_threads: int | None = Field(
        None, ge=1, description="torch threads of the edit worker (None = half the cores)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    access_log: bool = Field(False, description="uvicorn's per-request log lines")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeConfig:
        """Validate a dict; ConfigError with every problem on one line."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise ConfigError(f"invalid serve config: {problems}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ServeConfig:
        """Read a JSON config file (the same keys as the fields)."""
        return cls.from_dict(read_json_object(path, "serve config", error=ConfigError))

    # ------------------------------------------------------------------ derived
    def load_recipe(self) -> Recipe:
        extra = [f"work_dir={self.work_dir}"] if self.work_dir is not None else []
        return load_recipe(self.recipe, [*self.overrides, *extra])

    def threads(self) -> int:
        """torch intra-op threads of the recommendation worker. Default: half the cores, so
        that an edit running at the same time keeps the rest; on 2 cores, 1 thread instead of 2
        halved p99 latency at concurrency 8 (benchmarks/serve_bench.py)."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, (os.cpu_count() or 2) // 2)

    def edit_thread_count(self) -> int:
        """torch intra-op threads of the edit worker. Default: half the cores (the other half
        serves recommendations; oversubscribing 2 busy cores slowed both down)."""
        if self.edit_threads is not None:
            return self.edit_threads
        return max(1, (os.cpu_count() or 2) // 2)

    def edit_config(self) -> EditConfig:
        return EditConfig.from_dict({**self.edit, "seed": self.edit_seed})

    def paths(self, recipe: Recipe | None = None) -> ServePaths:
        """Resolved folders and the catalog URL."""
        recipe = recipe or self.load_recipe()
        ws = Workspace.for_dataset(recipe.data.dataset_name, recipe.work_dir)
        state = Path(self.state_dir) if self.state_dir is not None else ws.root / "serve"
        edits = Path(self.edits_dir) if self.edits_dir is not None else state / "edits"
        url = self.db_url or f"sqlite:///{(state / 'catalog.db').resolve()}"
        return ServePaths(ws, state, edits, url)

    def api_key(self) -> str:
        """The write key: ${FRESHREC_API_KEY}, else the first line of `api_key_file`.

        ConfigError when neither is set or the key is shorter than 16 characters."""
        key = os.environ.get(API_KEY_ENV, "").strip()
        source = f"${API_KEY_ENV}"
        if not key and self.api_key_file is not None:
            source = str(self.api_key_file)
            try:
                lines = Path(self.api_key_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the API key file {self.api_key_file}: {exc}"
                ) from None
            key = lines[0].strip() if lines else ""
        if not key:
            raise ConfigError(
                f"no API key: set ${API_KEY_ENV} or pass an API key file (api_key_file)"
            )
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"the API key from {source} is shorter than {MIN_KEY_CHARS} chars")
        if len(set(key)) < MIN_KEY_DISTINCT:
            raise ConfigError(
                f"the API key from {source} has only {len(set(key))} distinct characters (at "
                f"least {MIN_KEY_DISTINCT}): use a random key, e.g. "
                'python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return key


@dataclass(frozen=True)
class ServePaths:
    workspace: Workspace
    state_dir: Path
    edits_dir: Path
    db_url: str

    @property
    def db_file(self) -> Path | None:
        """The SQLite database file (None for other databases and in-memory SQLite)."""
        prefix = "sqlite:///"
        if not self.db_url.startswith(prefix):
            return None
        name = self.db_url[len(prefix) :].split("?", 1)[0]
        return None if name in ("", ":memory:") or name.startswith("file:") else Path(name)
