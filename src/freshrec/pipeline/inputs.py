"""The first two stages, prepare (load + split the dataset) and tokenize (fit the SID
tokenizer on warm items, assign new items), and loading what they wrote to the workspace
(`freshrec.workspace`); also the console every pipeline stage prints to."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.console import Console

from freshrec.atomic import write_json
from freshrec.config import Recipe
from freshrec.data import (
    leave_one_out,
    load_dataset,
    official_split,
    save_split,
    split_stats,
    stats_table,
    time_split,
)
from freshrec.data.schema import Split
from freshrec.semid import (
    SemanticTokenizer,
    SidTable,
    assign_new_items,
    fit_sids,
    report_table,
    sid_report,
)
from freshrec.workspace import Workspace

console = Console()


def workspace(recipe: Recipe) -> Workspace:
    """The work folder of the recipe's dataset (under `recipe.work_dir`)."""
    return Workspace.for_dataset(recipe.data.dataset_name, recipe.work_dir)


# ----------------------------------------------------------------------------------- data
def prepare(recipe: Recipe, *, show: bool = True) -> Split:
    """Load the dataset, split it, write `<work>/prepared/`, print the stats table."""
    cfg = recipe.data
    dataset = load_dataset(cfg.kind, cfg.path, **cfg.loader_options())
    if cfg.split == "time":
        split = time_split(dataset, cfg.train_frac, cfg.valid_frac)
    elif cfg.split == "loo":
        split = leave_one_out(dataset)
    else:
        split = official_split(dataset)
    ws = workspace(recipe)
    save_split(split, ws.prepared)
    if show:
        console.print(stats_table(split_stats(split), title=f"{cfg.dataset_name} ({cfg.split})"))
    return split


def load_prepared(recipe: Recipe) -> Split:
    return workspace(recipe).load_split()


def item_embeddings(recipe: Recipe, split: Split) -> np.ndarray:
    """float32[n_items, 384] MiniLM embeddings of every item text (cached in the workspace)."""
    return workspace(recipe).item_embeddings(split.dataset.items.texts)


# ----------------------------------------------------------------------------------- SIDs
def tokenize(
    recipe: Recipe, split: Split, emb: np.ndarray | None = None, *, show: bool = True
) -> tuple[SemanticTokenizer, SidTable, dict[str, Any]]:
    """Fit the SID tokenizer on warm (training-period) items, then give new items SIDs
    without refitting. Saves tokenizer + SID table to `<work>/tokenizer/`."""
    if emb is None:
        emb = item_embeddings(recipe, split)
    is_new = np.asarray(split.is_new, dtype=bool)
    warm, new = np.flatnonzero(~is_new), np.flatnonzero(is_new)
    t0 = time.perf_counter()
    tokenizer, table = fit_sids(recipe.semid, emb[warm], warm, split.dataset.n_items)
    fit_s = time.perf_counter() - t0
    table = assign_new_items(tokenizer, table, emb[new], new)
    tokenizer.save(workspace(recipe).tokenizer, table)
    report = {
        "warm": sid_report(_subset_table(table, ~is_new), tokenizer.vocab),
        "all": sid_report(table, tokenizer.vocab),
        "fit_seconds": fit_s,
        "fingerprint": tokenizer.fingerprint,
    }
    write_json(workspace(recipe).tokenizer / "report.json", report)
    if show:
        console.print(report_table(report["warm"], title="Semantic IDs (warm items, fitted)"))
        console.print(report_table(report["all"], title="Semantic IDs (all items, new assigned)"))
        console.print(f"fitted in {fit_s:.1f}s, fingerprint {tokenizer.fingerprint}")
    return tokenizer, table, report


def _subset_table(table: SidTable, mask: np.ndarray) -> SidTable:
    sids = table.sids.copy()
    sids[~mask] = -1
    return SidTable(sids, table.max_collision)


def load_tokenized(recipe: Recipe) -> tuple[SemanticTokenizer, SidTable]:
    return workspace(recipe).load_tokenized()
