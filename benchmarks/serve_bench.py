"""Serving benchmark (loopback only, bounded in requests and time).

- `/recommend` throughput and p50/p99 latency at concurrency 1, 8 and 32 with micro-batching
  on and off, and at 64 and 128 (micro-batching on) where the service sheds load (429): the
  share shed, the latency of the rest, and `/health` latency probed meanwhile;
- the time from `POST /items` until the items are live for 1, 10 and 100 items, and
  `/recommend` during a 100-item edit;
- on a real PostgreSQL catalog (`freshrec.serve.local_postgres`): c8 throughput of a writer,
  and a read replica on the same catalog and pack folder: the seconds until it has the
  writer's new packs applied (after the writer has them live).

    python benchmarks/serve_bench.py [--requests 400] [--seconds 40]
    python benchmarks/serve_bench.py --smoke --out /tmp/serve-smoke   (minutes: tiny sizes)

Serves benchmarks/.work/ml-latest-small/checkpoints/causal-s0/best (the GR benchmark's
default causal model) when it exists, else trains a small causal model first. Each
configuration runs in its own `freshrec.serve` server process with fresh state; the load
average is sampled during the run (2 shared cores). Writes benchmarks/results/serve.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import RESULTS, WORK, command, recipe, repo_path, setup
from freshrec import pipeline
from freshrec.atomic import write_json
from freshrec.data.schema import Split
from freshrec.evaluate.report import run_metadata
from freshrec.serve.config import ServeConfig
from serve_load import (
    HealthProbe,
    Server,
    histories,
    load_level,
    new_item_reach,
    replica_pickup,
    time_to_live,
)
from serve_report import plot, report

CONCURRENCY = (1, 8, 32)
OVERLOAD = (64, 128)
# items per POST: time to live, the edit during a c8 level, the replica rounds, reach
SIZES = {"live": (1, 10, 100), "during": 100, "pickup": (1, 1, 10), "reach": 100}
SMOKE = {"live": (1, 3), "during": 5, "pickup": (1, 2), "reach": 10}


class LoadSampler:
    """The 1-minute load average every `every_s` seconds while the benchmark runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(every_s):
                return

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(10)
        s = np.asarray(self.samples)
        return {
            "samples": len(s),
            "min": round(float(s.min()), 2),
            "median": round(float(np.median(s)), 2),
            "max": round(float(s.max()), 2),
        }


def checkpoint(split, tok, table) -> tuple[Path, dict[str, Any]]:
    """The GR benchmark's causal checkpoint, or a small one trained here."""
    folder = WORK / "ml-latest-small" / "checkpoints" / "causal-s0"
    info: dict[str, Any] = {}
    if not (folder / "best" / "model.safetensors").is_file():
        r = recipe("causal", extra=["train.epochs=5"])
        folder = pipeline.workspace(r).checkpoints("serve-bench-causal")
        if not (folder / "best" / "model.safetensors").is_file():
            pipeline.train(r, split, tok, table, name="serve-bench-causal", progress=False)
        info["trained_here"] = True
    for log in (folder / "train_log.json", folder / "last" / "progress.json"):
        if log.is_file():
            data = json.loads(log.read_text())
            info.update(
                epochs_trained=len(data.get("history", [])),
                best_epoch=data.get("best_epoch"),
                best_valid_ndcg10=data.get("best_valid", data.get("best")),
                training_finished=log.name == "train_log.json",
            )
            break
    return folder / "best", info


# ---------------------------------------------------------------------------------- scenarios
def recommend_levels(base: dict, run_dir: Path, bodies: list, args) -> dict[str, Any]:
    """Batching on and off at CONCURRENCY; with batching on also OVERLOAD with /health
    probed during each level."""
    levels: dict[str, list[dict[str, Any]]] = {}
    for batching in (True, False):
        name = "batching_on" if batching else "batching_off"
        cfg = {**base, "state_dir": str(run_dir / name), "batching": batching}
        with Server(cfg, run_dir, name) as srv:
            load_level(srv, bodies, 4, 40, 20)  # warm-up (threads, allocator, caches)
            levels[name] = []
            for c in CONCURRENCY + (OVERLOAD if batching else ()):
                with HealthProbe(srv, every_s=0.02) as probe:
                    res = load_level(srv, bodies, c, max(args.requests, 4 * c), args.seconds)
                res["health"] = probe.summary()
                levels[name].append(res)
                print(name, {k: v for k, v in res.items() if k != "error_examples"}, flush=True)
            if batching:
                batches = srv.metric("freshrec_recommend_batch_size_count")
                total = srv.metric("freshrec_recommend_batch_size_sum")
                mean_batch = round(total / batches, 2) if batches and total else None
                levels[name][-1]["mean_batch_size_overall"] = mean_batch
    return levels


def live_scenario(
    base: dict, run_dir: Path, split: Split, emb: np.ndarray, bodies: list, args
) -> dict[str, Any]:
    """Time to live for each size, the reach of live new items, /recommend during an edit."""
    order = np.random.default_rng(0).permutation(np.flatnonzero(split.is_new))
    live: dict[str, Any] = {}
    sizes = args.sizes
    with Server({**base, "state_dir": str(run_dir / "live")}, run_dir, "live") as srv:
        start = 0
        for n in sizes["live"]:
            idx = sorted(order[start : start + n].tolist())
            start += n
            secs = time_to_live(srv, split, idx)
            edit = srv.get("/health")[1].get("last_edit")
            live[str(n)] = {"items": n, "seconds": round(secs, 2), "edit": edit}
            print("live", n, live[str(n)]["seconds"], flush=True)
        reach_idx = order[start : start + sizes["reach"]]
        start += sizes["reach"]
        reach = new_item_reach(srv, split, emb, sorted(reach_idx.tolist()))
        # recommendations keep working while an edit runs (concurrency 8 during a 100-item edit)
        during_idx = sorted(order[start : start + sizes["during"]].tolist())
        during = threading.Thread(target=time_to_live, args=(srv, split, during_idx))
        during.start()
        time.sleep(0.5)
        under_edit = load_level(srv, bodies, 8, args.requests, args.seconds)
        during.join()
        print("during edit", under_edit, flush=True)
    return {"live": live, "reach": reach, "under_edit": under_edit}


def postgres_scenario(
    base: dict, run_dir: Path, split: Split, bodies: list, args
) -> dict[str, Any] | None:
    """A writer on a real PostgreSQL catalog (c8 throughput) and a read replica on the same
    catalog and pack folder (replica pickup, c8 throughput). None without PostgreSQL."""
    from freshrec.serve.local_postgres import LocalPostgres, postgres_binaries

    if postgres_binaries() is None:
        print("no PostgreSQL (pip install pgserver): the PostgreSQL rows are skipped")
        return None
    order = np.random.default_rng(1).permutation(np.flatnonzero(split.is_new))
    with LocalPostgres() as pg:
        shared = {"db_url": pg.create_database("serve_bench"), "edits_dir": str(run_dir / "packs")}
        w_cfg = {**base, **shared, "state_dir": str(run_dir / "pg_writer")}
        r_cfg = {**base, **shared, "state_dir": str(run_dir / "pg_replica"), "read_only": True}
        with Server(w_cfg, run_dir, "pg_writer") as writer:
            load_level(writer, bodies, 4, 40, 20)  # warm-up
            w8 = load_level(writer, bodies, 8, args.requests, args.seconds)
            print("postgres writer c8", w8, flush=True)
            with Server(r_cfg, run_dir, "pg_replica") as replica:
                rounds, start = [], 0
                for n in args.sizes["pickup"]:
                    idx = sorted(order[start : start + n].tolist())
                    start += n
                    rounds.append({"items": n, **replica_pickup(writer, replica, split, idx)})
                    print("replica pickup", rounds[-1], flush=True)
                load_level(replica, bodies, 4, 40, 20)  # warm-up
                r8 = load_level(replica, bodies, 8, args.requests, args.seconds)
                print("postgres replica c8", r8, flush=True)
    return {"writer_c8": w8, "replica_c8": r8, "replica_rounds": rounds}


# ---------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per level at most")
    ap.add_argument("--seconds", type=float, default=40.0, help="seconds per level at most")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    args = ap.parse_args()
    args.sizes = SMOKE if args.smoke else SIZES
    if args.smoke:
        args.requests, args.seconds = min(args.requests, 40), min(args.seconds, 10.0)

    r = recipe("causal")
    split, emb, tok, table = setup(r)
    ckpt, ckpt_info = checkpoint(split, tok, table)
    bodies = histories(split, 500)
    run_dir = WORK / "serve-bench"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    base = {"checkpoint": str(ckpt), "overrides": [f"work_dir={WORK}"], "log_level": "warning"}
    load_before = os.getloadavg()
    sampler = LoadSampler().start()
    t_start = time.time()

    levels = recommend_levels(base, run_dir, bodies, args)
    live = live_scenario(base, run_dir, split, emb, bodies, args)
    pg = postgres_scenario(base, run_dir, split, bodies, args)

    meta = run_metadata(
        dataset="ml-latest-small",
        split="time",
        command=command(),
        checkpoint=repo_path(ckpt),
        checkpoint_info=ckpt_info,
        arch="causal",
        server_defaults={
            "mode": "fresh",
            "beam_size": 20,
            "fresh_gr_beam": "the recipe's evaluation beam (50), no wider-beam retries",
            "max_batch": 32,
            "batch_window_ms": 2.0,
            "max_inflight_recommend": ServeConfig.model_fields["max_inflight_recommend"].default,
            "follow_interval_s": 1.0,
        },
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        load_average_1min_during=sampler.stop(),
        wall_seconds=round(time.time() - t_start, 1),
        note="2 shared cores; the load generator runs on the same machine as the server; "
        "clients pause 0.1 s after a 429",
    )
    result = summarize(levels, live, pg, meta)
    if args.smoke:
        meta["note"] += "; SMOKE RUN (tiny sizes), not a benchmark result"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serve.json", result)
    report(result, args.out / "serve.md")
    plot(result, args.out / "serve.png")
    print((args.out / "serve.md").read_text())


def summarize(
    levels: dict[str, list[dict[str, Any]]],
    live: dict[str, Any],
    pg: dict[str, Any] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The headline keys (the issue's targets) and everything measured."""
    on = {x["concurrency"]: x for x in levels["batching_on"]}
    runs = [x for lv in levels.values() for x in lv] + [live["under_edit"]]
    if pg is not None:
        runs += [pg["writer_c8"], pg["replica_c8"]]
    live_s = live["live"]
    return {
        "rps_c8": on[8]["rps"],
        "p50_ms_c8": on[8]["p50_ms"],
        "p99_ms_c8": on[8]["p99_ms"],
        "errors": sum(x["errors"] for x in runs),
        "errors_5xx": sum(x["errors_5xx"] for x in runs),
        "health_p99_ms_c64": on[64]["health"]["p99_ms"],
        "health_p99_ms_c128": on[128]["health"]["p99_ms"],
        "shed_share_c128": on[128]["shed_share"],
        "p99_ms_c128_answered": on[128]["p99_ms"],
        "replica_pickup_seconds": (
            max(x["pickup_s"] for x in pg["replica_rounds"]) if pg is not None else None
        ),
        "rps_c8_postgres": pg["writer_c8"]["rps"] if pg is not None else None,
        **{f"item_live_seconds_{n}": row["seconds"] for n, row in live_s.items()},
        "recommend": levels,
        "recommend_during_edit_c8": live["under_edit"],
        "live": live_s,
        "new_item_reach": live["reach"],
        "postgres": pg,
        "meta": meta,
    }


if __name__ == "__main__":
    main()
