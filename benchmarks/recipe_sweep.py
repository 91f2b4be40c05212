"""Recipe sweep on validation only (issue 17): variants of the `cpu` recipe trained on one time
cut, each variant's best checkpoint scored on a fixed, larger validation sample than training's
model selection uses (beam 50 unless a variant sets eval.beam_size, full-SID hits, history
excluded), next to SASRec on the same requests. The test period is never touched: this is how
a recipe change is chosen before the cuts of `gr_bench.py` are re-run with it.

    python benchmarks/recipe_sweep.py [--cut 60/20/20] [--requests 6000]
        [--variants 'base@0,1,2;e60@0,1,2=train.epochs=60;...'] [--base override,...]

A variant is `name@seeds=override,override`; `base` is the cut's cached `cpu` run (gr_bench's
`causal-s<seed>`), others train as `sweep-<name>-s<seed>` under benchmarks/.work (reused when
present); a variant that changes no model or training setting (e.g. `eval.beam_size`) ranks
with the base run. `--base` overrides apply to every row (to compare against the recipe as
it was before a change). Rows are cached in benchmarks/.work/sweep/ with the model, training
and decoding settings they were run with (a row whose settings no longer match, e.g. `base`
after the recipe changed, re-runs). Writes benchmarks/results/recipe_sweep.{md,json,png} for
the 60/20/20 cut, recipe_sweep_<cut>.{md,json,png} for others.
"""

from __future__ import annotations

import argparse
import json
import time
from statistics import median
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from common import (
    RECIPES,
    RESULTS,
    WORK,
    command,
    ranking_settings,
    recipe,
    setup,
    trained,
    training_settings,
)
from freshrec import pipeline
from freshrec.atomic import write_json, write_text
from freshrec.evaluate.baselines import SASRecConfig, SASRecRanker
from freshrec.evaluate.protocol import evaluate_ranker
from freshrec.evaluate.report import run_metadata

DEFAULT_VARIANTS = (
    "base@0,1,2;e60@0,1,2=train.epochs=60;"
    "w128@0=model.d_model=128,model.d_kv=32,model.d_ff=384;ema99@0,1=train.ema_decay=0.99;"
    "b100@0,1,2=eval.beam_size=100;warmprompt@0,1,2=eval.prompt_new_items=false;sasrec@0,1,2"
)
METRICS = ("v_warm_n10", "v_warm_r20", "v_all_n10", "v_all_r20")


def parse_variants(spec: str) -> list[tuple[str, list[int], list[str]]]:
    """[(name, seeds, overrides)] of `name@seeds=override,override;...`."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        head, _, ov = part.partition("=")
        name, _, seeds = head.partition("@")
        if not name or not seeds:
            raise SystemExit(f"variant {part!r}: expected name@seeds[=overrides]")
        out.append((name, [int(s) for s in seeds.split(",")], [o for o in ov.split(",") if o]))
    return out


def row(cut: str, name: str, seed: int, overrides: list[str], args: argparse.Namespace) -> dict:
    """Validation scores of one (variant, seed), trained if needed; cached."""
    cache = WORK / "sweep" / f"{cut.replace('/', '-')}_{name}_s{seed}_n{args.requests}.json"
    r = recipe("causal", seed, [*args.base, *overrides], cut=cut)
    settings = None if name == "sasrec" else ranking_settings(r)
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached["overrides"] != overrides:
            raise SystemExit(
                f"variant {name!r} seed {seed} was run with {cached['overrides']}, not "
                f"{overrides}: give the new variant another name"
            )
        if cached.get("settings") == settings:
            return cached
        print(f"{cache.name}: settings changed since it was cached, re-running", flush=True)
    split, _, tok, table = setup(r)
    out: dict[str, Any] = {
        "cut": cut,
        "name": name,
        "seed": seed,
        "overrides": overrides,
        "base_overrides": args.base,
        "settings": settings,
    }
    t0 = time.perf_counter()
    if name == "sasrec":
        ranker = SASRecRanker(SASRecConfig(seed=seed)).fit(split)
    else:
        # a variant that changes no model/train setting (e.g. eval.beam_size) ranks with the
        # base run's checkpoint
        base = recipe("causal", seed, args.base, cut=cut)
        same = training_settings(r) == training_settings(base)
        run = None if name == "base" or same else f"sweep-{name}-s{seed}"
        model, log = trained(r, split, tok, table, retrain=False, name=run)
        out.update(
            best_epoch=log["best_epoch"],
            epochs=r.train.epochs,
            best_valid=log["best_valid"],
            sec_per_epoch=log["sec_per_epoch"],
        )
        ranker = pipeline.gr_ranker(r, model, table, split, catalog="warm")
    out["train_s"] = time.perf_counter() - t0
    res = evaluate_ranker(
        ranker, split, "valid", top_k=50, max_requests=args.requests, seed=args.request_seed
    )
    m = res.metrics
    out.update(
        v_warm_n10=m.warm.ndcg[10],
        v_warm_r20=m.warm.recall[20],
        v_all_n10=m.overall.ndcg[10],
        v_all_r20=m.overall.recall[20],
        n_warm=m.warm.n,
    )
    write_json(cache, out)
    print(json.dumps(out), flush=True)
    return out


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per variant: medians over its seeds, and the paired change against `base` (same seed)."""
    base = {r["seed"]: r for r in rows if r["name"] == "base"}
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        rs = [r for r in rows if r["name"] == name]
        s: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        s.update({k: median(r[k] for r in rs) for k in METRICS})
        for key in ("v_warm_n10", "v_warm_r20"):
            paired = [r[key] / base[r["seed"]][key] - 1 for r in rs if r["seed"] in base]
            s[f"{key[2:]}_vs_base"] = median(paired) if paired and name != "base" else None
        out[name] = s
    return out


def plot(rows: list[dict], summary: dict[str, dict], path: str) -> None:
    names = list(summary)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, name in enumerate(names):
        ys = [r["v_warm_n10"] for r in rows if r["name"] == name]
        ax.bar(i, summary[name]["v_warm_n10"], color="#9ab" if name != "sasrec" else "#db9")
        ax.scatter([i] * len(ys), ys, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("validation warm NDCG@10")
    ax.set_title("cpu recipe variants (bars: median over seeds, dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cut", default="60/20/20")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument(
        "--base",
        default="",
        help="overrides applied to every row, `base` included (comma-separated; e.g. "
        "eval.prompt_new_items=true compares against the recipe before that was switched off)",
    )
    ap.add_argument("--requests", type=int, default=6000, help="sampled validation requests")
    ap.add_argument("--request-seed", type=int, default=123, help="validation sample seed")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    args.base = [o for o in args.base.split(",") if o]
    torch.set_num_threads(args.threads)
    variants = parse_variants(args.variants)
    rows = [row(args.cut, n, s, ov, args) for n, seeds, ov in variants for s in seeds]
    summary = summarise(rows)
    # the 60/20/20 cut (where GR trailed SASRec) writes recipe_sweep.*, other cuts their own
    stem = (
        "recipe_sweep" if args.cut == "60/20/20" else f"recipe_sweep_{args.cut.replace('/', '-')}"
    )
    seeds = sorted({s for _, ss, _ in variants for s in ss})
    meta = run_metadata(
        dataset="ml-latest-small",
        split=f"time cut {args.cut}",
        seeds=seeds,
        command=command(),
        valid_requests=f"{args.requests} sampled with seed {args.request_seed}",
        recipes=RECIPES,
        threads=torch.get_num_threads(),
    )
    write_json(
        RESULTS / f"{stem}.json",
        {"meta": meta, "cut": args.cut, "variants": summary, "runs": rows},
    )
    plot(rows, summary, str(RESULTS / f"{stem}.png"))
    lines = [
        f"# cpu recipe variants on validation ({args.cut} time cut)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; date {meta['date']}; machine {meta['machine']}; "
        f"{meta['threads']} intra-op thread(s); rows cached from earlier runs of the same "
        "code are reused (benchmarks/.work/sweep)  ",
        f"Validation only: {args.requests} validation requests sampled with seed "
        f"{args.request_seed} (the same for every row), beam 50 (unless the overrides set "
        "eval.beam_size), full-SID hits, history excluded; model selection inside training "
        "uses its own 3,000-request sample. "
        f"Every row (base included) also has the overrides {' '.join(args.base) or '-'}. "
        "`base` = the `cpu` recipe's cached cut run; SASRec = the baseline of the GR benchmark.",
        "",
        "| variant | overrides | seeds | warm N@10 | warm R@20 | overall N@10 | overall R@20 "
        "| warm N@10 / R@20 vs base (paired, medians) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    overrides = {n: ov for n, _, ov in variants}
    for name, s in summary.items():
        delta = (
            "-"
            if s["warm_n10_vs_base"] is None
            else f"{s['warm_n10_vs_base']:+.1%} / {s['warm_r20_vs_base']:+.1%}"
        )
        lines.append(
            f"| {name} | {' '.join(overrides[name]) or '-'} | "
            f"{','.join(map(str, s['seeds']))} | {s['v_warm_n10']:.4f} | {s['v_warm_r20']:.4f} | "
            f"{s['v_all_n10']:.4f} | {s['v_all_r20']:.4f} | {delta} |"
        )
    lines += [
        "",
        "Per run (GR: best epoch of the epoch budget, selection-sample score):",
        "",
        "| variant | seed | warm N@10 | warm R@20 | best epoch / budget | selection N@10 "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "best_epoch" in r:
            extra = (
                f"{r['best_epoch']} / {r['epochs']} | {r['best_valid']:.4f} | "
                f"{r['sec_per_epoch']:.1f}"
            )
        else:
            extra = f"- | - | {r['train_s']:.0f} s training"
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['v_warm_n10']:.4f} | {r['v_warm_r20']:.4f} "
            f"| {extra} |"
        )
    lines += ["", f"Plot: `{stem}.png`.", ""]
    write_text(RESULTS / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
