"""Evaluation (docs/EVAL.md): full-SID hit metrics, overall/warm/cold tables, baselines,
reports and plots."""

from freshrec.evaluate.metrics import (
    KS,
    Metrics,
    SubsetMetrics,
    compute_metrics,
    hit_ranks,
    position_accuracy,
    ranked_sids,
)
from freshrec.evaluate.protocol import (
    DEFAULT_HISTORY_LEN,
    EvalResult,
    Ranker,
    evaluate_ranker,
    history_mask,
    history_pairs,
    rank_in_chunks,
    sample_requests,
    topk_excluding,
)
from freshrec.evaluate.report import (
    load_report,
    markdown_table,
    print_results,
    rich_table,
    run_metadata,
    write_report,
)

__all__ = [
    "DEFAULT_HISTORY_LEN",
    "KS",
    "EvalResult",
    "Metrics",
    "Ranker",
    "SubsetMetrics",
    "compute_metrics",
    "evaluate_ranker",
    "history_mask",
    "history_pairs",
    "hit_ranks",
    "load_report",
    "markdown_table",
    "position_accuracy",
    "print_results",
    "rank_in_chunks",
    "ranked_sids",
    "rich_table",
    "run_metadata",
    "sample_requests",
    "topk_excluding",
    "write_report",
]
