"""Deployment replay benchmark (issue 16): keep the `cpu` recipe's causal model fresh through
the test period and judge each update policy by the freshness it buys per CPU-second.

Protocol (docs/REPLAY.md): the validation and test periods are walked in steps of
`--step-days` (default 7 days: MovieLens has ~820 days per period, ~480-550 of them with
requests, a median of 3 requests on a day with any); at each step the step's requests (a
seeded sample of at most `--max-requests`) are scored with the deployed model through
`Session.recommend` (mode "fresh", exact full-SID hits), then the policy updates the model
with the interactions up to the step's end, its CPU-seconds / wall-seconds / peak RSS
recorded. `--max-steps` (default 6) caps the test walk to the first weeks of the test period
(693 requests at the default cap, 152 of them cold; weeks 7-8 add 30); `--valid-steps`
(default 13) caps the validation walk to the last weeks of the validation period (its first
weeks hold ~10 requests a week; its last 13 weeks ~1,200 at the cap). Each walk starts from
the trained checkpoint and lets the policy first catch up on the time between the training
cut-off and the walk's first step as one update (reported apart: `catchup_cpu_seconds`).
Settings of each policy are chosen on the validation walk of the first seed (R@20; ties: the
cheaper), then the test period is replayed once per policy and seed; figures are medians over
seeds. CPU time is dominated by the weekly full retrains (`retrain`: 7 per seed at the
defaults, each the trained run's best epoch + 1 epochs).

    python benchmarks/replay_bench.py [--seeds 0,1,2] [--step-days 7] [--max-steps 6]
        [--max-requests 200] [--policies static,edit,finetune,merge,retrain,merge+edit]

Writes benchmarks/results/replay.{md,json,png}.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from common import RESULTS, WORK, command, recipe, setup, trained
from freshrec import pipeline
from freshrec.atomic import write_json, write_text
from freshrec.evaluate.report import run_metadata
from freshrec.model.checkpoint import BEST
from freshrec.replay import ReplayConfig, make_policy, replay_part
from freshrec.replay.cli import context_from_recipe
from replay_report import curves, markdown, plot, summary_row

GRID: dict[str, list[dict[str, Any]]] = {
    "static": [{}],
    "edit": [{}, {"edit": {"lam": 300, "positions": [2]}}],
    "finetune": [
        {"lr": 3e-4, "passes": 2.0},
        {"lr": 3e-4, "passes": 3.0, "max_steps": 400},
        {"lr": 3e-4, "passes": 6.0, "max_steps": 800},
        {"lr": 3e-4, "passes": 6.0, "max_steps": 800, "mark_trained": True},
    ],
    "merge": [
        {"method": "linear"},
        {"method": "linear", "tune": {"max_steps": 100, "passes": 2.0, "mark_trained": True}},
        {"method": "ties", "density": 0.5},
    ],
    "retrain": [{}],  # every --retrain-days; nothing to choose
}
"""Candidate settings of each policy, chosen among on validation (combinations reuse the
choices of their parts)."""


def candidates(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = [dict(c) for c in GRID[name]]
    if name == "retrain":
        out = [{"every_days": args.retrain_days, "epochs": args.retrain_epochs}]
    return out


def context(seed: int, args: argparse.Namespace, tag: str = "") -> Any:
    """Replay context of one seed: its trained `cpu` model (trained here when missing),
    calibrated fresh ranker, workspace data; scratch folder `<work>/s<seed><tag>` (emptied)."""
    r = recipe("causal", seed, extra=args.set)
    split, _emb, tok, table = setup(r)
    if args.checkpoint:
        folder = Path(args.checkpoint)
    else:
        trained(r, split, tok, table, retrain=False)
        folder = pipeline.workspace(r).checkpoints(pipeline.run_name(r)) / BEST
    if r.fresh.calibrate and not (folder / "fresh.json").exists():
        pipeline.calibrate(r, folder, show=False)
    work = Path(args.work) / f"s{seed}{tag}"
    shutil.rmtree(work, ignore_errors=True)
    return context_from_recipe(r, folder, work=work)


def contexts(args: argparse.Namespace) -> dict[int, Any]:
    """Replay context per seed (see `context`)."""
    return {seed: context(seed, args) for seed in args.seeds}


def choose(
    ctxs: dict[int, Any], names: list[str], args: argparse.Namespace, cfg: ReplayConfig
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Settings per policy part, chosen on the first seed's validation walk."""
    ctx = ctxs[args.seeds[0]]
    parts = sorted({p for n in names for p in n.split("+")}, key=list(GRID).index)
    chosen, selection = {}, {}
    for name in parts:
        cands = candidates(name, args)
        rows = []
        if len(cands) > 1 or name == "static":
            for cand in cands:
                out = replay_part(ctx, make_policy(name, {name: cand}), "valid", cfg, _log(args))
                rows.append({"settings": cand, "valid": out["summary"]})
            best = max(
                rows,
                key=lambda r: (
                    r["valid"]["mean_recall20"] or 0.0,
                    -r["valid"]["update_cpu_seconds"],
                ),
            )
            chosen[name] = best["settings"]
        else:
            chosen[name] = cands[0]
        selection[name] = rows
        print(f"{name}: chose {chosen[name]}", flush=True)
    return chosen, selection


def _log(args: argparse.Namespace):
    return (lambda msg: print(msg, flush=True)) if args.verbose else None


def _test_job(
    name: str, seed: int, settings: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """One test replay in a worker process: its own context and scratch folder, so jobs of
    one seed do not share state."""
    torch.set_num_threads(args.threads)
    ctx = context(seed, args, tag=f"-{name.replace('+', '-')}")
    return replay_part(ctx, make_policy(name, settings), "test", test_config(args), _log(args))


def run_tests(
    ctxs: dict[int, Any],
    names: list[str],
    chosen: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    cfg: ReplayConfig,
) -> dict[str, dict[int, dict[str, Any]]]:
    """{policy: {seed: replay_part output}} on the test period; with `--jobs` > 1 the (policy,
    seed) replays run in that many worker processes (each `--threads` threads; CPU-seconds
    and peak memory are per process, so they do not change)."""
    jobs = [(name, seed) for name in names for seed in ctxs]
    settings = {name: {p: chosen[p] for p in name.split("+")} for name in names}
    out: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in names}

    def done(name: str, seed: int, res: dict[str, Any], wall: float) -> None:
        out[name][seed] = res
        s = res["summary"]
        print(
            f"{name} s{seed}: R@20 {s['mean_recall20'] or 0:.4f} "
            f"(warm {s['mean_warm_recall20'] or 0:.4f}, "
            f"cold {s['mean_cold_recall20'] or 0:.4f}), "
            f"updates {s['update_cpu_seconds']:.1f} cpu-s, {wall:.0f} s",
            flush=True,
        )

    if args.jobs <= 1:
        for name, seed in jobs:
            t = time.perf_counter()
            policy = make_policy(name, settings[name])
            res = replay_part(ctxs[seed], policy, "test", cfg, _log(args))
            done(name, seed, res, time.perf_counter() - t)
    else:
        # the slowest replays (retrains) first, so the pool's last jobs are short ones
        jobs.sort(key=lambda j: "retrain" not in j[0])
        spawn = multiprocessing.get_context("spawn")
        t = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
            futures = {pool.submit(_test_job, n, s, settings[n], args): (n, s) for n, s in jobs}
            for fut in as_completed(futures):
                done(*futures[fut], fut.result(), time.perf_counter() - t)
    return {name: dict(sorted(out[name].items())) for name in names}


def checks(policies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's "done when" figures (None where a policy was not run)."""

    def get(name: str, key: str) -> float | None:
        return policies.get(name, {}).get(key)

    out: dict[str, Any] = {}
    others = {n: p for n, p in policies.items() if "retrain" not in n and n != "static"}
    if "retrain" in policies and others:
        best = max(others, key=lambda n: others[n]["mean_recall20"] or 0.0)
        r_rec, r_cpu = get("retrain", "mean_recall20"), get("retrain", "update_cpu_seconds")
        out["best_non_retrain"] = best
        out["recall_vs_retrain"] = (others[best]["mean_recall20"] or 0.0) / r_rec if r_rec else None
        out["cpu_vs_retrain"] = others[best]["update_cpu_seconds"] / r_cpu if r_cpu else None
        out["best_non_retrain_ok"] = bool(
            out["recall_vs_retrain"] is not None
            and out["recall_vs_retrain"] >= 0.98
            and out["cpu_vs_retrain"] is not None
            and out["cpu_vs_retrain"] <= 0.05
        )
    for name in ("edit", "merge"):
        if name in policies and "static" in policies:
            delta = (get(name, "mean_recall20") or 0.0) - (get("static", "mean_recall20") or 0.0)
            out[f"{name}_minus_static_recall20"] = delta
            out[f"{name}_beats_static"] = bool(delta > 0)
    return out


def cpu_seconds() -> float:
    """CPU-seconds of this process plus its finished worker processes (`--jobs`)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def test_config(args: argparse.Namespace) -> ReplayConfig:
    return ReplayConfig(
        step_days=args.step_days,
        max_steps=args.max_steps or None,
        max_requests=args.max_requests or None,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (one trained model each)")
    ap.add_argument("--step-days", type=float, default=7.0)
    ap.add_argument("--max-steps", type=int, default=6, help="test steps (0 = all)")
    ap.add_argument("--valid-steps", type=int, default=13, help="validation steps (0 = all)")
    ap.add_argument(
        "--valid-align", choices=("start", "end"), default="end", help="validation weeks walked"
    )
    ap.add_argument("--max-requests", type=int, default=200, help="requests per step (0 = all)")
    ap.add_argument("--policies", default="static,edit,finetune,merge,retrain,merge+edit")
    ap.add_argument("--retrain-days", type=float, default=7.0)
    ap.add_argument("--retrain-epochs", type=int, default=None, help="default: the run's best + 1")
    ap.add_argument("--checkpoint", default=None, help="use this checkpoint (one seed) instead")
    ap.add_argument("--set", action="append", default=[], help="recipe override (repeatable)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process")
    ap.add_argument(
        "--jobs", type=int, default=1, help="processes for the test replays (1 = this one)"
    )
    ap.add_argument("--work", default=str(WORK / "replay"), help="replay scratch folder")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    ap.add_argument("--verbose", action="store_true", help="print every step")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.checkpoint and len(args.seeds) != 1:
        raise SystemExit("--checkpoint stands for one trained model: give one seed")
    args.names = [n.strip() for n in args.policies.split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    test_cfg = test_config(args)
    valid_cfg = test_cfg.model_copy(
        update={"align": args.valid_align, "max_steps": args.valid_steps or None}
    )
    t_all = cpu_seconds()
    ctxs = contexts(args)
    chosen, selection = choose(ctxs, args.names, args, valid_cfg)
    tests = run_tests(ctxs, args.names, chosen, args, test_cfg)
    policies = {name: summary_row(runs, name, chosen) for name, runs in tests.items()}
    first = next(iter(next(iter(tests.values())).values()))
    meta = run_metadata(
        dataset="ml-latest-small",
        split="time 80/10/10",
        seeds=args.seeds,
        command=command(),
        benchmark_cpu_seconds=cpu_seconds() - t_all,
        threads=args.threads,
        jobs=args.jobs,
    )
    result = {
        "policies": policies,
        "step_days": args.step_days,
        "n_steps": len(first["steps"]),
        "seeds": args.seeds,
        "max_steps": test_cfg.max_steps,
        "max_requests": test_cfg.max_requests,
        "valid_align": args.valid_align,
        "valid_steps": valid_cfg.max_steps,
        "chosen": chosen,
        "selection": selection,
        "checks": checks(policies),
        "curves": curves(tests),
        "meta": meta,
    }
    out = Path(args.out)
    write_json(out / "replay.json", result)
    plot(result, out / "replay.png")
    write_text(out / "replay.md", markdown(result))
    print(f"wrote {out / 'replay.md'}", flush=True)
    return result


if __name__ == "__main__":
    main()
