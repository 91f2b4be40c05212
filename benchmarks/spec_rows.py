"""Benchmark rows of speculative recommendation for benchmarks/spec_bench.py:
`spec_benchmark_rows` tunes each method on validation (`evaluate.spec_tuning.tune_gamma`) and
evaluates it once on the test sample."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from freshrec.data.schema import Split
from freshrec.errors import ConfigError
from freshrec.evaluate.protocol import EvalResult, Part, evaluate_ranker
from freshrec.evaluate.spec_tuning import DEFAULT_GRID, metric_value, tune_gamma
from freshrec.model.base import GenerativeRecommender
from freshrec.model.edit_hooks import suspend_edits
from freshrec.recommend.spec.drafters import Drafter, TextDrafter
from freshrec.recommend.spec.ranker import Order, SpecRanker
from freshrec.recommend.spec.selfdraft import SelfDrafter, train_self_drafter
from freshrec.recommend.spec.verify import LengthMode
from freshrec.semid.table import SidTable

if TYPE_CHECKING:
    from freshrec.model.edit_packs import EditStack

Method = Literal["text", "self", "hybrid"]
LABELS = {
    "text": "SpecGR (text drafter)",
    "self": "SpecGR++ (self-drafter)",
    "hybrid": "SpecGR + edited verifier (text drafter)",
}


@contextlib.contextmanager
def _base_model(model: GenerativeRecommender, edited: Any) -> Iterator[None]:
    """Edits of `edited` (an EditStack on `model` itself) suspended for the duration."""
    if edited is None or getattr(edited, "model", None) is not model:
        yield
        return
    with suspend_edits(model):
        yield


def spec_benchmark_rows(
    model: GenerativeRecommender,
    split: Split,
    table: SidTable,
    emb: np.ndarray,
    *,
    edited: EditStack | GenerativeRecommender | None = None,
    methods: Sequence[Method] = ("text", "self", "hybrid"),
    part: Part = "test",
    valid_requests: int | None = 1000,
    test_requests: int | None = None,
    seed: int = 0,
    top_k: int = 50,
    metric: str = "R@20",
    grid: Sequence[float] = DEFAULT_GRID,
    n_drafts: int = 50,
    beam_size: int = 50,
    batch_size: int = 64,
    self_drafter: SelfDrafter | None = None,
    self_draft_steps: int = 300,
    orders: Sequence[Order] = ("score", "accept"),
    suffix: str = "",
    length_modes: Sequence[LengthMode] = ("codes", "all_codes", "in_sample", "full"),
    log: list[dict[str, Any]] | None = None,
    prompt_new_items: bool = True,
) -> list[EvalResult]:
    """EvalResults of speculative recommendation under the evaluation protocol, gamma tuned
    on validation.

    For each method: gamma, the final order (`orders`) and the new items' score lengths
    (`length_modes`) are picked on a seeded sample of `valid_requests` validation requests by
    `metric` (`tune_gamma`); then the ranker runs once
    on `part`, a seeded sample of `test_requests` (the sample `evaluate_ranker(...,
    max_requests=test_requests, seed=seed)` draws for the other rows of a table). Methods:
    - "text": SpecGR with the `TextDrafter` (item text embeddings `emb`), base model verifier;
    - "self": SpecGR++ with a `SelfDrafter` (given, or trained with `train_self_drafter` for
      `self_draft_steps` steps, heads only), base model verifier;
    - "hybrid": text drafter verified by the edited model (`edited`: an EditStack -- its model
      with the packs applied -- or an edited model); skipped when `edited` is None.
    If `edited` is an EditStack on `model` itself, its edits are suspended for the base rows.
    Results are named by `LABELS` (+ `suffix`, e.g. " [macro R@20]" when rows tuned for
    another metric share a table); `extra` holds gamma, order, lengths, the validation
    value, drafter / verifier settings, tuning seconds and the test run's acceptance
    statistics (`spec_stats`). `log` (if given) receives each method's tuning table.
    prompt_new_items: the recipe's `eval.prompt_new_items` (`SpecRanker`).
    """
    rows: list[EvalResult] = []
    unknown = set(methods) - set(LABELS)
    if unknown:
        raise ConfigError(f"unknown spec methods {sorted(unknown)}; known: {sorted(LABELS)}")
    for method in methods:
        if method == "hybrid" and edited is None:
            continue
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        drafter: Drafter
        if method == "self":
            if self_drafter is None:
                with _base_model(model, edited):
                    self_drafter = train_self_drafter(
                        model, split, table, self_draft_steps, seed=seed
                    )
                extra["self_draft_steps"] = self_draft_steps
            drafter = self_drafter
        else:
            drafter = TextDrafter(emb)
        if method == "hybrid":
            verifier = edited if isinstance(edited, GenerativeRecommender) else edited.model
            ctx: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        else:
            verifier, ctx = model, _base_model(model, edited)
        with ctx:
            ranker = SpecRanker(
                verifier,
                drafter,
                table,
                n_drafts=n_drafts,
                beam_size=beam_size,
                batch_size=batch_size,
                is_new=split.is_new,
                prompt_new_items=prompt_new_items,
                name=LABELS[method] + suffix,
            )
            tuning = tune_gamma(
                ranker,
                split,
                "valid",
                grid,
                metric=metric,
                max_requests=valid_requests,
                seed=seed,
                orders=orders,
                length_modes=length_modes,
            )
            tune_s = time.perf_counter() - t0
            if log is not None:
                log.append({"method": method, "tuning": tuning.table()})
            best = tuning.best()
            res = evaluate_ranker(
                ranker, split, part, top_k=top_k, max_requests=test_requests, seed=seed
            )
        res.extra = {
            **extra,
            "gamma": tuning.best_gamma,
            "order": tuning.best_order,
            "lengths": tuning.best_lengths,
            "tuned_on": f"valid ({best.n_requests} requests, {metric})",
            "valid_value": metric_value(best, metric),
            "drafter": drafter.name,
            "verifier": "edited" if method == "hybrid" else "base",
            "n_drafts": n_drafts,
            "beam_size": beam_size,
            "tune_seconds": tune_s,
            **ranker.last_stats,
        }
        rows.append(res)
    return rows
