"""`build_grid`: train the checkpoint grid (init -> pretrain -> phase 1..K per track) with one
shared SID tokenizer, resuming a partly built grid; see the package docstring for the layout."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from freshrec.config import Recipe
from freshrec.data import load_dataset, save_split, time_split
from freshrec.data.schema import Dataset, Split
from freshrec.data.split import first_seen
from freshrec.errors import ConfigError
from freshrec.merge.grid.config import ALL, GridConfig, phase_names
from freshrec.merge.grid.domains import assign_domains, auto_domains, item_labels, label_counts
from freshrec.merge.grid.manifest import MANIFEST, Grid, GridEntry, load_grid
from freshrec.merge.grid.windows import (
    check_windows,
    context_split,
    phase_bounds,
    window_examples,
    window_positions,
)
from freshrec.model.checkpoint import CONFIG

if TYPE_CHECKING:
    from freshrec.semid import SemanticTokenizer, SidTable

__all__ = ["build_grid"]


@dataclasses.dataclass
class _Plan:
    """The grid's data, checked before any training: the time split, its `cutoffs`, the
    phase `bounds` (int64[K+2]), and per track (domains, then `all`) an item mask."""

    dataset: Dataset
    split: Split
    cutoffs: tuple[int, int]
    domains: Mapping[str, Sequence[str]]
    bounds: np.ndarray
    phases: list[str]
    tracks: list[str]
    masks: dict[str, np.ndarray]


def _plan(recipe: Recipe, cfg: GridConfig, dataset: Dataset | None) -> _Plan:
    """Load and split the data, resolve the domains and check every window (ConfigError)."""
    if recipe.data.split != "time":
        raise ConfigError(
            f"grid: needs the time split (data.split=time), got data.split={recipe.data.split}"
        )
    if dataset is None:
        dataset = load_dataset(recipe.data.kind, recipe.data.path, **recipe.data.loader_options())
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
    check_windows(inter, bounds, phases, tracks, masks, cfg.min_window_interactions)
    return _Plan(dataset, split, (int(cut1), int(cut2)), domains, bounds, phases, tracks, masks)


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


def _shared_tokenizer(
    recipe: Recipe,
    plan: _Plan,
    previous: Grid | None,
    emb: np.ndarray | None,
    say: Callable[[str], None],
) -> tuple[SemanticTokenizer, SidTable, Grid | None]:
    """(tokenizer, table, grid to resume): the previous grid's tokenizer when it is still in
    the work folder, else one fitted on the pretrain-period items (the rest assigned without
    refit) and saved; a new fit drops the previous grid (its checkpoints no longer fit)."""
    from freshrec import pipeline
    from freshrec.semid import assign_new_items, fit_sids

    ws = pipeline.workspace(recipe)
    if previous is not None and (ws.tokenizer / "sid_table.npz").exists():
        tokenizer, table = pipeline.load_tokenized(recipe)
        if tokenizer.fingerprint == previous.tokenizer_fingerprint:
            return tokenizer, table, previous
    if emb is None:
        emb = pipeline.item_embeddings(recipe, plan.split)
    seen = first_seen(plan.dataset)
    pre = np.flatnonzero(seen < plan.bounds[1])
    rest = np.flatnonzero(seen >= plan.bounds[1])
    say(f"fitting the SID tokenizer on {pre.size} pretrain-period items")
    tokenizer, table = fit_sids(recipe.semid, emb[pre], pre, plan.dataset.n_items)
    table = assign_new_items(tokenizer, table, emb[rest], rest)
    tokenizer.save(ws.tokenizer, table)
    return tokenizer, table, None


def _new_grid(
    out_dir: Path,
    recipe: Recipe,
    plan: _Plan,
    spec: dict[str, Any],
    fingerprint: str,
    previous: Grid | None,
) -> Grid:
    """The manifest of this build, holding the previous grid's entries when resuming."""
    inter = plan.dataset.interactions
    return Grid(
        root=out_dir,
        dataset=recipe.data.dataset_name,
        spec=spec,
        spec_hash=_hash(spec),
        tokenizer_fingerprint=fingerprint,
        cutoffs=plan.cutoffs,
        bounds=[int(b) for b in plan.bounds],
        phases=plan.phases,
        domains={
            d: {
                "labels": list(plan.domains[d]) if d != ALL else ["*"],
                "n_items": int(plan.masks[d].sum()),
                "n_interactions": int(plan.masks[d][inter.item].sum()),
            }
            for d in plan.tracks
        },
        entries={} if previous is None else dict(previous.entries),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )


@dataclasses.dataclass
class _Run:
    """One build: trains the missing checkpoints of `grid` and records them in its manifest."""

    recipe: Recipe
    cfg: GridConfig
    plan: _Plan
    grid: Grid
    tokenizer: SemanticTokenizer
    table: SidTable
    progress: bool

    def __post_init__(self) -> None:
        self.say = _log(self.progress)
        self.sid_tokens = self.table.tokens(self.tokenizer.vocab)

    def rel(self, name: str) -> str:
        return f"{self.grid.dataset}/checkpoints/{name}/best"

    def done(self, name: str) -> bool:
        entries = self.grid.entries
        return name in entries and (self.grid.root / entries[name].path / CONFIG).exists()

    def save_init(self) -> None:
        """The weights pretrain starts from (task vectors "without base replacement")."""
        from freshrec.model.base import build_model
        from freshrec.model.checkpoint import save_checkpoint
        from freshrec.train.trainer import seed_everything

        seed = self.recipe.train.seed
        seed_everything(seed)
        model = build_model(self.recipe.model, self.tokenizer.vocab)
        path = self.grid.root / self.rel("init")
        save_checkpoint(model, path, self.tokenizer.fingerprint, {"grid": "init"})
        self.grid.entries["init"] = GridEntry(
            "init", "init", ALL, None, self.rel("init"), {}, {}, {"seed": seed}
        )
        self.grid.save()

    def context(self, k: int, track: str) -> tuple[Split, int, int]:
        """(split of `track`'s data for window k, validation start, validation end): the time
        split's validation period, or with `validate_on="next"` the next window."""
        bounds, (cut1, cut2) = self.plan.bounds, self.plan.cutoffs
        end = int(bounds[k + 1])
        if self.cfg.validate_on == "valid":
            valid_start, valid_end = cut1, cut2
        else:
            valid_start, valid_end = end, int(bounds[k + 2]) if k + 2 < len(bounds) else cut2
        ctx = context_split(self.plan.dataset, (end, valid_end), self.plan.masks[track])
        if valid_start > end:  # drop requests between the window's end and the validation start
            v_ts = ctx.seq_ts[ctx.seq_offsets[ctx.valid.user] + ctx.valid.pos]
            ctx = dataclasses.replace(ctx, valid=ctx.valid.subset(v_ts >= valid_start))
        return ctx, valid_start, valid_end

    def train(self, name: str, k: int, track: str, parent: str, epochs: int, lr: float) -> None:
        """Train window k (0 = pretrain) of `track` from checkpoint `parent`; record it."""
        from freshrec import pipeline

        ctx, valid_start, valid_end = self.context(k, track)
        start = None if k == 0 else int(self.plan.bounds[k])
        vocab = self.tokenizer.vocab
        examples = window_examples(self.recipe.model, ctx, self.sid_tokens, vocab, start)
        users, _ = window_positions(ctx, start)
        valid_requests = self.cfg.valid_requests or self.recipe.train.valid_requests
        train_cfg = self.recipe.train.model_copy(
            update={"epochs": epochs, "lr": lr, "valid_requests": valid_requests}
        )
        r = self.recipe.model_copy(update={"train": train_cfg})
        self.say(f"training {name} from {parent}: {users.size} targets, {epochs} epochs")
        res = pipeline.train(
            r,
            ctx,
            self.tokenizer,
            self.table,
            name=name,
            progress=self.progress,
            examples=examples,
            init_from=self.grid.path(parent),
        ).result
        bounds = self.plan.bounds
        self.grid.entries[name] = GridEntry(
            name=name,
            phase=self.plan.phases[k],
            domain=track,
            parent=parent,
            path=self.rel(name),
            window=_window_info(ctx, int(bounds[k]), int(bounds[k + 1]), users),
            validation={
                "on": self.cfg.validate_on,
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
        self.grid.save()
        self.say(
            f"{name}: valid N@10 {res.best_valid:.4f} (epoch {res.best_epoch}), {res.seconds:.0f}s"
        )


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

    cfg = cfg or GridConfig()
    out_dir = Path(out_dir)
    recipe = recipe.model_copy(update={"work_dir": str(out_dir)})
    plan = _plan(recipe, cfg, dataset)  # every check before any expensive work
    spec = _spec(recipe, cfg, plan.domains, plan.dataset)
    previous = _previous(out_dir, _hash(spec), resume)
    save_split(plan.split, pipeline.workspace(recipe).prepared)
    tokenizer, table, previous = _shared_tokenizer(recipe, plan, previous, emb, _log(progress))
    grid = _new_grid(out_dir, recipe, plan, spec, tokenizer.fingerprint, previous)
    run = _Run(recipe, cfg, plan, grid, tokenizer, table, progress)
    if not run.done("init"):
        run.save_init()
    if not run.done("pretrain"):
        run.train("pretrain", 0, ALL, "init", cfg.pretrain_epochs, recipe.train.lr)
    lr = cfg.phase_lr or recipe.train.lr
    for track in plan.tracks:
        parent = "pretrain"
        for k in range(1, len(plan.phases)):
            name = grid.name(plan.phases[k], track)
            if not run.done(name):
                run.train(name, k, track, parent, cfg.phase_epochs, lr)
            parent = name
    grid.complete = True
    grid.save()
    return grid
