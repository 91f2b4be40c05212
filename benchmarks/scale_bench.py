"""Scale benchmark (issue 14): how recommending, trie building and SID assignment grow with
the catalog, on synthetic catalogs of 10k, 100k and 1M items.

    python benchmarks/scale_bench.py [--sizes 10000,100000,1000000] [--requests 256]
                                     [--repeats 7] [--seed 0] [--threads 1]

Catalog: seeded random unit 384-d embeddings. The real residual k-means tokenizer (default
`SemIdConfig`: PCA-whitened to 64 dims, 3 levels x 64 codes, collision digit < 64) is fit on
the first 10k items; every later item gets its SID from `assign_new_items` (nearest codes +
next free collision digit, no refit). The catalog of size n is the first n items, all
recommendable, the last 1% of them new (live). Model: the default `causal_cpu` with random
init (timing only: its rankings mean nothing) over the tokenizer's vocabulary. Requests: random
histories of 20 catalog items, history excluded, beam 50, top 20, one batch of `--requests`
through `Session.recommend` (modes "beam" over the full catalog and "fresh").

Writes benchmarks/results/scale.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from common import RESULTS, command
from freshrec.atomic import write_json, write_text
from freshrec.evaluate.report import run_metadata
from freshrec.model.base import build_model
from freshrec.model.config import causal_cpu
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.session import Session
from freshrec.semid import SemIdConfig, SidTable, assign_new_items, fit_sids
from freshrec.semid.keys import lex_keys
from freshrec.semid.table import _next_digits_by_groups, _next_digits_by_keys
from freshrec.semid.trie import SidTrie

DIM = 384  # MiniLM's embedding size
HISTORY = 20
BEAM, TOP_K = 50, 20
NEW_SHARE = 0.01  # of the catalog: new and live
FIT_ITEMS = 10_000  # the tokenizer is fit on these (the smallest catalog)
SMALL_BATCH = 1_000  # new items per `assign_new_items` call, the service-sized case


def unit_embeddings(n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """float32[n, DIM] seeded random unit vectors (normalised chunk by chunk)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), DIM), dtype=np.float32)
        out[s : s + chunk] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """(median seconds, all seconds, the last result) of `repeats` calls of fn."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), times, out


def collision_stats(sids: np.ndarray, codebook_size: int) -> dict[str, Any]:
    """How the catalog's items share code tuples (collision groups)."""
    L = sids.shape[1] - 1
    keys = lex_keys(sids[:, :L], [codebook_size] * L)
    assert keys is not None
    _, counts = np.unique(keys, return_counts=True)
    return {
        "distinct_code_tuples": len(counts),
        "code_tuples_possible": codebook_size**L,
        "items_sharing_their_codes": float(counts[counts > 1].sum() / len(sids)),
        "largest_group": int(counts.max()),
        "group_p99": float(np.percentile(counts, 99)),
    }


def check_recs(items: np.ndarray, hist: np.ndarray) -> int:
    """Number of bad slots: empty, a history item, or a repeat within the row."""
    bad = int((items < 0).sum())
    bad += int((items[:, :, None] == hist[:, None, :]).any(2).sum())
    ordered = np.sort(items, axis=1)
    return bad + int((ordered[:, 1:] == ordered[:, :-1]).sum())


def assign_section(tok, warm: SidTable, emb: np.ndarray, repeats: int) -> dict[str, Any]:
    """SIDs for new items at the largest catalog size: the bulk (every item past the first
    FIT_ITEMS, one call), then the last 1% of the catalog and the last SMALL_BATCH items
    assigned into the catalog that holds everything else (median of `repeats`)."""
    n = emb.shape[0]
    rest = np.arange(FIT_ITEMS, n)
    t = time.perf_counter()
    full = assign_new_items(tok, warm, emb[rest], rest)
    bulk_s = time.perf_counter() - t
    out: dict[str, Any] = {
        "catalog_size": n,
        "bulk_items": len(rest),
        "bulk_s": bulk_s,
        "bulk_items_per_s": len(rest) / bulk_s,
    }
    for name, m in (("new_share", max(1, round(n * NEW_SHARE))), ("small", SMALL_BATCH)):
        new = np.arange(n - m, n)
        base_sids = full.sids.copy()
        base_sids[new] = -1
        base = SidTable(base_sids, full.max_collision)
        med, times, table = timed(
            lambda b=base, i=new: assign_new_items(tok, b, emb[i], i), repeats
        )
        if not np.array_equal(table.sids, full.sids):
            raise SystemExit(f"assigning the last {m} items gave other SIDs than the bulk")
        # the collision-digit step alone: key lookup vs the lexsort grouping reference
        codes = tok.encode(emb[new])
        assigned = base.assigned_mask
        old = base.sids[assigned]
        ref_s = timed(lambda o=old, c=codes: _next_digits_by_groups(o, c), repeats)[0]
        key_s = timed(
            lambda b=base, c=codes, a=assigned: _next_digits_by_keys(b.sids, a, c), repeats
        )[0]
        out[name] = {
            "items": m,
            "median_s": med,
            "times_s": times,
            "items_per_s": m / med,
            "digits_reference_s": ref_s,
            "digits_keys_s": key_s,
        }
    out["sids"] = full.sids
    return out


class SizeRun:
    """One catalog size: the catalog of the first n items, its session and requests; timed
    calls are appended by `time_once` (round-robin over sizes, see `main`)."""

    def __init__(
        self, model: torch.nn.Module, sids: np.ndarray, emb: np.ndarray, n: int, args: Any
    ) -> None:
        vocab = model.vocab
        self.n, self.sids = n, sids[:n]
        self.n_new = max(1, round(n * NEW_SHARE))
        is_new = np.zeros(n, dtype=bool)
        is_new[n - self.n_new :] = True
        build = timed(lambda: SidTrie.from_table(self.sids, vocab), args.repeats)
        self.build_s, self.build_times, trie = build
        self.mem_mb = sum(c.numel() * c.element_size() for c in trie.children) / 2**20
        self.nodes = [int(c.shape[0]) for c in trie.children]
        del trie
        catalog = Catalog(self.sids, vocab, np.ones(n, dtype=bool), is_new, emb[:n])
        self.session = Session(model, catalog, beam_size=BEAM, batch_size=args.requests)
        self.hist = np.random.default_rng(args.seed + n).integers(0, n, (args.requests, HISTORY))
        self.per_request = 1000 / args.requests
        t = time.perf_counter()
        self.beam_items = self.beam()  # builds the catalog's full trie
        self.beam_first = time.perf_counter() - t
        t = time.perf_counter()
        self.fresh_items = self.fresh()  # builds the warm trie, the fresh ranker
        self.fresh_first = time.perf_counter() - t
        self.ranker = self.session.ranker("fresh", "full")
        self.times: dict[str, list[float]] = {"beam": [], "fresh": [], "content": []}

    def beam(self) -> np.ndarray:
        return self.session.recommend(self.hist, TOP_K, mode="beam", scope="full").items

    def fresh(self) -> np.ndarray:
        return self.session.recommend(self.hist, TOP_K, mode="fresh").items

    def time_once(self) -> None:
        """One timed call of each: beam, fresh and the content channel alone."""
        for name, fn in (
            ("beam", self.beam),
            ("fresh", self.fresh),
            ("content", lambda: self.ranker.new_log_probs(self.hist)),
        ):
            t = time.perf_counter()
            out = fn()
            self.times[name].append(time.perf_counter() - t)
            if name != "content":
                setattr(self, f"{name}_items", out)

    def row(self) -> dict[str, Any]:
        ms = {k: float(np.median(v)) * self.per_request for k, v in self.times.items()}
        return {
            "catalog_size": self.n,
            "new_items": self.n_new,
            "trie_build_s": self.build_s,
            "trie_build_times_s": self.build_times,
            "trie_mem_mb": self.mem_mb,
            "trie_nodes_per_level": self.nodes,
            "beam_first_call_s": self.beam_first,
            "ms_per_request": ms["beam"],
            "beam_times_s": self.times["beam"],
            "fresh_first_call_s": self.fresh_first,
            "fuse_ms_per_request": ms["fresh"],
            "fresh_times_s": self.times["fresh"],
            "content_ms_per_request": ms["content"],
            "content_times_s": self.times["content"],
            "reference_items": len(self.ranker.reference),
            "bad_slots_beam": check_recs(self.beam_items, self.hist),
            "bad_slots_fresh": check_recs(self.fresh_items, self.hist),
            "collisions": collision_stats(self.sids, self.session.model.vocab.codebook_size),
        }


def exponent(a: float, b: float, f: float) -> float:
    """b in cost ~ n^b between two sizes f times apart with costs a and b."""
    return float(np.log(b / a) / np.log(f)) if a > 0 and b > 0 and f > 1 else float("nan")


def growth_lines(rows: list[dict], assign: dict, vocab_sizes: list[int]) -> list[str]:
    """The "how each cost grows and why" section, with this run's numbers (growth exponents
    b of cost ~ n^b between the smallest and the largest catalog)."""
    a, z = rows[0], rows[-1]
    f = z["catalog_size"] / a["catalog_size"]
    K, D, L = vocab_sizes[0], vocab_sizes[-1], len(vocab_sizes) - 1

    def grow(key: str) -> str:
        return f"x{z[key] / a[key]:.2f} for x{f:.0f} items, ~n^{exponent(a[key], z[key], f):.2f}"

    tuples = z["collisions"]["distinct_code_tuples"]
    table_mb = assign["catalog_size"] * (L + 1) * 8 / 2**20
    new_share, small = assign["new_share"], assign["small"]
    return [
        "## How each cost grows and why",
        "",
        f"- **Beam search per request** ({a['ms_per_request']:.2f} -> "
        f"{z['ms_per_request']:.2f} ms, {grow('ms_per_request')}). A request costs the "
        f"model's {L + 1} decode steps over {BEAM} beams plus, per step, a gather of "
        f"[{BEAM} x {K}] trie children; at the last step the [{BEAM} x {D}] candidate items "
        f"are binary-searched in the request's {HISTORY} sorted history items. None of it "
        "depends on the catalog size (the dense Bool[requests, n_items] exclusion mask this "
        "replaced was 256 MB per batch of 256 at 1M items); the rest is the transformer's work "
        "(KV-cache reorder and attention dominate a profile), the same at every size. What "
        "difference remains comes from cache misses in larger child tables and from noise.",
        f"- **Trie build** ({a['trie_build_s']:.3f} -> {z['trie_build_s']:.2f} s, "
        f"{grow('trie_build_s')}): per level one 1-d `np.unique` of the n items' integer keys "
        "(mixed-radix SID prefixes) and one scatter into the child tables: O(n log n), "
        "close to linear. Once per catalog and scope (the `Catalog` caches it).",
        f"- **Trie memory** ({a['trie_mem_mb']:.1f} -> {z['trie_mem_mb']:.1f} MB, "
        f"{grow('trie_mem_mb')}): level p's table has one row per distinct SID prefix of "
        f"length p, of {K} (codes) or {D} (collision digits) int64 entries, so it grows with "
        f"the distinct code tuples, not the items: the last level is (distinct tuples) x {D} "
        f"x 8 B, bounded by {K}^{L} x {D} x 8 B = {K**L * D * 8 / 2**20:.0f} MB for this "
        f"vocabulary. At {z['catalog_size']:,} items {tuples:,} of the {K**L:,} tuples "
        f"({tuples / K**L:.0%}) have a row; an item adds a row only with a new tuple, so "
        "the growth slows as the tuples fill up; past the bound items only add digits.",
        f"- **SID assignment**: {new_share['items']:,} new items into "
        f"{assign['catalog_size']:,}: {new_share['median_s']:.3f} s "
        f"({new_share['items_per_s']:,.0f} items/s); {small['items']:,} items: "
        f"{small['median_s']:.3f} s ({small['items_per_s']:,.0f} items/s). Linear in the new "
        f"items m (PCA + {L} nearest-centroid searches, in 4096-row blocks) plus linear "
        "passes over the n existing rows: each row's code tuple is looked up among the new "
        f"items' tuples (a dense table over the {K**L:,} possible tuples) and the immutable "
        f"table is copied once ({table_mb:.0f} MB), so a small batch into a large catalog "
        "costs more per item. The digit step alone: "
        f"{new_share['digits_keys_s'] * 1000:.0f} ms vs "
        f"{new_share['digits_reference_s'] * 1000:.0f} ms for the reference that lexsorts the "
        f"whole table (O(n log n)). The bulk ({assign['bulk_items']:,} items in one call) ran "
        f"at {assign['bulk_items_per_s']:,.0f} items/s.",
        f"- **Fused (fresh) ranker** ({a['fuse_ms_per_request']:.2f} -> "
        f"{z['fuse_ms_per_request']:.2f} ms, {grow('fuse_ms_per_request')}; of which the "
        f"content channel {a['content_ms_per_request']:.2f} -> "
        f"{z['content_ms_per_request']:.2f} ms). Its beam (over the warm items) is flat like "
        f"the beam above; the content channel scores every live new item ({a['new_items']:,} "
        f"-> {z['new_items']:,}, {NEW_SHARE:.0%} of the catalog) against the last 10 history "
        "items and normalises over a reference sample of min(catalog, "
        f"`FreshParams.max_reference` = 16,384) items ({a['reference_items']:,} -> "
        f"{z['reference_items']:,}): linear in the live new items, constant in the catalog "
        "beyond 16k. The first call at each size also builds the warm trie and a normalised "
        f"copy of the embeddings ({z['fresh_first_call_s']:.1f} s at {z['catalog_size']:,}).",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[0] < FIT_ITEMS:
        raise SystemExit(f"catalog sizes must be >= {FIT_ITEMS} (the tokenizer's fit sample)")
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS too
    load_before = os.getloadavg()

    t = time.perf_counter()
    emb = unit_embeddings(sizes[-1], args.seed)
    emb_s = time.perf_counter() - t
    config = SemIdConfig(seed=args.seed)
    t = time.perf_counter()
    tok, warm = fit_sids(config, emb[:FIT_ITEMS], np.arange(FIT_ITEMS), FIT_ITEMS)
    fit_s = time.perf_counter() - t
    assign = assign_section(tok, warm, emb, args.repeats)
    sids = assign.pop("sids")
    torch.manual_seed(args.seed)
    model = build_model(causal_cpu(), tok.vocab).eval()
    runs = [SizeRun(model, sids, emb, n, args) for n in sizes]
    for _ in range(args.repeats):  # round-robin: load changes hit every size alike
        for run in runs:
            run.time_once()
    rows = [run.row() for run in runs]
    del runs
    for r in rows:
        print(
            f"{r['catalog_size']:>9,} items: trie {r['trie_build_s']:.2f} s "
            f"{r['trie_mem_mb']:.0f} MB, beam {r['ms_per_request']:.2f} ms/req, "
            f"fresh {r['fuse_ms_per_request']:.2f} ms/req",
            flush=True,
        )

    ms = [r["ms_per_request"] for r in rows]
    by_size = {r["catalog_size"]: r for r in rows}
    flat = {
        "catalog_sizes": sizes,
        "ms_per_request": ms,
        "ms_per_request_ratio": [m / ms[0] for m in ms],
        "trie_build_s": [r["trie_build_s"] for r in rows],
        "trie_mem_mb": [r["trie_mem_mb"] for r in rows],
        "assign_items_per_s": assign["new_share"]["items_per_s"],
        "assign_catalog_size": assign["catalog_size"],
        "assign_batch_items": assign["new_share"]["items"],
        "fuse_ms_per_request_1m": by_size.get(1_000_000, {}).get("fuse_ms_per_request"),
        "fuse_ms_per_request": [r["fuse_ms_per_request"] for r in rows],
        "content_ms_per_request": [r["content_ms_per_request"] for r in rows],
    }
    done = {
        "ms_per_request_largest_le_3x_smallest": ms[-1] <= 3 * ms[0],
        "assign_items_per_s_ge_10000": flat["assign_items_per_s"] >= 10_000,
    }
    verdict = {k: "met" if v else "NOT met" for k, v in done.items()}
    meta = run_metadata(
        dataset=f"synthetic: random unit {DIM}-d embeddings (seed {args.seed})",
        split="none",
        seeds=[args.seed],
        command=command(),
        threads=args.threads,
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    vocab = tok.vocab
    settings = {
        "model": "causal_cpu, random init (timing only)",
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "semid": config.to_dict(),
        "vocab": vocab.to_dict(),
        "tokenizer_fit_items": FIT_ITEMS,
        "tokenizer_fit_s": fit_s,
        "embeddings_s": emb_s,
        "beam_size": BEAM,
        "top_k": TOP_K,
        "history": HISTORY,
        "requests": args.requests,
        "repeats": args.repeats,
        "new_share": NEW_SHARE,
        "exclude_history": True,
    }
    write_json(
        f"{args.out}/scale.json",
        {**flat, "done": done, "meta": meta, "settings": settings, "rows": rows, "assign": assign},
    )

    lines = [
        "# Scale benchmark (issue 14)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; date {meta['date']}  ",
        f"Machine: {meta['machine']}; {args.threads} torch thread(s) and numpy BLAS "
        f"thread(s); load average before/after {meta['load_average_before']} / "
        f"{meta['load_average_after']} (other jobs were running)  ",
        f"Seed {args.seed}: random unit {DIM}-d embeddings; residual k-means SIDs "
        f"({vocab.n_levels} x {vocab.codebook_size} codes + collision digit < "
        f"{vocab.max_collision}, PCA-whitened to {config.pca_dim} dims) fit on the first "
        f"{FIT_ITEMS:,} items, every later item assigned by `assign_new_items` (no refit); "
        f"the catalog of size n = the first n items, the last {NEW_SHARE:.0%} new and live. "
        f"Model: `causal_cpu` with random init ({settings['model_parameters']:,} parameters; "
        "timing only, its rankings mean nothing). Requests: one batch of "
        f"{args.requests} random histories of {HISTORY} items through `Session.recommend`, "
        f"history excluded, beam {BEAM}, top {TOP_K}; times are medians of {args.repeats} "
        "repeats after one warm-up call, taken round-robin over the sizes so that changes "
        "in the machine's load hit every size alike.",
        "",
        f"**Done when**: beam ms/request at {sizes[-1]:,} items <= 3x that at {sizes[0]:,}: "
        f"x{ms[-1] / ms[0]:.2f} ({verdict['ms_per_request_largest_le_3x_smallest']}); "
        f"`assign_items_per_s` >= 10,000: {flat['assign_items_per_s']:,.0f} "
        f"({verdict['assign_items_per_s_ge_10000']}; "
        f"{assign['new_share']['items']:,} new items into {assign['catalog_size']:,}).",
        "",
        "| catalog | new items | trie build s | trie MB | trie nodes per level | beam ms/req | "
        "vs smallest | fresh ms/req | content channel ms/req | bad slots (beam, fresh) |",
        "|---:|---:|---:|---:|:--|---:|---:|---:|---:|:--|",
    ]
    for r, ratio in zip(rows, flat["ms_per_request_ratio"], strict=True):
        lines.append(
            f"| {r['catalog_size']:,} | {r['new_items']:,} | {r['trie_build_s']:.3f} | "
            f"{r['trie_mem_mb']:.1f} | {r['trie_nodes_per_level']} | {r['ms_per_request']:.2f} | "
            f"x{ratio:.2f} | {r['fuse_ms_per_request']:.2f} | {r['content_ms_per_request']:.2f} "
            f"| {r['bad_slots_beam']}, {r['bad_slots_fresh']} |"
        )
    lines += [
        "",
        "Bad slots: empty, a history item or a repeat (must be 0). Content channel: "
        "`FreshRanker.new_log_probs` alone (part of fresh).",
        "",
        "## SIDs for new items without refitting (`assign_new_items`)",
        "",
        "| new items | into a catalog of | median s | items/s | digit step: key lookup ms | "
        "digit step: lexsort reference ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("new_share", "small"):
        a = assign[name]
        lines.append(
            f"| {a['items']:,} | {assign['catalog_size']:,} | {a['median_s']:.3f} | "
            f"{a['items_per_s']:,.0f} | {a['digits_keys_s'] * 1000:.1f} | "
            f"{a['digits_reference_s'] * 1000:.1f} |"
        )
    lines += [
        "",
        f"Bulk: {assign['bulk_items']:,} items in one call, {assign['bulk_s']:.1f} s "
        f"({assign['bulk_items_per_s']:,.0f} items/s, one run). Tokenizer fit on "
        f"{FIT_ITEMS:,} items: {fit_s:.1f} s. Each timed call returns the same SIDs as the bulk.",
        "",
        "## Collision groups (items sharing their code tuple)",
        "",
        "| catalog | distinct code tuples | items sharing | largest group | p99 group |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["collisions"]
        lines.append(
            f"| {r['catalog_size']:,} | {c['distinct_code_tuples']:,} of "
            f"{c['code_tuples_possible']:,} | {c['items_sharing_their_codes']:.1%} | "
            f"{c['largest_group']} | {c['group_p99']:.0f} |"
        )
    lines += [
        "",
        "Random isotropic embeddings spread evenly over the code tuples, so these groups are "
        "smaller than a real catalog's (MovieLens text embeddings: 11-13% of 9.7k items share "
        "their codes, `semid/config.py`). A real 1M catalog would need a larger "
        "`max_collision` (or codebook): the trie's last level and the beam's last step both "
        "grow linearly with it, the per-request cost of the other steps does not.",
        "",
        *growth_lines(rows, assign, vocab.sizes),
        "",
    ]
    write_text(f"{args.out}/scale.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
