"""GR model benchmark (issue: generative recommender): training cost of tiger vs causal,
overall/warm/cold quality of both (warm catalog and full catalog "_C") against baselines, and
decoding speed of freshrec's batched trie-constrained beam search vs transformers' `generate`.

    python benchmarks/gr_bench.py [--seeds 0,1,2] [--requests 4000] [--retrain]

Writes benchmarks/results/gr.{md,json} and gr_cold_collapse.png, gr_position_accuracy.png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import RECIPES, RESULTS, command, recipe, setup, trained
from freshrec import pipeline
from freshrec.atomic import write_json, write_text
from freshrec.evaluate.baselines import (
    PopularityRanker,
    SASRecConfig,
    SASRecRanker,
    TextKNNRanker,
)
from freshrec.evaluate.plots import plot_cold_collapse, plot_position_accuracy
from freshrec.evaluate.protocol import evaluate_ranker, sample_requests
from freshrec.evaluate.report import markdown_table, run_metadata
from freshrec.model.batches import history_tokens
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.exhaustive import hf_generate_topk
from freshrec.recommend.gr import GRRanker


def decode_speed(model, split, table, n_users: int, beam: int, repeats: int = 3) -> dict:
    """users/s of freshrec's beam search (`GRRanker` over the warm catalog, history not
    excluded, one batch) vs HF generate (same model, users, trie, beam; top-k = beam)."""
    requests, _ = sample_requests(split.valid, n_users, 0)
    items_hist = split.histories(requests, model.config.max_history)
    users = np.asarray(requests.user)
    catalog = Catalog.from_split(split, table, model.vocab)
    ranker = GRRanker(model, catalog, scope="warm", beam_size=beam, batch_size=max(n_users, 1))
    hist = history_tokens(items_hist, catalog.sid_tokens, users, model.vocab)
    trie = catalog.trie("warm")
    ours, hf = [], []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            res, _ = ranker.rank_histories(items_hist, users, beam, exclude_history=False)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            items, _ = hf_generate_topk(model, hist, trie, beam_size=beam, top_k=beam)
            hf.append(time.perf_counter() - t)
    top10_equal = float((res[:, :10] == items[:, :10].numpy()).all(axis=1).mean())
    return {
        "beam": beam,
        "users": n_users,
        "beam_users_per_s": n_users / float(np.median(ours)),
        "generate_users_per_s": n_users / float(np.median(hf)),
        "speedup": float(np.median(hf) / np.median(ours)),
        "top10_identical_share": top10_equal,
        "invalid_items": int((res < 0).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--requests", type=int, default=4000, help="sampled test requests (seed 0)")
    ap.add_argument("--decode-users", type=int, default=256)
    ap.add_argument("--retrain", action="store_true", help="train even if a run exists")
    ap.add_argument("--archs", default="tiger,causal")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    archs = args.archs.split(",")
    base = recipe("tiger", 0, [f"eval.max_requests={args.requests}"])
    split, emb, tok, table = setup(base)
    ev = {"top_k": 50, "max_requests": args.requests, "seed": 0, "sids": table.sids}

    results, train_rows, models = [], [], {}
    for arch in archs:
        for seed in seeds:
            r = recipe(arch, seed, [f"eval.max_requests={args.requests}"])
            model, log = trained(r, split, tok, table, args.retrain)
            models[(arch, seed)] = model
            hist = log["history"]
            train_rows.append(
                {
                    "arch": arch,
                    "seed": seed,
                    "sec_per_epoch": float(np.median([h["seconds"] for h in hist])),
                    "examples_per_s": float(np.median([h["examples_per_s"] for h in hist])),
                    "epochs_run": log["epochs_run"],
                    "best_epoch": log["best_epoch"],
                    "valid_ndcg10": log["best_valid"],
                    "params": model.n_parameters,
                }
            )
            for catalog in ("warm", "full"):
                ranker = pipeline.gr_ranker(r, model, table, split, catalog=catalog)
                res = evaluate_ranker(ranker, split, "test", **ev)
                res.extra["seed"] = seed
                results.append(res)
            print(train_rows[-1], flush=True)

    baselines = [PopularityRanker().fit(split), TextKNNRanker(emb, name="text-sim")]
    baselines.append(TextKNNRanker(emb, only_new=True, name="text-sim (new only)"))
    for r in baselines:
        results.append(evaluate_ranker(r, split, "test", **ev))
    for seed in seeds:
        sas = SASRecRanker(SASRecConfig(seed=seed)).fit(split)
        res = evaluate_ranker(sas, split, "test", **ev)
        res.extra["seed"] = seed
        results.append(res)

    decode = [
        decode_speed(models[(archs[0], seeds[0])], split, table, args.decode_users, b)
        for b in (20, 50)
    ]

    def med(method: str, subset: str, metric: str, k: int) -> float:
        vals = [
            getattr(getattr(r.metrics, subset), metric)[k] for r in results if r.method == method
        ]
        return float(np.median(vals)) if vals else float("nan")

    def med_train(arch: str, key: str) -> float:
        return float(np.median([t[key] for t in train_rows if t["arch"] == arch]))

    flat = {
        "tiger_sec_per_epoch": med_train("tiger", "sec_per_epoch") if "tiger" in archs else None,
        "causal_sec_per_epoch": med_train("causal", "sec_per_epoch") if "causal" in archs else None,
        "tiger_warm_ndcg10": med("TIGER", "warm", "ndcg", 10),
        "causal_warm_ndcg10": med("CAUSAL", "warm", "ndcg", 10),
        "pop_warm_ndcg10": med("most-popular", "warm", "ndcg", 10),
        "textknn_warm_ndcg10": med("text-sim", "warm", "ndcg", 10),
        "sasrec_warm_ndcg10": med("SASRec", "warm", "ndcg", 10),
        "tiger_cold_recall20": med("TIGER", "cold", "recall", 20),
        "tigerc_cold_recall20": med("TIGER_C", "cold", "recall", 20),
        "causal_cold_recall20": med("CAUSAL", "cold", "recall", 20),
        "textknn_cold_recall20": med("text-sim", "cold", "recall", 20),
        "beam_users_per_s": decode[0]["beam_users_per_s"],
        "generate_users_per_s": decode[0]["generate_users_per_s"],
        "invalid_items": sum(d["invalid_items"] for d in decode),
    }
    meta = run_metadata(
        dataset="ml-latest-small",
        split="time 80/10/10",
        seeds=seeds,
        command=command(),
        test_requests=f"{args.requests} sampled with seed 0",
        recipes=RECIPES,
        threads=torch.get_num_threads(),
    )
    write_json(
        RESULTS / "gr.json",
        {
            **flat,
            "meta": meta,
            "training": train_rows,
            "decoding": decode,
            "results": [r.to_dict() for r in results],
        },
    )
    plot_cold_collapse(results, RESULTS / "gr_cold_collapse.png")
    plot_position_accuracy(
        [r for r in results if r.metrics.pos_acc], RESULTS / "gr_position_accuracy.png"
    )
    lines = [
        "# Generative recommender benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; date {meta['date']}; machine {meta['machine']}; "
        f"{meta['threads']} intra-op thread(s)  ",
        f"Dataset: ml-latest-small, time split 80/10/10; {args.requests} test requests sampled "
        f"with seed 0; training seeds {seeds} (median, range in brackets); recipes {RECIPES}.",
        "",
        "## Quality (test, history = last 20, history items excluded, full-SID hits)",
        "",
        "`X` decodes over the warm catalog, `X_C` over the full catalog incl. new items.",
        "",
        markdown_table(results),
        "",
        "## Training cost (median over seeds)",
        "",
        "| arch | params | sec/epoch | examples/s | epochs run | best epoch | valid N@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in archs:
        rows = [t for t in train_rows if t["arch"] == arch]
        lines.append(
            f"| {arch} | {rows[0]['params']:,} | {med_train(arch, 'sec_per_epoch'):.1f} | "
            f"{med_train(arch, 'examples_per_s'):.0f} | "
            f"{[t['epochs_run'] for t in rows]} | {[t['best_epoch'] for t in rows]} | "
            f"{med_train(arch, 'valid_ndcg10'):.4f} |"
        )
    if "tiger" in archs and "causal" in archs:
        ratio = flat["tiger_sec_per_epoch"] / flat["causal_sec_per_epoch"]
        lines += ["", f"tiger / causal seconds per epoch: **{ratio:.1f}x**"]
    lines += [
        "",
        f"## Decoding ({archs[0]} seed {seeds[0]}, {args.decode_users} validation users, "
        "top-k = beam, median of 3)",
        "",
        "| beam | freshrec beam search users/s | HF generate users/s | speed-up | "
        "identical top-10 | invalid items |",
        "|---|---|---|---|---|---|",
    ]
    for d in decode:
        lines.append(
            f"| {d['beam']} | {d['beam_users_per_s']:.1f} | {d['generate_users_per_s']:.1f} | "
            f"{d['speedup']:.1f}x | {d['top10_identical_share']:.1%} | {d['invalid_items']} |"
        )
    lines += ["", "Plots: `gr_cold_collapse.png`, `gr_position_accuracy.png`.", ""]
    write_text(RESULTS / "gr.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
