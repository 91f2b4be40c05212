"""The evaluate stage: calibrating the fused fresh-item ranker on validation requests, and
evaluating checkpoints (warm / full catalog, fused ranker) and baselines into a report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.config import Recipe
from freshrec.data.schema import Split
from freshrec.evaluate.protocol import EvalResult, evaluate_ranker
from freshrec.model.base import GenerativeRecommender
from freshrec.model.checkpoint import load_checkpoint
from freshrec.pipeline.inputs import (
    console,
    item_embeddings,
    load_prepared,
    load_tokenized,
    workspace,
)
from freshrec.pipeline.rankers import ReusedBeam, fresh_ranker, gr_ranker
from freshrec.recommend.fresh import FreshParams
from freshrec.semid import SidTable


def calibrate(
    recipe: Recipe, checkpoint: str | Path, *, show: bool = True
) -> tuple[FreshParams, Path]:
    """Fit the fused ranker on validation requests (`recipe.fresh`) and save it as the
    checkpoint's fresh.json. Returns (params, path)."""
    from freshrec.evaluate.fresh_fit import fit_fresh
    from freshrec.model.checkpoint import resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    split = load_prepared(recipe)
    tokenizer, table = load_tokenized(recipe)
    model = load_checkpoint(folder, expect_fingerprint=tokenizer.fingerprint)
    ranker = fresh_ranker(recipe, model, table, split, item_embeddings(recipe, split))
    cfg = recipe.fresh
    params, _, _ = fit_fresh(
        ranker,
        split,
        max_requests=cfg.valid_requests,
        seed=cfg.seed,
        budget=cfg.budget,
        objective=cfg.objective,
    )
    path = params.save(folder)
    if show:
        fit = params.fitted or {}
        gr, fr = fit.get("gr", {}), fit.get("fresh", {})
        console.print(
            f"fresh ranker calibrated on {fit.get('n_requests')} validation requests "
            f"(warm budget {cfg.budget:.1%}): cold R@20 {gr.get('cold_recall20', 0):.4f} -> "
            f"{fr.get('cold_recall20', 0):.4f}, warm R@20 {gr.get('warm_recall20', 0):.4f} -> "
            f"{fr.get('warm_recall20', 0):.4f}, warm N@10 {gr.get('warm_ndcg10', 0):.4f} -> "
            f"{fr.get('warm_ndcg10', 0):.4f} -> {path}"
        )
    return params, path


def evaluate_models(
    recipe: Recipe,
    split: Split,
    table: SidTable,
    models: list[GenerativeRecommender],
    *,
    part: str = "test",
    full_catalog: bool = True,
    fresh: Sequence[FreshParams] | None = None,
) -> list[EvalResult]:
    """Each model over the warm catalog and (if `full_catalog`) over the full catalog, and
    (given `fresh`, one FreshParams per model) the fused fresh-item ranker, which reuses the
    warm rows' beams."""
    out = []
    ev = recipe.eval
    for k, model in enumerate(models):
        warm = ReusedBeam(gr_ranker(recipe, model, table, split, catalog="warm"))
        rankers: list[Any] = [warm]
        if full_catalog:
            rankers.append(gr_ranker(recipe, model, table, split, catalog="full"))
        if fresh is not None:
            emb = item_embeddings(recipe, split)
            rankers.append(fresh_ranker(recipe, model, table, split, emb, fresh[k], warm))
        for ranker in rankers:
            out.append(
                evaluate_ranker(
                    ranker,
                    split,
                    part,  # type: ignore[arg-type]
                    top_k=ev.top_k,
                    max_requests=ev.max_requests,
                    seed=ev.seed,
                    sids=table.sids,
                )
            )
    return out


def run_baselines(
    recipe: Recipe, split: Split, emb: np.ndarray, names: list[str] | None = None
) -> list[EvalResult]:
    """Most-popular, text similarity (full catalog and new-items-only) and SASRec on the test
    split under the same protocol and request sample as the GR models."""
    from freshrec.evaluate.baselines import (
        PopularityRanker,
        SASRecConfig,
        SASRecRanker,
        TextKNNRanker,
    )

    ev = recipe.eval
    names = list(recipe.eval.baselines if names is None else names)
    rankers: list[Any] = []
    if "popularity" in names:
        rankers.append(PopularityRanker().fit(split))
    if "textknn" in names:
        rankers.append(TextKNNRanker(emb, name="text-sim"))
        rankers.append(TextKNNRanker(emb, only_new=True, name="text-sim (new only)"))
    if "sasrec" in names:
        console.print("training SASRec (item ids; cannot score new items)...")
        rankers.append(SASRecRanker(SASRecConfig(seed=recipe.train.seed)).fit(split))
    return [
        evaluate_ranker(
            r, split, "test", top_k=ev.top_k, max_requests=ev.max_requests, seed=ev.seed
        )
        for r in rankers
    ]


def evaluate(
    recipe: Recipe,
    checkpoints: list[Path],
    *,
    baselines: bool = True,
    report_name: str = "evaluate",
    command: str | None = None,
) -> dict[str, Path]:
    """Evaluate checkpoints (warm and full catalog, and the fused fresh-item ranker with each
    checkpoint's fresh.json) + baselines; write the report and plots."""
    from freshrec.evaluate.plots import plot_cold_collapse, plot_position_accuracy
    from freshrec.evaluate.report import print_results, run_metadata, write_report
    from freshrec.model.checkpoint import resolve_checkpoint

    split = load_prepared(recipe)
    tokenizer, table = load_tokenized(recipe)
    folders = [resolve_checkpoint(c) for c in checkpoints]
    models = [load_checkpoint(c, expect_fingerprint=tokenizer.fingerprint) for c in folders]
    fresh = [FreshParams.load_or_default(c) for c in folders]
    for c, p in zip(folders, fresh, strict=True):
        if p.fitted is None:
            console.print(
                f"[yellow]{c} has no fresh.json: FRESH uses the built-in defaults "
                "(run `freshrec calibrate`)[/yellow]"
            )
    results = evaluate_models(recipe, split, table, models, fresh=fresh)
    if baselines:
        results += run_baselines(recipe, split, item_embeddings(recipe, split))
    out = workspace(recipe).reports(report_name)
    meta = run_metadata(
        dataset=recipe.data.dataset_name,
        split=recipe.data.split,
        seeds=[recipe.train.seed],
        command=command or " ".join(["freshrec", *__import__("sys").argv[1:]]),
        checkpoints=[str(c) for c in checkpoints],
        recipe=recipe.to_dict(),
    )
    json_path, md_path = write_report(out / "results", results, meta)
    collapse = plot_cold_collapse(results, out / "cold_collapse.png")
    positions = plot_position_accuracy(
        [r for r in results if r.metrics.pos_acc], out / "position_accuracy.png"
    )
    # R/N@10 and @20 need ~130 columns; a narrow terminal or a log file (80) gets @20 only
    ks = (10, 20) if console.width >= 132 else (20,)
    print_results(results, title="test split: overall / warm / cold", ks=ks, console=console)
    return {"json": json_path, "md": md_path, "collapse": collapse, "positions": positions}
