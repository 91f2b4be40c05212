"""Preservation statistics C_{p,L} = E[k k^T] (float64, uncentred) of the keys at (position p,
layer L) over training requests teacher-forced on their true targets, from the **base** model
(live edits are suspended while they are computed).

They depend only on the base checkpoint, the training data and the sample, so each is computed
once and cached as `<cache>/cov-<key>.safetensors` with key = sha256 of (checkpoint content hash
= sha256 of model.safetensors, split content hash, max_history, p, L, sample size, sample seed).
All missing sites are filled in one pass over the sampled requests.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from freshrec.atomic import write_bytes
from freshrec.data.schema import Requests, Split
from freshrec.edit.keys import iter_keys, request_tokens
from freshrec.edit.pseudo import training_contexts
from freshrec.model.base import GenerativeRecommender
from freshrec.model.edit_hooks import Site, suspend_edits


def split_hash(split: Split) -> str:
    """Hex sha256 of the training data a split defines (sequences, training lengths, new items)."""
    h = hashlib.sha256()
    for arr in (split.seq_offsets, split.seq_items, split.train_len, split.is_new):
        a = np.ascontiguousarray(arr)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def sample_training_requests(split: Split, n_samples: int, seed: int) -> Requests:
    """A seeded sample (without replacement, in data order) of at most `n_samples` training
    contexts as Requests with their true targets."""
    users, pos, target = training_contexts(split)
    n = users.size
    if n_samples < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=n_samples, replace=False))
        users, pos, target = users[idx], pos[idx], target[idx]
    n_req = len(users)
    return Requests(
        users.astype(np.int32), pos.astype(np.int32), target.astype(np.int32), np.zeros(n_req, bool)
    )


@dataclass
class CovarianceInfo:
    """How the statistics were obtained: seconds (0 when all cached), n_requests used, which
    sites were cache hits, and the cache files."""

    seconds: float = 0.0
    n_requests: int = 0
    hits: list[Site] = field(default_factory=list)
    computed: list[Site] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "n_requests": self.n_requests,
            "cache_hits": [list(s) for s in self.hits],
            "computed": [list(s) for s in self.computed],
            "files": self.files,
        }


def cache_key(
    model_hash: str, data_hash: str, max_history: int, site: Site, n_samples: int, seed: int
) -> str:
    """Content key of one site's statistics (hex, 24 chars)."""
    parts = {
        "model": model_hash,
        "data": data_hash,
        "max_history": max_history,
        "position": site[0],
        "layer": site[1],
        "n_samples": n_samples,
        "seed": seed,
        "kind": "uncentred-second-moment-v1",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def key_covariances(
    model: GenerativeRecommender,
    split: Split,
    sid_tokens: np.ndarray,
    sites: list[Site],
    *,
    model_hash: str,
    cache_dir: str | Path | None,
    n_samples: int = 20000,
    seed: int = 0,
    batch_size: int = 512,
) -> tuple[dict[Site, torch.Tensor], CovarianceInfo]:
    """{(p, L): C float64[d_in, d_in]} for `sites`, loaded from / saved to `cache_dir`
    (None = no cache). sid_tokens: int64[n_items, P] token ids of the catalog."""
    t0 = time.perf_counter()
    info = CovarianceInfo()
    data_hash = split_hash(split)
    H = model.config.max_history
    out: dict[Site, torch.Tensor] = {}
    paths: dict[Site, Path] = {}
    for site in sites:
        if cache_dir is None:
            continue
        key = cache_key(model_hash, data_hash, H, site, n_samples, seed)
        path = Path(cache_dir) / f"cov-{key}.safetensors"
        paths[site] = path
        info.files[f"{site[0]},{site[1]}"] = str(path)
        if path.is_file():
            try:
                out[site] = load_file(str(path))["cov"]
                info.hits.append(site)
            except (SafetensorError, OSError, KeyError):
                pass  # unreadable cache file: recompute and overwrite
    missing = [s for s in sites if s not in out]
    if missing:
        req = sample_training_requests(split, n_samples, seed)
        hist, tgt = request_tokens(model, split, req, sid_tokens)
        sums = {
            s: torch.zeros(
                model.ffn_out_projs()[s[1]].in_features,
                model.ffn_out_projs()[s[1]].in_features,
                dtype=torch.float64,
            )
            for s in missing
        }
        was_training = model.training
        model.eval()
        try:
            with suspend_edits(model):
                for _, keys in iter_keys(model, hist, tgt, missing, batch_size):
                    for s, k in keys.items():
                        k64 = k.cpu().double()
                        sums[s] += k64.T @ k64
        finally:
            model.train(was_training)
        n = max(len(req), 1)
        for s in missing:
            cov = sums[s] / n
            out[s] = cov
            info.computed.append(s)
            if s in paths:
                meta = {"position": str(s[0]), "layer": str(s[1]), "n": str(len(req))}
                write_bytes(paths[s], save({"cov": cov.contiguous()}, metadata=meta))
        info.n_requests = len(req)
        info.seconds = time.perf_counter() - t0
    else:
        info.n_requests = min(n_samples, int(np.maximum(np.asarray(split.train_len) - 1, 0).sum()))
    return {s: out[s] for s in sites}, info
