"""MMGRid checkpoint grid: one checkpoint per (time phase x domain), trained incrementally.

Time: the training period of the time split (EVAL.md: the first 80% of the time span) is cut
into a **pretrain** period and later phases `phase1 .. phaseK` at `GridConfig.phases`
(fractions of the training-period interactions, or of its time span). Validation and test
periods are those of the time split, untouched.

Domains: disjoint groups of items by a primary label, the first listed genre (MovieLens
`Genres: ...`) or category (Amazon `Categories: ...`, entry `label_level`) of the item text.
A domain's data is its items' interactions only, so its users' sequences (and request
histories) hold only that domain's items. The track `all` (every item) is trained too.

Checkpoints (all ordinary `freshrec` checkpoints, one shared SID tokenizer fitted on the
pretrain-period items; later items get SIDs without refitting, so parameters line up):

```
init                          the initial weights (what pretrain started from)
pretrain                      all items, targets in the pretrain period     <- init
phase1-<d>, for each track d  d's items, targets in phase 1                  <- pretrain
phase2-<d>                    d's items, targets in phase 2                  <- phase1-<d>
```

Each phase continues from the previous checkpoint of its track (`pipeline.train(init_from=)`),
as incremental training does in production, and keeps its best epoch on its own context's
validation-period requests (`validate_on="valid"`, default) or on the requests of the window
after its own (`"next"`: pretrain on phase 1, ..., the last phase on the validation period).

Layout of `out_dir` (a freshrec work folder, so `freshrec evaluate --set work_dir=<out_dir>`
scores any grid or merged checkpoint against the grid's tokenizer):

```
out_dir/manifest.json                  contexts, parents, data windows, metrics (atomic writes)
out_dir/<dataset>/prepared/            the time split (EVAL.md)
out_dir/<dataset>/tokenizer/           the shared tokenizer + SID table
out_dir/<dataset>/checkpoints/<name>/best/
```
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import re
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freshrec.atomic import write_json
from freshrec.config import Recipe
from freshrec.data import load_dataset, save_split, time_split
from freshrec.data.schema import Dataset, Interactions, Items, Requests, Split
from freshrec.data.split import TEST, TRAIN, VALID, first_seen
from freshrec.data.split import _build as _build_split
from freshrec.data.text import CATEGORIES, GENRES, section_values
from freshrec.errors import CheckpointError, ConfigError, validation_problems
from freshrec.manifest import read_manifest
from freshrec.model.batches import Examples, history_tokens, user_bucket_tokens, window_starts
from freshrec.model.checkpoint import CONFIG
from freshrec.model.config import ModelConfig
from freshrec.semid.vocab import BOS, PAD, SidVocab

__all__ = [
    "ALL",
    "MANIFEST",
    "Grid",
    "GridConfig",
    "GridEntry",
    "assign_domains",
    "auto_domains",
    "build_grid",
    "context_split",
    "item_labels",
    "label_counts",
    "load_grid",
    "phase_bounds",
    "phase_names",
    "window_examples",
    "window_positions",
]

ALL = "all"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_FIELDS = {"genres": GENRES, "categories": CATEGORIES}


# ----------------------------------------------------------------------------------- config
class GridConfig(BaseModel):
    """Options of `build_grid` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    phases: list[float] = Field(
        default_factory=lambda: [0.6, 0.8],
        description="boundaries pretrain | phase1 | ... | phaseK inside the training period, "
        "fractions in (0, 1), strictly increasing",
    )
    phase_unit: Literal["interactions", "time"] = Field(
        "interactions",
        description="phases cut the training period by share of interactions or of time span",
    )
    domains: dict[str, list[str]] | None = Field(
        None, description="domain name -> primary labels; None = auto_domains(n_domains)"
    )
    n_domains: int = Field(3, ge=1, description="number of domains when `domains` is None")
    label_field: Literal["auto", "genres", "categories"] = "auto"
    label_level: int = Field(0, ge=0, description="which listed label is primary (0 = first)")
    include_all: bool = Field(True, description="also train the all-items track")
    pretrain_epochs: int = Field(4, ge=1)
    phase_epochs: int = Field(3, ge=1)
    phase_lr: float | None = Field(None, gt=0, description="lr of later phases (None = recipe)")
    validate_on: Literal["valid", "next"] = Field(
        "valid",
        description="early stopping of every checkpoint on its context's requests of the time "
        "split's validation period ('valid', as EVAL.md tunes everything), or of the window "
        "after the checkpoint's own ('next': pretrain on phase 1, ..., the last on validation)",
    )
    valid_requests: int | None = Field(
        300, ge=1, description="validation requests per epoch (None = recipe's)"
    )
    min_window_interactions: int = Field(
        100, ge=1, description="each (phase, track) window needs at least this many"
    )

    @field_validator("phases")
    @classmethod
    def _phases(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one boundary (pretrain | phase1)")
        if any(not 0.0 < f < 1.0 for f in value) or any(
            b <= a for a, b in itertools.pairwise(value)
        ):
            raise ValueError(f"must be strictly increasing fractions in (0, 1), got {value}")
        return value

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, source: str = "grid options") -> GridConfig:
        """Validate a mapping; `ConfigError` with one `field: message` per problem."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            problems = validation_problems(exc, empty="options", strip_value_error=True)
            raise ConfigError(f"{source}: {problems}") from None


def phase_names(n_later: int) -> list[str]:
    """['pretrain', 'phase1', ..., 'phase<n_later>']."""
    return ["pretrain"] + [f"phase{k}" for k in range(1, n_later + 1)]


# ----------------------------------------------------------------------------------- domains
def item_labels(
    items: Items, field: Literal["auto", "genres", "categories"] = "auto", level: int = 0
) -> np.ndarray:
    """object[n_items] primary label of each item ("" when it has none), read from the item
    text's `Genres: a, b.` (MovieLens) or `Categories: a, b.` (Amazon) sentence: entry `level`
    of the comma-separated list (MovieLens lists genres alphabetically; level 0 = first)."""
    texts = pl.Series("text", list(items.texts), dtype=pl.String)
    if field == "auto":
        field = "genres" if texts.str.contains(f"{GENRES}: ", literal=True).any() else "categories"
    listed = section_values(texts, _FIELDS[field])
    label = listed.str.split(", ").list.get(level, null_on_oob=True).str.strip_chars()
    return np.asarray(label.fill_null("").to_list(), dtype=object)


def label_counts(labels: np.ndarray, item: np.ndarray) -> dict[str, int]:
    """Interactions per primary label (`item`: int[n] item of each interaction), largest first;
    items without a label are left out."""
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(inverse[item], minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    return {str(names[i]): int(counts[i]) for i in order if names[i] != "" and counts[i] > 0}


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "domain"


def auto_domains(counts: Mapping[str, int], k: int) -> dict[str, list[str]]:
    """Group labels into `k` domains of similar interaction counts (greedy: the largest label
    goes to the lightest domain). Each domain is named after its largest label."""
    if k < 1:
        raise ConfigError(f"n_domains must be >= 1, got {k}")
    if len(counts) < k:
        raise ConfigError(f"cannot make {k} domains from {len(counts)} labels ({list(counts)})")
    bins: list[list[str]] = [[] for _ in range(k)]
    load = np.zeros(k, dtype=np.int64)
    for label, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        i = int(np.argmin(load))
        bins[i].append(label)
        load[i] += c
    names: dict[str, list[str]] = {}
    for group in bins:
        name = _slug(group[0])
        while name in names or name == ALL:
            name += "-"
        names[name] = group
    return names


def assign_domains(labels: np.ndarray, domains: Mapping[str, Sequence[str]]) -> np.ndarray:
    """int64[n_items] index (into `list(domains)`) of each item's domain, -1 for none.

    ConfigError for a bad name, an empty domain, a label no item has, or a label in two domains.
    """
    if not domains:
        raise ConfigError("grid: no domains given")
    known = sorted({str(x) for x in labels if x})
    owner: dict[str, str] = {}
    for name, group in domains.items():
        if name == ALL:
            raise ConfigError(f"grid: domain name {ALL!r} is reserved for the all-items track")
        if not _NAME.match(name):
            raise ConfigError(
                f"grid: domain name {name!r} must be letters, digits, '_', '.', '+', '-'"
            )
        if not group:
            raise ConfigError(f"grid: domain {name!r} is empty (lists no labels)")
        for label in group:
            if label not in known:
                raise ConfigError(
                    f"grid: domain {name!r}: unknown label {label!r}; the catalog's primary "
                    f"labels are: {', '.join(known)}"
                )
            if label in owner:
                raise ConfigError(
                    f"grid: label {label!r} is in domains {owner[label]!r} and {name!r}; "
                    "domains must be disjoint"
                )
            owner[label] = name
    index = {name: i for i, name in enumerate(domains)}
    lut = {label: index[name] for label, name in owner.items()}
    return np.fromiter((lut.get(str(x), -1) for x in labels), dtype=np.int64, count=len(labels))


# ----------------------------------------------------------------------------------- windows
def phase_bounds(
    ts: np.ndarray, train_end: int, fractions: Sequence[float], unit: str = "interactions"
) -> np.ndarray:
    """int64[K+2] time bounds `[t_min, b_1, ..., b_K, train_end]` of pretrain, phase1..K.

    ts: int64[n] timestamps of the training-period interactions (all < train_end).
    unit "interactions": b_k is the `fractions[k]` quantile of `ts` (equal-count phases);
    "time": `t_min + f * (train_end - t_min)`. A window [b_k, b_k+1) holds `t >= b_k, < b_k+1`.
    """
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size == 0:
        raise ConfigError("grid: the training period has no interactions")
    t_min = int(ts.min())
    f = np.asarray(fractions, dtype=np.float64)
    if unit == "interactions":
        inner = np.ceil(np.quantile(ts, f, method="higher")).astype(np.int64)
    elif unit == "time":
        inner = np.ceil(t_min + f * (train_end - t_min)).astype(np.int64)
    else:
        raise ConfigError(f"grid: phase_unit must be 'interactions' or 'time', got {unit!r}")
    bounds = np.concatenate([[t_min], inner, [train_end]]).astype(np.int64)
    if np.any(np.diff(bounds) <= 0):
        raise ConfigError(
            f"grid: phases {list(fractions)} ({unit}) give empty or out-of-order windows "
            f"(bounds {bounds.tolist()}); choose boundaries further apart"
        )
    return bounds


def context_split(
    dataset: Dataset, cutoffs: tuple[int, int], item_mask: np.ndarray | None = None
) -> Split:
    """A time split of the interactions on `item_mask` items (None = all) with given cutoffs.

    Train `ts < cutoffs[0] <=` valid `< cutoffs[1] <=` test. Sequences, histories and requests
    hold only the context's items; `is_new[i]`: item i has no interaction of this context
    before `cutoffs[0]` (items outside the context count as new: never in its warm catalog).
    """
    cut1, cut2 = int(cutoffs[0]), int(cutoffs[1])
    if cut2 < cut1:
        raise ConfigError(f"context cutoffs must be ordered, got {cutoffs}")
    inter = dataset.interactions
    if item_mask is not None:
        item_mask = np.asarray(item_mask, dtype=bool)
        if item_mask.shape != (dataset.n_items,):
            raise ConfigError(f"item_mask must be bool[{dataset.n_items}], got {item_mask.shape}")
        keep = item_mask[inter.item]
        inter = Interactions(inter.user[keep], inter.item[keep], inter.ts[keep])
    meta = {k: v for k, v in dataset.meta.items() if k != "official_part"}
    sub = dataclasses.replace(dataset, interactions=inter, meta=meta)
    part = np.where(inter.ts < cut1, TRAIN, np.where(inter.ts < cut2, VALID, TEST))
    is_new = first_seen(sub) >= cut1
    return _build_split(
        sub, part.astype(np.int8), scheme="time", cutoffs=(cut1, cut2), is_new=is_new
    )


def window_positions(split: Split, start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(user int64[n], pos int64[n]) of the training-period interactions of `split` at or after
    `start` (None: all), each user's first interaction excluded (it has no history).

    Sorted by (user, pos); per user the positions are contiguous up to `train_len[user]`.
    """
    offsets = np.asarray(split.seq_offsets, dtype=np.int64)
    counts = np.diff(offsets)
    user = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    pos = np.arange(int(offsets[-1]), dtype=np.int64) - offsets[user]
    keep = (pos >= 1) & (pos < np.asarray(split.train_len, dtype=np.int64)[user])
    if start is not None:
        keep &= np.asarray(split.seq_ts) >= start
    return user[keep], pos[keep]


def _causal_rows(
    split: Split, users: np.ndarray, pos: np.ndarray, window: int, min_context: int
) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Window rows (items, first target index, user) covering the targets `(users, pos)`."""
    rows_items: list[np.ndarray] = []
    rows_first: list[int] = []
    rows_user: list[int] = []
    if users.size == 0:
        return rows_items, rows_first, rows_user
    uniq, first_idx = np.unique(users, return_index=True)
    offsets = np.asarray(split.seq_offsets, dtype=np.int64)
    train_len = np.asarray(split.train_len, dtype=np.int64)
    for u, a in zip(uniq.tolist(), pos[first_idx].tolist(), strict=True):
        lo = max(0, a - max(min_context, 1))  # context before the first target
        seq = split.seq_items[offsets[u] + lo : offsets[u] + train_len[u]].astype(np.int64)
        prev_end = a - lo
        for s in window_starts(len(seq), window, min_context):
            end = min(s + window, len(seq))
            first = max(prev_end, s) - s
            if first < end - s:
                rows_items.append(seq[s:end])
                rows_first.append(first)
                rows_user.append(u)
            prev_end = end
    return rows_items, rows_first, rows_user


def window_examples(
    config: ModelConfig,
    split: Split,
    sid_tokens: np.ndarray,
    vocab: SidVocab | None = None,
    start: int | None = None,
) -> Examples:
    """Training examples of `config.arch` whose targets are the training-period interactions
    of `split` at or after `start` (`window_positions`); histories/context reach back before
    `start`. With `start=None` this equals `model.batches.training_examples`.

    tiger: {"history": int32[n, T], "target": int32[n, sid_len]}, one row per target.
    causal: {"tokens": int32[n, S], "targets": bool[n, S]}: windows of W = max_history + 1
    items, stride W - min_context, each target trained exactly once with >= min_context items
    of context where the sequence has them (as `causal_windows`).
    """
    users, pos = window_positions(split, start)
    table = np.asarray(sid_tokens, dtype=np.int64)
    if config.example_layout == "targets":
        target = split.seq_items[np.asarray(split.seq_offsets)[users] + pos]
        req = Requests(
            users.astype(np.int32), pos.astype(np.int32), target, np.zeros(len(users), bool)
        )
        hist = split.histories(req, config.max_history)
        return {
            "history": history_tokens(hist, table, users, vocab).numpy().astype(np.int32),
            "target": table[target].astype(np.int32),
        }
    P = table.shape[1]
    W = config.max_history + 1
    rows_items, rows_first, rows_user = _causal_rows(split, users, pos, W, config.min_context)
    with_user = vocab is not None and vocab.user_buckets > 0
    head = 2 if with_user else 1
    n = len(rows_items)
    items = np.full((n, W), -1, dtype=np.int64)
    if n:
        lengths = np.fromiter((len(r) for r in rows_items), dtype=np.int64, count=n)
        items[np.arange(W)[None, :] < lengths[:, None]] = np.concatenate(rows_items)
    tok = table[np.maximum(items, 0)]
    tok[items < 0] = PAD
    tokens = np.full((n, head + W * P), PAD, dtype=np.int64)
    tokens[:, 0] = BOS
    if with_user:
        assert vocab is not None
        tokens[:, 1] = user_bucket_tokens(np.asarray(rows_user, dtype=np.int64), vocab)
    tokens[:, head:] = tok.reshape(n, W * P)
    first = np.asarray(rows_first, dtype=np.int64).reshape(n, 1)
    is_target = (np.arange(W)[None, :] >= first) & (items >= 0)
    targets = np.zeros((n, head + W * P), dtype=bool)
    targets[:, head:] = np.repeat(is_target, P, axis=1)
    return {"tokens": tokens.astype(np.int32), "targets": targets}


# ----------------------------------------------------------------------------------- manifest
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


# ----------------------------------------------------------------------------------- build
def _iso(t: int) -> str:
    return _dt.datetime.fromtimestamp(int(t), _dt.UTC).isoformat(timespec="seconds")


def _window_info(split: Split, start: int, end: int, users: np.ndarray) -> dict[str, Any]:
    ts = np.asarray(split.seq_ts)
    in_train = window_positions(split, None)
    train_ts = ts[np.asarray(split.seq_offsets)[in_train[0]] + in_train[1]]
    return {
        "start": int(start),
        "end": int(end),
        "start_iso": _iso(start),
        "end_iso": _iso(end),
        "n_interactions": int(((ts >= start) & (ts < end)).sum()),
        "n_targets": int(users.size),
        "n_users": int(np.unique(users).size),
        "n_history_interactions": int((train_ts < start).sum()),
    }


def _spec(
    recipe: Recipe, cfg: GridConfig, domains: Mapping[str, Sequence[str]], dataset: Dataset
) -> dict[str, Any]:
    """What the checkpoints depend on (for resuming): the recipe without `eval`, `work_dir` and
    the train fields the grid replaces, the grid options, the resolved domains and a checksum
    of the interactions."""
    rec = recipe.to_dict()
    for key in ("eval", "work_dir"):
        rec.pop(key, None)
    rec["train"].pop("epochs", None)
    if cfg.valid_requests is not None:
        rec["train"].pop("valid_requests", None)
    inter = dataset.interactions
    crc = 0
    for arr in (inter.user, inter.item, inter.ts):
        crc = zlib.crc32(np.ascontiguousarray(arr).tobytes(), crc)
    data = {"name": dataset.name, "n_items": dataset.n_items, "n": len(inter), "crc32": crc}
    return {
        "recipe": rec,
        "grid": cfg.model_dump(mode="json"),
        "domains": dict(domains),
        "data": data,
    }


def _hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _log(progress: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if progress:
            print(f"[grid] {msg}", flush=True)

    return say


def build_grid(
    recipe: Recipe,
    out_dir: str | Path,
    cfg: GridConfig | None = None,
    *,
    emb: np.ndarray | None = None,
    dataset: Dataset | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Grid:
    """Build (or finish) the checkpoint grid of `recipe` under `out_dir`; returns the manifest.

    emb: float32[n_items, d] item embeddings (default: MiniLM, cached under out_dir).
    dataset: the loaded dataset (default: `recipe.data`). resume: keep checkpoints already in
    `out_dir/manifest.json` when it was built with the same recipe and options (ConfigError
    if the options differ); False rebuilds every checkpoint.

    ConfigError (before any training) for a non-time split, unknown/overlapping labels, an
    empty domain, or phases whose (phase, track) windows hold < `min_window_interactions`.
    """
    from freshrec import pipeline
    from freshrec.model.base import build_model
    from freshrec.model.checkpoint import save_checkpoint
    from freshrec.semid import assign_new_items, fit_sids
    from freshrec.train.trainer import seed_everything

    cfg = cfg or GridConfig()
    say = _log(progress)
    out_dir = Path(out_dir)
    if recipe.data.split != "time":
        raise ConfigError(
            f"grid: needs the time split (data.split=time), got data.split={recipe.data.split}"
        )
    recipe = recipe.model_copy(update={"work_dir": str(out_dir)})
    ws = pipeline.workspace(recipe)

    # ---- data, domains, windows: every check before any expensive work
    if dataset is None:
        kw: dict[str, Any] = (
            {"category": recipe.data.category} if recipe.data.kind == "amazon" else {}
        )
        dataset = load_dataset(recipe.data.kind, recipe.data.path, **kw)
    split = time_split(dataset, recipe.data.train_frac, recipe.data.valid_frac)
    assert split.cutoffs is not None
    cut1, cut2 = split.cutoffs
    labels = item_labels(dataset.items, cfg.label_field, cfg.label_level)
    counts = label_counts(labels, dataset.interactions.item)
    if not counts:
        raise ConfigError(
            f"grid: no item of {dataset.name!r} has a {cfg.label_field} label in its text; "
            "domains need genres (MovieLens) or categories (Amazon)"
        )
    domains = cfg.domains if cfg.domains is not None else auto_domains(counts, cfg.n_domains)
    item_domain = assign_domains(labels, domains)
    inter = dataset.interactions
    bounds = phase_bounds(inter.ts[inter.ts < cut1], cut1, cfg.phases, cfg.phase_unit)
    phases = phase_names(len(cfg.phases))
    tracks = list(domains) + ([ALL] if cfg.include_all else [])
    masks = {d: item_domain == i for i, d in enumerate(domains)}
    masks[ALL] = np.ones(dataset.n_items, dtype=bool)
    _check_windows(inter, bounds, phases, tracks, masks, cfg.min_window_interactions)

    spec = _spec(recipe, cfg, domains, dataset)
    spec_hash = _hash(spec)
    previous = _previous(out_dir, spec_hash, resume)
    save_split(split, ws.prepared)

    # ---- shared tokenizer: fitted on pretrain-period items, the rest assigned without refit
    if previous is not None and (ws.tokenizer / "sid_table.npz").exists():
        tokenizer, table = pipeline.load_tokenized(recipe)
        if tokenizer.fingerprint != previous.tokenizer_fingerprint:
            previous = None
    else:
        previous = None
    if previous is None:
        if emb is None:
            emb = pipeline.item_embeddings(recipe, split)
        seen = first_seen(dataset)
        pre = np.flatnonzero(seen < bounds[1])
        rest = np.flatnonzero(seen >= bounds[1])
        say(f"fitting the SID tokenizer on {pre.size} pretrain-period items")
        tokenizer, table = fit_sids(recipe.semid, emb[pre], pre, dataset.n_items)
        table = assign_new_items(tokenizer, table, emb[rest], rest)
        tokenizer.save(ws.tokenizer, table)
    vocab = tokenizer.vocab
    sid_tokens = table.tokens(vocab)

    grid = Grid(
        root=out_dir,
        dataset=recipe.data.dataset_name,
        spec=spec,
        spec_hash=spec_hash,
        tokenizer_fingerprint=tokenizer.fingerprint,
        cutoffs=(int(cut1), int(cut2)),
        bounds=[int(b) for b in bounds],
        phases=phases,
        domains={
            d: {
                "labels": list(domains[d]) if d != ALL else ["*"],
                "n_items": int(masks[d].sum()),
                "n_interactions": int(masks[d][inter.item].sum()),
            }
            for d in tracks
        },
        entries={} if previous is None else dict(previous.entries),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    rel = lambda name: f"{grid.dataset}/checkpoints/{name}/best"  # noqa: E731

    def done(name: str) -> bool:
        return name in grid.entries and (out_dir / grid.entries[name].path / CONFIG).exists()

    # ---- init: the weights pretrain starts from (task vectors "without base replacement")
    if not done("init"):
        seed_everything(recipe.train.seed)
        model = build_model(recipe.model, vocab)
        save_checkpoint(model, out_dir / rel("init"), tokenizer.fingerprint, {"grid": "init"})
        grid.entries["init"] = GridEntry(
            "init", "init", ALL, None, rel("init"), {}, {}, {"seed": recipe.train.seed}
        )
        grid.save()

    def train_one(name: str, k: int, track: str, parent: str, epochs: int, lr: float) -> None:
        """Train window k (0 = pretrain) of `track` from checkpoint `parent`."""
        end = int(bounds[k + 1])
        if cfg.validate_on == "valid":  # the time split's validation period, for every checkpoint
            valid_start, valid_end = int(cut1), int(cut2)
        else:  # the next window of the context's data
            valid_start, valid_end = end, int(bounds[k + 2]) if k + 2 < len(bounds) else int(cut2)
        ctx = context_split(dataset, (end, valid_end), masks[track])
        if valid_start > end:  # drop requests between the window's end and the validation start
            v_ts = ctx.seq_ts[ctx.seq_offsets[ctx.valid.user] + ctx.valid.pos]
            ctx = dataclasses.replace(ctx, valid=ctx.valid.subset(v_ts >= valid_start))
        start = None if k == 0 else int(bounds[k])
        examples = window_examples(recipe.model, ctx, sid_tokens, vocab, start)
        users, _ = window_positions(ctx, start)
        train_cfg = recipe.train.model_copy(
            update={
                "epochs": epochs,
                "lr": lr,
                "valid_requests": cfg.valid_requests or recipe.train.valid_requests,
            }
        )
        r = recipe.model_copy(update={"train": train_cfg})
        say(f"training {name} from {parent}: {users.size} targets, {epochs} epochs")
        out = pipeline.train(
            r,
            ctx,
            tokenizer,
            table,
            name=name,
            progress=progress,
            examples=examples,
            init_from=grid.path(parent),
        )
        res = out.result
        grid.entries[name] = GridEntry(
            name=name,
            phase=phases[k],
            domain=track,
            parent=parent,
            path=rel(name),
            window=_window_info(ctx, int(bounds[k]), int(bounds[k + 1]), users),
            validation={
                "on": cfg.validate_on,
                "start": valid_start,
                "end": valid_end,
                "n_requests": len(ctx.valid),
                "sampled": train_cfg.valid_requests,
            },
            metrics={
                "valid_ndcg10": res.best_valid,
                "best_epoch": res.best_epoch,
                "epochs_run": res.epochs_run,
                "train_seconds": res.seconds,
                "sec_per_epoch": res.sec_per_epoch,
                "n_examples": int(next(iter(examples.values())).shape[0]),
                "lr": lr,
            },
        )
        grid.save()
        say(f"{name}: valid N@10 {res.best_valid:.4f} (epoch {res.best_epoch}), {res.seconds:.0f}s")

    if not done("pretrain"):
        train_one("pretrain", 0, ALL, "init", cfg.pretrain_epochs, recipe.train.lr)
    lr = cfg.phase_lr or recipe.train.lr
    for track in tracks:
        parent = "pretrain"
        for k in range(1, len(phases)):
            name = grid.name(phases[k], track)
            if not done(name):
                train_one(name, k, track, parent, cfg.phase_epochs, lr)
            parent = name
    grid.complete = True
    grid.save()
    return grid


def _check_windows(
    inter: Interactions,
    bounds: np.ndarray,
    phases: list[str],
    tracks: list[str],
    masks: Mapping[str, np.ndarray],
    minimum: int,
) -> None:
    """ConfigError listing every trained window with fewer than `minimum` interactions: the
    pretrain period (all items) and phases 1..K of every track."""
    phase_of = np.searchsorted(bounds, inter.ts, side="right") - 1  # -1 / K+1: outside
    n_all = np.bincount(phase_of[(phase_of >= 0) & (phase_of < len(phases))], minlength=len(phases))
    bad = [f"pretrain: {int(n_all[0])}"] if n_all[0] < minimum else []
    for d in tracks:
        on = masks[d][inter.item]
        if not on.any():
            raise ConfigError(f"grid: domain {d!r} has no interactions")
        sel = on & (phase_of >= 1) & (phase_of < len(phases))
        n = np.bincount(phase_of[sel], minlength=len(phases))
        bad += [f"{phases[k]}/{d}: {int(n[k])}" for k in range(1, len(phases)) if n[k] < minimum]
    if bad:
        raise ConfigError(
            f"grid: phases do not fit the data: windows with fewer than {minimum} interactions "
            f"({', '.join(bad)}); move the phase boundaries or merge small domains"
        )


def _previous(out_dir: Path, spec_hash: str, resume: bool) -> Grid | None:
    """The grid already in `out_dir` to continue, or None (cleared when not resuming)."""
    if not (out_dir / MANIFEST).exists():
        return None
    old = load_grid(out_dir)
    if not resume:
        for entry in old.entries.values():
            shutil.rmtree((out_dir / entry.path).parent, ignore_errors=True)
        (out_dir / MANIFEST).unlink()
        return None
    if old.spec_hash != spec_hash:
        raise ConfigError(
            f"{out_dir} holds a grid built with other options (spec {old.spec_hash}, now "
            f"{spec_hash}); use another folder or rebuild it (resume=False / --rebuild)"
        )
    return old
