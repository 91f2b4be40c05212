"""Shared set-up of the benchmarks: the default MovieLens split, tokenizer and trained GR
checkpoints under `benchmarks/.work/` (git-ignored), reused across benchmarks when present."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np

from freshrec import pipeline
from freshrec.config import Recipe, load_recipe
from freshrec.data.schema import Split
from freshrec.model.checkpoint import load_checkpoint
from freshrec.semid import SemanticTokenizer, SidTable

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"
RESULTS = ROOT / "results"

# The built-in recipe each architecture is benchmarked with (what users run): `cpu` trains the
# causal model, `tiger-cpu` TIGER, on the same split and SIDs.
RECIPES = {"causal": "cpu", "tiger": "tiger-cpu"}


def repo_path(path: str | Path) -> str:
    """`path` relative to the repository root when inside it (reports carry no machine paths),
    else its name."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT.parent)) if p.is_relative_to(ROOT.parent) else p.name


def command() -> str:
    return " ".join(["python", *(shlex.quote(a) for a in sys.argv)])


CUTS = {"80/10/10": (0.8, 0.1), "70/15/15": (0.7, 0.15), "60/20/20": (0.6, 0.2)}
"""Time cuts of the benchmarks: (train, validation) shares of the time span."""


def cut_overrides(cut: str) -> list[str]:
    """Recipe overrides of a time cut; cuts other than the default get their own work folder."""
    if cut not in CUTS:
        raise SystemExit(f"unknown cut {cut!r}; known: {', '.join(CUTS)}")
    train, valid = CUTS[cut]
    if cut == "80/10/10":
        return []
    name = f"ml-latest-small-{round(train * 100)}"
    return [f"data.train_frac={train}", f"data.valid_frac={valid}", f"data.name={name}"]


def recipe(
    arch: str = "tiger", seed: int = 0, extra: list[str] | None = None, cut: str = "80/10/10"
) -> Recipe:
    overrides = [f"work_dir={WORK}", f"train.seed={seed}", *cut_overrides(cut), *(extra or [])]
    return load_recipe(RECIPES[arch], overrides)


def setup(r: Recipe) -> tuple[Split, np.ndarray, SemanticTokenizer, SidTable]:
    """Prepared split, item embeddings, tokenizer and SID table (built once, then loaded)."""
    ws = pipeline.workspace(r)
    split = pipeline.load_prepared(r) if ws.prepared.exists() else pipeline.prepare(r, show=False)
    emb = pipeline.item_embeddings(r, split)
    if ws.tokenizer.exists():
        tok, table = pipeline.load_tokenized(r)
    else:
        tok, table, _ = pipeline.tokenize(r, split, emb, show=False)
    return split, emb, tok, table


def training_settings(r: Recipe) -> dict:
    """What a run's weights depend on besides data and seed: the model and training sections
    (minus the thread count); cached rows and checkpoints are checked against it."""
    return {"model": r.model.model_dump(), "train": r.train.model_dump(exclude={"num_threads"})}


def ranking_settings(r: Recipe) -> dict:
    """`training_settings` plus the decoding settings a GR row's scores depend on."""
    return {
        **training_settings(r),
        "eval": r.eval.model_dump(include={"beam_size", "prompt_new_items"}),
    }


def recipe_change(r: Recipe, folder: Path) -> str:
    """'' when run folder `folder` was trained with `r`'s model and training settings, else
    the differing keys (a run without recipe.json counts as different)."""
    path = folder / "recipe.json"
    if not path.exists():
        return "no recipe.json"
    saved = json.loads(path.read_text())
    then = r.model_copy(
        update={
            "model": type(r.model).model_validate(saved["model"]),
            "train": type(r.train).model_validate(saved["train"]),
        }
    )
    old, new = training_settings(then), training_settings(r)
    diff = [f"{s}.{k}" for s in new for k in new[s] if old[s].get(k) != new[s][k]]
    return ", ".join(diff)


def trained(
    r: Recipe,
    split: Split,
    tok: SemanticTokenizer,
    table: SidTable,
    retrain: bool,
    name: str | None = None,
):
    """(model, train_log dict) of `r`'s run (folder `name`, default `pipeline.run_name(r)`);
    trains unless a finished run exists."""
    name = name or pipeline.run_name(r)
    folder = pipeline.workspace(r).checkpoints(name)
    log_path = folder / "train_log.json"
    if log_path.exists() and not retrain and (stale := recipe_change(r, folder)):
        raise SystemExit(
            f"{folder} was trained with another recipe ({stale}): move it away, or pass "
            "--retrain where the benchmark has it"
        )
    if retrain or not log_path.exists():
        pipeline.train(r, split, tok, table, name=name, progress=False, resume=True)
    model = load_checkpoint(folder / "best", expect_fingerprint=tok.fingerprint)
    return model, json.loads(log_path.read_text())
