"""The pipeline: prepare -> tokenize -> train -> evaluate, each stage reading the previous
stage's output from the workspace (see `freshrec.workspace`). The CLI is a thin layer on this.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
from freshrec.evaluate.protocol import EvalResult, evaluate_ranker
from freshrec.model.base import GenerativeRecommender, build_model
from freshrec.model.batches import iterate_batches, n_batches, n_targets, training_examples
from freshrec.model.checkpoint import BEST, load_checkpoint
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.fresh import FreshParams, FreshRanker
from freshrec.recommend.gr import GRRanker
from freshrec.recommend.session import Session
from freshrec.semid import (
    SemanticTokenizer,
    SidTable,
    assign_new_items,
    fit_sids,
    report_table,
    sid_report,
)
from freshrec.train.trainer import Trainer, TrainResult, seed_everything
from freshrec.workspace import Workspace

console = Console()


def workspace(recipe: Recipe) -> Workspace:
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


# ----------------------------------------------------------------------------------- train
@dataclass
class TrainedModel:
    model: GenerativeRecommender
    folder: Path
    result: TrainResult


def run_name(recipe: Recipe) -> str:
    return f"{recipe.model.arch}-s{recipe.train.seed}"


def gr_ranker(
    recipe: Recipe,
    model: GenerativeRecommender,
    table: SidTable,
    split: Split,
    *,
    catalog: str,
    name: str | None = None,
    beam_size: int | None = None,
) -> GRRanker:
    """The beam-mode ranker of a `Session` over the warm catalog (`catalog="warm"`) or every
    item with a SID ("full"): what evaluation, training validation and the benchmarks rank
    with (an evaluate `Ranker`)."""
    session = Session(
        model,
        Catalog.from_split(split, table, model.vocab),
        beam_size=beam_size or recipe.eval.beam_size,
        batch_size=recipe.eval.batch_size,
    )
    ranker = session.ranker("beam", catalog)  # type: ignore[arg-type]
    assert isinstance(ranker, GRRanker)
    if name is not None:
        ranker.name = name
    return ranker


def train(
    recipe: Recipe,
    split: Split,
    tokenizer: SemanticTokenizer,
    table: SidTable,
    *,
    name: str | None = None,
    resume: bool = False,
    progress: bool = True,
    examples: dict[str, np.ndarray] | None = None,
    init_from: str | Path | None = None,
    validate_part: str = "valid",
) -> TrainedModel:
    """Train `recipe.model` on the training period; keeps the best-on-validation checkpoint.

    examples: training examples (default: every training-period target of `split`).
    init_from: a checkpoint to continue from (incremental training) instead of a fresh init;
    it must share the tokenizer.
    """
    cfg = recipe.train
    seed_everything(cfg.seed)
    vocab = tokenizer.vocab
    if init_from is not None:
        model = load_checkpoint(init_from, expect_fingerprint=tokenizer.fingerprint)
    else:
        model = build_model(recipe.model, vocab)
    if examples is None:
        examples = training_examples(recipe.model, split, table.tokens(vocab), vocab)
    ranker = gr_ranker(recipe, model, table, split, catalog="warm", beam_size=cfg.valid_beam)

    def validate(m: GenerativeRecommender) -> float:
        res = evaluate_ranker(
            ranker,
            split,
            validate_part,  # type: ignore[arg-type]
            top_k=10,
            max_requests=cfg.valid_requests,
            seed=cfg.seed,
        )
        return res.metrics.overall.ndcg[10]

    folder = workspace(recipe).checkpoints(name or run_name(recipe))
    trainer = Trainer(
        model,
        cfg,
        batches=lambda epoch: iterate_batches(examples, cfg.batch_size, True, cfg.seed + epoch),
        n_batches=n_batches(examples, cfg.batch_size),
        n_examples=n_targets(examples),
        validate=validate,
        out_dir=folder,
        tokenizer_fingerprint=tokenizer.fingerprint,
        progress=progress,
    )
    result = trainer.fit(resume=resume)
    write_json(folder / "recipe.json", recipe.to_dict())
    best = load_checkpoint(folder / BEST, expect_fingerprint=tokenizer.fingerprint)
    return TrainedModel(best, folder, result)


# ----------------------------------------------------------------------------------- evaluate
class _ReusedBeam:
    """A GR ranker whose last result is reused when asked again for the same histories and
    top_k (the FRESH row of an evaluation ranks the requests the warm GR row just ranked)."""

    def __init__(self, ranker: GRRanker) -> None:
        self.ranker = ranker
        self.history_len = ranker.history_len
        self._last: tuple[bytes, int, tuple[np.ndarray, np.ndarray]] | None = None

    def rank(self, split: Split, requests: Any, top_k: int = 50) -> np.ndarray:
        hist = split.histories(requests, self.ranker.model.config.max_history)
        return self.rank_histories(hist, np.asarray(requests.user), top_k)[0]

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        top_k: Any = 50,
        *,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        key = np.ascontiguousarray(histories).tobytes() + bytes([exclude_history])
        k = int(np.max(top_k))
        if self._last is not None and self._last[0] == key and self._last[1] == k:
            return self._last[2]
        out = self.ranker.rank_histories(histories, users, top_k, exclude_history=exclude_history)
        self._last = (key, k, out)
        return out

    def __getattr__(self, name: str) -> Any:  # name, catalog, ... of the wrapped ranker
        return getattr(self.ranker, name)


def fresh_ranker(
    recipe: Recipe,
    model: GenerativeRecommender,
    table: SidTable,
    split: Split,
    emb: np.ndarray,
    params: FreshParams | None = None,
    beam: Any | None = None,
) -> FreshRanker:
    """The fused ranker (mode "fresh"): the model's beam over warm items (or `beam`) + the
    content channel over the new items, with `params` (default: the built-in values)."""
    beam = beam or gr_ranker(recipe, model, table, split, catalog="warm")
    return FreshRanker(beam, emb, split.is_new, params or FreshParams(), name="FRESH")


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
        ranker, split, max_requests=cfg.valid_requests, seed=cfg.seed, budget=cfg.budget
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
        warm = _ReusedBeam(gr_ranker(recipe, model, table, split, catalog="warm"))
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


def describe_items(
    split: Split, items: np.ndarray, scores: np.ndarray
) -> list[tuple[str, str, float, bool]]:
    """(item id, title, score, is_new) of ranked items int[k] with scores float[k] (-1 skipped)."""
    meta = split.dataset.items
    return [
        (meta.ids[i], meta.titles[i], float(s), bool(split.is_new[i]))
        for i, s in zip(np.asarray(items).tolist(), np.asarray(scores).tolist(), strict=True)
        if i >= 0
    ]


def recommend_user(
    recipe: Recipe,
    checkpoint: Path | str,
    user_id: str,
    top_k: int = 10,
    catalog: str = "full",
    *,
    mode: str = "fresh",
    edit_packs: Sequence[str | Path] = (),
    **options: Any,
) -> list[tuple[str, str, float, bool]]:
    """Top-k (item id, title, score, is_new) for a dataset user from their whole sequence
    (`freshrec recommend`), through `Session`: `checkpoint` (or a run folder's best/) with
    `edit_packs` (folders or pack ids under `<work>/edits/`) applied in order, over `catalog`
    (warm | full | new), by `mode` (fresh | beam | spec, with the mode's `options`). Score:
    fresh = the mixture log-score, beam = summed SID log-prob, spec = mean SID log-prob."""
    with Session.open(recipe, checkpoint, edit_packs) as session:
        recs = session.recommend_user(user_id, top_k, mode, scope=catalog, **options)
        assert session.split is not None
        return describe_items(session.split, recs.items[0], recs.scores[0])


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
