"""GR model benchmark (issue: generative recommender): training cost of tiger vs causal,
overall/warm/cold quality of both (warm catalog and full catalog "_C") against baselines, and
decoding speed of freshrec's batched trie-constrained beam search vs transformers' `generate`.

    python benchmarks/gr_bench.py [--seeds 0,1,2] [--requests 4000] [--retrain]

Writes benchmarks/results/gr.{md,json} and gr_cold_collapse.png, gr_position_accuracy.png;
`--only-cuts` computes the time-cuts section alone into gr_cuts.{md,json}, on every test
request of each cut (`--cut-requests N`: a seed-0 sample), with a paired bootstrap interval of
GR minus SASRec over the warm test requests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import RECIPES, RESULTS, WORK, command, ranking_settings, recipe, setup, trained
from freshrec import pipeline
from freshrec.atomic import write_json, write_text
from freshrec.evaluate.baselines import (
    PopularityRanker,
    SASRecConfig,
    SASRecRanker,
    TextKNNRanker,
)
from freshrec.evaluate.metrics import hit_ranks
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


class _Capture:
    """A ranker that keeps the requests it ranked and what it returned (`ranked`), so
    per-request gains can be saved."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests = None
        self.ranked: np.ndarray | None = None

    def __getattr__(self, key: str):
        return getattr(self.inner, key)

    def rank(self, split, requests, top_k: int) -> np.ndarray:
        self.requests = requests
        self.ranked = np.asarray(self.inner.rank(split, requests, top_k=top_k))
        return self.ranked


def cut_cache(cut: str, arch: str, seed: int, requests: int) -> Path:
    """Cached row (`.json`) of one (cut, method, seed, request count); gains in `.npz`."""
    n = f"n{requests}" if requests else "all"
    return WORK / "gr_cuts" / f"{cut.replace('/', '-')}_{arch}_s{seed}_{n}.json"


def cut_row(cut: str, arch: str, seed: int, requests: int, retrain: bool) -> dict:
    """Test warm R@20 / N@10 of one (cut, method, seed) -- GR ("causal", the `cpu` recipe),
    "tiger" (`tiger-cpu`) or "sasrec" -- on every test request (`requests` 0) or a sample of
    them (seed 0); cached under benchmarks/.work/gr_cuts/ with the per-request warm gains
    (`<row>.npz`: ndcg10, recall20 of each warm request, in request order)."""
    cache = cut_cache(cut, arch, seed, requests)
    r = recipe("causal" if arch == "sasrec" else arch, seed, [], cut=cut)
    settings = None if arch == "sasrec" else ranking_settings(r)
    if cache.exists() and not retrain:
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings:
            return cached
        print(f"{cache.name}: settings changed since it was cached, re-running", flush=True)
    limit = requests or None
    split, _, tok, table = setup(r)
    row: dict = {"cut": cut, "arch": arch, "seed": seed, "settings": settings}
    if arch == "sasrec":
        t0 = time.perf_counter()
        ranker = SASRecRanker(SASRecConfig(seed=seed)).fit(split)
        row["train_seconds"] = time.perf_counter() - t0
    else:
        model, log = trained(r, split, tok, table, retrain)
        ranker = pipeline.gr_ranker(r, model, table, split, catalog="warm")
        row["sec_per_epoch"] = float(np.median([h["seconds"] for h in log["history"]]))
        row["best_epoch"] = log["best_epoch"]
    capture = _Capture(ranker)
    res = evaluate_ranker(capture, split, "test", top_k=50, max_requests=limit, seed=0)
    m = res.metrics
    row.update(
        warm_recall20=m.warm.recall[20],
        warm_ndcg10=m.warm.ndcg[10],
        n_warm=m.warm.n,
        n_requests=res.n_requests,
        train_frac=r.data.train_frac,
    )
    warm = ~np.asarray(capture.requests.cold, dtype=bool)
    rank = hit_ranks(capture.ranked, np.asarray(capture.requests.target))[warm]
    gain = np.where((rank >= 0) & (rank < 10), 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    np.savez(cache.with_suffix(".npz"), ndcg10=gain, recall20=(rank >= 0) & (rank < 20))
    write_json(cache, row)
    return row


def paired_ci(
    cut: str, seeds: list[int], requests: int, n_boot: int = 2000
) -> dict[str, list[float]] | None:
    """[mean, low, high] of GR minus SASRec per metric: per warm test request, each method's
    gain averaged over the seeds; 95% bootstrap interval over requests (2,000 resamples, seed
    0). None when a row has no saved gains (cached before they were kept)."""
    paths = {
        arch: [cut_cache(cut, arch, s, requests).with_suffix(".npz") for s in seeds]
        for arch in ("causal", "sasrec")
    }
    if not all(p.exists() for ps in paths.values() for p in ps):
        return None
    out = {}
    for metric in ("ndcg10", "recall20"):
        mean = {
            arch: np.mean([np.load(p)[metric].astype(np.float64) for p in ps], axis=0)
            for arch, ps in paths.items()
        }
        diff = mean["causal"] - mean["sasrec"]
        rng = np.random.default_rng(0)
        boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n_boot)]
        out[metric] = [float(diff.mean()), *map(float, np.percentile(boot, [2.5, 97.5]))]
    return out


def cut_seeds(spec: str, cut: str) -> list[int]:
    """Seeds of one cut from `--cut-seeds`: "0,1,2" (every cut) or per cut,
    "80/10/10=0,1,2;70/15/15=0" (a cut not named gets seed 0)."""
    try:
        if "=" not in spec:
            return [int(s) for s in spec.split(",")]
        named = dict(part.split("=", 1) for part in spec.split(";") if part)
        return [int(s) for s in named.get(cut, "0").split(",")]
    except ValueError:
        raise SystemExit(
            f'--cut-seeds {spec!r}: expected "0,1,2" or "80/10/10=0,1,2;70/15/15=0"'
        ) from None


def cuts_section(args: argparse.Namespace) -> dict:
    """Per time cut: medians over seeds of GR, SASRec (--cut-seeds) and TIGER (--tiger-seeds)."""
    out = {}
    tiger_seeds = [int(s) for s in args.tiger_seeds.split(",") if s]
    for cut in args.cuts.split(","):
        seeds = cut_seeds(args.cut_seeds, cut)
        rows = [
            cut_row(cut, a, s, args.cut_requests, args.retrain)
            for a in ("causal", "sasrec")
            for s in seeds
        ]
        rows += [cut_row(cut, "tiger", s, args.cut_requests, args.retrain) for s in tiger_seeds]

        def med(arch: str, key: str, rows: list[dict] = rows) -> float | None:
            vals = [r[key] for r in rows if r["arch"] == arch and r.get(key) is not None]
            return float(np.median(vals)) if vals else None

        out[cut] = {
            "gr_warm_recall20": med("causal", "warm_recall20"),
            "gr_warm_ndcg10": med("causal", "warm_ndcg10"),
            "sasrec_warm_recall20": med("sasrec", "warm_recall20"),
            "sasrec_warm_ndcg10": med("sasrec", "warm_ndcg10"),
            "tiger_warm_recall20": med("tiger", "warm_recall20"),
            "tiger_warm_ndcg10": med("tiger", "warm_ndcg10"),
            "sec_per_epoch": med("causal", "sec_per_epoch"),
            "tiger_sec_per_epoch": med("tiger", "sec_per_epoch"),
            "gr_minus_sasrec_ci95": paired_ci(cut, seeds, args.cut_requests),
            "n_warm": rows[0]["n_warm"],
            "seeds": seeds,
            "tiger_seeds": tiger_seeds,
            "runs": rows,
        }
        print(cut, {k: v for k, v in out[cut].items() if k != "runs"}, flush=True)
    return out


def cuts_lines(cuts: dict) -> list[str]:
    lines = [
        "## Time cuts (test warm quality, medians over seeds)",
        "",
        "| cut | GR warm R@20 | SASRec warm R@20 | GR warm N@10 | SASRec warm N@10 | "
        "TIGER warm R@20 | GR s/epoch | seeds | GR >= SASRec (R@20, N@10) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cut, c in cuts.items():
        ok = (
            c["gr_warm_recall20"] >= c["sasrec_warm_recall20"],
            c["gr_warm_ndcg10"] >= c["sasrec_warm_ndcg10"],
        )
        tiger = "-" if c["tiger_warm_recall20"] is None else f"{c['tiger_warm_recall20']:.4f}"
        lines.append(
            f"| {cut} | {c['gr_warm_recall20']:.4f} | {c['sasrec_warm_recall20']:.4f} | "
            f"{c['gr_warm_ndcg10']:.4f} | {c['sasrec_warm_ndcg10']:.4f} | {tiger} | "
            f"{c['sec_per_epoch']:.1f} | {','.join(map(str, c['seeds']))} | "
            f"{'yes' if ok[0] else 'no'}, {'yes' if ok[1] else 'no'} |"
        )
    lines += [
        "",
        "GR minus SASRec on the same warm test requests (per request, each method's gain "
        "averaged over the seeds; mean and 95% bootstrap interval over requests):",
        "",
        "| cut | warm requests | N@10 difference [95% CI] | R@20 difference [95% CI] |",
        "|---|---|---|---|",
    ]
    for cut, c in cuts.items():
        ci = c["gr_minus_sasrec_ci95"]
        if ci is None:
            continue
        cells = [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for d, lo, hi in (ci["ndcg10"], ci["recall20"])]
        lines.append(f"| {cut} | {c['n_warm']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Per run (GR and TIGER: best validation epoch; SASRec: training seconds):",
        "",
        "| cut | method | seed | warm R@20 | warm N@10 | best epoch / train s |",
        "|---|---|---|---|---|---|",
    ]
    for cut, c in cuts.items():
        for r in c["runs"]:
            when = r.get("best_epoch", f"{r.get('train_seconds', float('nan')):.0f} s")
            lines.append(
                f"| {cut} | {r['arch']} | {r['seed']} | {r['warm_recall20']:.4f} | "
                f"{r['warm_ndcg10']:.4f} | {when} |"
            )
    return lines


def cut_requests(args: argparse.Namespace) -> str:
    n = args.cut_requests
    return f"{n} test requests sampled with seed 0" if n else "every test request"


def write_cuts(cuts: dict, args: argparse.Namespace) -> None:
    """`--only-cuts`: the cuts section alone, as benchmarks/results/gr_cuts.{md,json}."""
    meta = run_metadata(
        dataset="ml-latest-small",
        split="time cuts " + args.cuts,
        seeds=sorted({s for cut in args.cuts.split(",") for s in cut_seeds(args.cut_seeds, cut)}),
        command=command(),
        test_requests=cut_requests(args),
        recipes=RECIPES,
        threads=torch.get_num_threads(),
    )
    write_json(RESULTS / "gr_cuts.json", {"meta": meta, "cuts": cuts})
    lines = [
        "# Generative recommender vs SASRec on time cuts",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; date {meta['date']}; machine {meta['machine']}; "
        f"{meta['threads']} intra-op thread(s)  ",
        f"Dataset: ml-latest-small; per cut train/valid/test by time; {cut_requests(args)}; "
        "GR = the `cpu` recipe (causal), TIGER = `tiger-cpu`; "
        "warm items only (history excluded, full-SID hits).",
        "",
        *cuts_lines(cuts),
        "",
    ]
    write_text(RESULTS / "gr_cuts.md", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--requests", type=int, default=4000, help="sampled test requests (seed 0)")
    ap.add_argument("--decode-users", type=int, default=256)
    ap.add_argument("--retrain", action="store_true", help="train even if a run exists")
    ap.add_argument("--archs", default="tiger,causal")
    ap.add_argument("--cuts", default="80/10/10,70/15/15,60/20/20")
    ap.add_argument(
        "--cut-seeds",
        default="0,1,2",
        help='GR and SASRec seeds of the cuts section: "0,1,2" or "80/10/10=0,1,2;70/15/15=0"',
    )
    ap.add_argument("--tiger-seeds", default="0", help="TIGER seeds of the cuts section")
    ap.add_argument(
        "--cut-requests",
        type=int,
        default=0,
        help="test requests per cut in the cuts section (0 = every one; else a seed-0 sample)",
    )
    ap.add_argument(
        "--only-cuts", action="store_true", help="compute (and cache) the cuts section only"
    )
    args = ap.parse_args()
    if args.only_cuts:
        write_cuts(cuts_section(args), args)
        return
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

    cuts = cuts_section(args)
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
            "cuts": cuts,
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
    lines += ["", *cuts_lines(cuts)]
    lines += ["", "Plots: `gr_cold_collapse.png`, `gr_position_accuracy.png`.", ""]
    write_text(RESULTS / "gr.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
