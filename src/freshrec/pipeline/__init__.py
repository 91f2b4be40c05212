"""The pipeline: prepare -> tokenize -> train -> evaluate, each stage reading the previous
stage's output from the workspace (see `freshrec.workspace`). The CLI is a thin layer on this.

- `inputs`: prepare, tokenize and loading their outputs (`load_prepared`, `load_tokenized`,
  `item_embeddings`), `workspace(recipe)`;
- `rankers`: the beam ranker of a `Session` (`gr_ranker`) and the fused `fresh_ranker`;
- `training`: `train` (best-on-validation checkpoint), `run_name`;
- `evaluation`: `calibrate` (the fused ranker's fresh.json), `evaluate` (report + plots);
- `recommending`: `recommend_user`;
- `demo` (below): all of it, end to end.
"""

from __future__ import annotations

import time
from pathlib import Path

from freshrec.config import Recipe
from freshrec.model.checkpoint import BEST
from freshrec.pipeline.evaluation import calibrate, evaluate
from freshrec.pipeline.inputs import (
    console,
    item_embeddings,
    load_prepared,
    load_tokenized,
    prepare,
    tokenize,
    workspace,
)
from freshrec.pipeline.rankers import fresh_ranker, gr_ranker
from freshrec.pipeline.recommending import recommend_user
from freshrec.pipeline.training import run_name, train

__all__ = [
    "calibrate",
    "demo",
    "evaluate",
    "fresh_ranker",
    "gr_ranker",
    "item_embeddings",
    "load_prepared",
    "load_tokenized",
    "prepare",
    "recommend_user",
    "run_name",
    "tokenize",
    "train",
    "workspace",
]


def demo(recipe: Recipe) -> dict[str, Path]:
    """The README's main job: prepare -> tokenize -> train (+ calibrate the fused ranker on
    validation) -> evaluate."""
    t0 = time.perf_counter()
    console.rule("1/4 prepare")
    split = prepare(recipe)
    console.rule("2/4 tokenize")
    emb = item_embeddings(recipe, split)
    tokenizer, table, _ = tokenize(recipe, split, emb)
    console.rule(f"3/4 train {recipe.model.arch}")
    trained = train(recipe, split, tokenizer, table)
    if recipe.fresh.calibrate:
        calibrate(recipe, trained.folder / BEST)
    console.rule("4/4 evaluate")
    paths = evaluate(recipe, [trained.folder / BEST], command="freshrec demo")
    console.print(
        f"done in {(time.perf_counter() - t0) / 60:.1f} min. report: {paths['md']}\n"
        f"plots: {paths['collapse']}, {paths['positions']}"
    )
    return paths
