"""benchmarks/results/serve.{md,png} from the serving benchmark's result dict
(`serve_bench.summarize`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from freshrec.atomic import write_text

# the targets: key -> (test, shown)
TARGETS: dict[str, tuple[Any, str]] = {
    "errors": (lambda v: v == 0, "== 0"),
    "errors_5xx": (lambda v: v == 0, "== 0"),
    "health_p99_ms_c64": (lambda v: v < 50, "< 50"),
    "p99_ms_c8": (lambda v: v < 250, "< 250"),
    "replica_pickup_seconds": (lambda v: v < 10, "< 10"),
}


def targets(result: dict[str, Any]) -> list[str]:
    rows = ["| key | value | target | met |", "|:---|---:|:---|:---|"]
    for key, (ok, shown) in TARGETS.items():
        v = result.get(key)
        met = "n/a" if v is None else ("yes" if ok(v) else "**no**")
        rows.append(f"| `{key}` | {v} | {shown} | {met} |")
    return rows


def level_rows(result: dict[str, Any]) -> list[str]:
    rows = [
        "| concurrency | batching | requests | answered | shed (429) | req/s | p50 ms | p99 ms | "
        "max ms | errors | /health p99 ms |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("batching_on", "on"), ("batching_off", "off")):
        for x in result["recommend"][name]:
            rows.append(_row(str(x["concurrency"]), label, x))
    rows.append(_row("8, during a 100-item edit", "on", result["recommend_during_edit_c8"]))
    pg = result.get("postgres")
    if pg is not None:
        rows.append(_row("8, PostgreSQL writer", "on", pg["writer_c8"]))
        rows.append(_row("8, PostgreSQL read replica", "on", pg["replica_c8"]))
    return rows


def _row(level: str, label: str, x: dict[str, Any]) -> str:
    health = (x.get("health") or {}).get("p99_ms", "")
    return (
        f"| {level} | {label} | {x['requests']} | {x.get('answered', '')} | {x.get('shed', 0)} | "
        f"{x['rps']} | {x['p50_ms']} | {x['p99_ms']} | {x['max_ms']} | {x['errors']} | {health} |"
    )


def report(result: dict[str, Any], path: Path) -> None:
    meta = result["meta"]
    live = result["live"]
    live_rows = [
        "| items in one POST | seconds until all live | edit seconds |",
        "|---:|---:|---:|",
    ]
    for n, row in live.items():
        live_rows.append(f"| {n} | {row['seconds']} | {(row['edit'] or {}).get('seconds')} |")
    pg = result.get("postgres")
    pickup = ["PostgreSQL: not available on this machine (pip install pgserver)."]
    if pg is not None:
        pickup = [
            "| items | replica knows them s | writer live s | replica live s | pickup s |",
            "|---:|---:|---:|---:|---:|",
        ] + [
            f"| {r['items']} | {r['replica_known_s']} | {r['writer_live_s']} | "
            f"{r['replica_live_s']} | {r['pickup_s']} |"
            for r in pg["replica_rounds"]
        ]
    reach = result["new_item_reach"]
    load = meta["load_average_1min_during"]
    md = [
        "# Serving benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; date {meta['date']}; wall {meta['wall_seconds']} s  ",
        f"Machine: {meta['machine']}  ",
        f"Load average (1 min) before / after: {meta['load_average_before']} / "
        f"{meta['load_average_after']}; during the run min {load['min']}, median "
        f"{load['median']}, max {load['max']} ({load['samples']} samples): the 2 cores were "
        "shared with other jobs.  ",
        f"Checkpoint: `{meta['checkpoint']}` ({json.dumps(meta['checkpoint_info'])}); "
        f"server defaults {json.dumps(meta['server_defaults'])}; top_k 10, histories = last 20 "
        "warm items of sampled validation requests; closed-loop clients on the same cores as "
        "the server; a client pauses 0.1 s after a 429 (a shortened Retry-After).",
        "",
        "## Targets (issue 15)",
        "",
        *targets(result),
        "",
        "`errors`: requests that failed (transport errors, answers other than 200 and 429) over "
        "every level; `errors_5xx`: answers with a status >= 500; 429s are shed load, counted "
        "apart. Latencies are over answered (200) requests.",
        "",
        f"Shed at concurrency 128: {result['shed_share_c128']} of the requests (429 at once); "
        f"the answered ones p99 {result['p99_ms_c128_answered']} ms. /health p99 at 128: "
        f"{result['health_p99_ms_c128']} ms. PostgreSQL writer c8: "
        f"{result['rps_c8_postgres']} req/s.",
        "",
        "## /recommend (and /health probed every 20 ms during each level)",
        "",
        *level_rows(result),
        "",
        "## POST /items -> live",
        "",
        *live_rows,
        "",
        f"Reach of {reach['requests']} live new items (1 real context of a nearest warm "
        f"neighbour each, full catalog): top-10 {reach['top10']}, top-100 {reach['top100']}.",
        "",
        "## Read replica on the same PostgreSQL catalog and pack folder (polls every 1 s)",
        "",
        "Seconds from the writer's 202: until the replica knows the items (in mode fresh they "
        "are recommendable from then on), until the writer has them live (edited in), until "
        "the replica has applied that pack; pickup = replica live - writer live.",
        "",
        *pickup,
        "",
    ]
    write_text(path, "\n".join(md))


def plot(result: dict[str, Any], path: Path) -> None:
    """Left: /recommend p50/p99 and /health p99 against concurrency; right: seconds until
    live (writer) and replica pickup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in (("batching_on", "-"), ("batching_off", "--")):
        lv = result["recommend"][name]
        c = [x["concurrency"] for x in lv]
        label = name.replace("_", " ")
        ax.plot(c, [x["p99_ms"] for x in lv], "o" + style, label=f"/recommend p99, {label}")
        ax.plot(c, [x["p50_ms"] for x in lv], "s" + style, alpha=0.6, label=f"p50, {label}")
    on = result["recommend"]["batching_on"]
    ax.plot(
        [x["concurrency"] for x in on],
        [x["health"]["p99_ms"] for x in on],
        "^:",
        label="/health p99 during the level",
    )
    for x in on:
        if x.get("shed"):
            ax.annotate(f"{x['shed_share']:.0%} shed", (x["concurrency"], x["p99_ms"]), fontsize=8)
    ax.axhline(250, color="grey", lw=0.8, ls=":", label="p99 target (250 ms, c8)")
    ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms")
    ax.set_title("latency (answered requests)")
    ax.legend(fontsize=7)
    names = [f"live, {n} item(s)" for n in result["live"]]
    secs = [row["seconds"] for row in result["live"].values()]
    pg = result.get("postgres")
    if pg is not None:
        for i, r in enumerate(pg["replica_rounds"], 1):
            names.append(f"replica pickup #{i}, {r['items']} item(s)")
            secs.append(r["pickup_s"])
    n_live = len(result["live"])
    bx.barh(names, secs, color=["C0"] * n_live + ["C2"] * (len(names) - n_live))
    bx.axvline(10, color="grey", lw=0.8, ls=":")
    bx.set(xlabel="seconds", title="POST /items -> live; replica pickup after the writer")
    load = result["meta"]["load_average_1min_during"]["median"]
    fig.suptitle(f"freshrec serve on 2 shared cores (median load average {load})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
