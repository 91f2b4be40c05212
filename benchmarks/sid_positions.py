"""Where do cold targets fall out of the beam? A per-SID-position diagnosis of the GR model.

    python benchmarks/sid_positions.py [--arch causal] [--requests 3000]

On validation requests (seeded sample, seed 0) of the GR benchmark's `<arch>-s0` checkpoint,
teacher-forced on each request's target SID, for every position p and separately for warm and
cold (new-item) targets:
  - the rank of the target's code among the codes the full-catalog trie allows after its
    prefix, and its log-prob renormalised over those codes (what the beam search compares);
  - the share of targets whose code at p also follows that prefix in some warm item's SID
    (codes the model has seen chosen there in training);
  - the share of warm targets with a new item below their prefix t_<p (where a prefix-gated
    edit of position p can fire at all).
This is the analysis behind the edit's defaults (docs/EDITING.md, "Why a prefix gate").

Writes benchmarks/results/sid_positions.{md,json,png}.
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from common import RESULTS, WORK, command, recipe, setup
from freshrec.atomic import write_json, write_text
from freshrec.edit.keys import TeacherForcedBatch, request_tokens
from freshrec.evaluate.protocol import sample_requests
from freshrec.evaluate.report import run_metadata
from freshrec.model.checkpoint import load_checkpoint
from freshrec.recommend.catalog import Catalog
from freshrec.semid.trie import SidTrie


def walk(trie: SidTrie, codes: torch.Tensor) -> list[torch.Tensor]:
    """Per position p, Long[n] trie node of the prefix codes[:, :p] (-1 if absent)."""
    node = torch.zeros(codes.shape[0], dtype=torch.long)
    out = [node]
    for p in range(codes.shape[1] - 1):
        nxt = trie.children[p][node.clamp(min=0), codes[:, p]]
        node = torch.where(node >= 0, nxt, -1)
        out.append(node)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="causal")
    ap.add_argument("--requests", type=int, default=3000, help="validation requests (seed 0)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    r = recipe(args.arch, 0)
    split, _, tok, table = setup(r)
    ckpt = WORK / "ml-latest-small" / "checkpoints" / f"{args.arch}-s0" / "best"
    model = load_checkpoint(ckpt, expect_fingerprint=tok.fingerprint).eval()
    vocab = model.vocab
    is_new = np.asarray(split.is_new, dtype=bool)
    catalog = Catalog.from_split(split, table, vocab)
    full, warm, newt = (catalog.trie(scope) for scope in ("full", "warm", "new"))

    req, _ = sample_requests(split.valid, args.requests, seed=0)
    target = np.asarray(req.target)
    h_tok, sid_tok = request_tokens(model, split, req, table.tokens(vocab))
    codes = torch.from_numpy(table.sids[target])
    P = vocab.sid_len
    logits: list[list[torch.Tensor]] = [[] for _ in range(P)]  # float[b, sizes[p]] blocks
    with torch.no_grad():
        for s in range(0, len(target), 256):
            batch = TeacherForcedBatch(model, h_tok[s : s + 256], sid_tok[s : s + 256])
            for p in range(P):
                logits[p].append(batch.scorer(p).block_logits())
    cold = torch.from_numpy(is_new[target])
    nodes = {name: walk(t, codes) for name, t in (("full", full), ("warm", warm), ("new", newt))}
    rows = []
    for p in range(P):
        lg = torch.cat(logits[p]).float()  # [n, sizes[p]]
        allowed = full.children[p][nodes["full"][p]] >= 0
        lg = lg.masked_fill(~allowed, float("-inf"))
        tgt = codes[:, p]
        t_logit = lg.gather(1, tgt[:, None])
        rank = (lg > t_logit).sum(1) + 1
        logp = (t_logit[:, 0] - torch.logsumexp(lg, 1)).numpy()
        wnode = nodes["warm"][p]
        seen = (wnode >= 0) & (warm.children[p][wnode.clamp(min=0), tgt] >= 0)
        gated = nodes["new"][p] >= 0
        for subset, sel in (("warm", ~cold), ("cold", cold)):
            m = sel.numpy()
            if not m.any():
                continue
            rows.append(
                {
                    "position": p,
                    "subset": subset,
                    "n": int(m.sum()),
                    "allowed_codes_median": float(np.median(allowed.sum(1).numpy()[m])),
                    "rank_median": float(np.median(rank.numpy()[m])),
                    "top1": float((rank.numpy()[m] == 1).mean()),
                    "top5": float((rank.numpy()[m] <= 5).mean()),
                    "logp_median": float(np.median(logp[m])),
                    "code_seen_after_prefix": float(seen.numpy()[m].mean()),
                    "new_item_below_prefix": float(gated.numpy()[m].mean()),
                }
            )
    meta = run_metadata(
        dataset="ml-latest-small",
        split="time 80/10/10",
        seeds=[0],
        command=command(),
        arch=args.arch,
        checkpoint=f"{args.arch}-s0 (the GR benchmark's, training seed 0)",
        valid_requests=f"{args.requests} sampled with seed 0",
        threads=args.threads,
        total_minutes=(time.perf_counter() - t_start) / 60,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "sid_positions.json", {"meta": meta, "rows": rows})

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for subset, color in (("warm", "tab:blue"), ("cold", "tab:red")):
        sub = [x for x in rows if x["subset"] == subset]
        ax.plot(
            [x["position"] for x in sub],
            [x["logp_median"] for x in sub],
            "o-",
            color=color,
            label=f"{subset} targets (n={sub[0]['n']})",
        )
    ax.set_xticks(range(P))
    ax.set_xlabel("SID position p")
    ax.set_ylabel("median log-prob of the target code\n(among the trie-allowed codes)")
    ax.set_title(f"Where cold targets fall behind ({args.arch}-s0, validation)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "sid_positions.png", dpi=120)
    plt.close(fig)

    lines = [
        "# Where cold targets fall out of the beam (per SID position)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; date {meta['date']}; machine {meta['machine']}; "
        f"{args.threads} intra-op thread  ",
        f"Checkpoint `{args.arch}-s0` of the GR benchmark; {args.requests} validation requests "
        "sampled with seed 0; teacher forcing on the target's SID, full catalog (new items "
        "included). Rank and log-prob are among the codes the trie allows after the target's "
        "prefix; 'code seen' = that code follows the prefix in some warm item's SID; 'new item "
        "below' = a new item's SID starts with the prefix t_<p (where a prefix-gated edit of "
        "position p fires).",
        "",
        "| p | targets | n | allowed codes (median) | rank (median) | top-1 | top-5 | "
        "log-prob (median) | code seen after prefix | new item below prefix |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        lines.append(
            f"| {x['position']} | {x['subset']} | {x['n']} | {x['allowed_codes_median']:.0f} | "
            f"{x['rank_median']:.0f} | {x['top1']:.3f} | {x['top5']:.3f} | "
            f"{x['logp_median']:.2f} | {x['code_seen_after_prefix']:.3f} | "
            f"{x['new_item_below_prefix']:.3f} |"
        )
    lines += ["", "Plot: `sid_positions.png`.", ""]
    write_text(RESULTS / "sid_positions.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
