"""Which decoder layer's FFN output projection is edited for each SID position p.

- `fixed`: L_p = min(p, n_layers - 1) (the authors' released code uses L_p = p on a model with
  at least sid_len decoder layers).
- `probe` (the paper's classifier-based localisation): keys of every decoder layer at the
  position-p decoder token are collected over a seeded sample of training requests
  (teacher-forced on their true targets, base model); per (p, layer) a closed-form ridge
  one-vs-rest linear probe (standardised keys + bias, float64) predicts the true token p; the
  held-out accuracy is reported. The chosen layer is the **earliest** one whose accuracy is
  within `margin` of the best: later layers mostly inherit what an earlier layer has already
  written to the residual stream, so near-ties say the information is present from the earlier
  layer on; editing there leaves the remaining layers to integrate the change with the
  context, and differences within ~1 held-out standard error are noise. Exact ties go to the
  earlier layer too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freshrec.atomic import write_json
from freshrec.data.schema import Split
from freshrec.edit.config import EditConfig
from freshrec.edit.covariance import sample_training_requests
from freshrec.edit.keys import capture_keys, request_tokens
from freshrec.model.base import GenerativeRecommender
from freshrec.model.edit_hooks import suspend_edits


@dataclass
class Localisation:
    """layers[p]: the edited layer of SID position p. accuracy[p][L]: held-out probe accuracy
    (probe only), majority[p]: accuracy of always predicting the most frequent token (a floor)."""

    method: str
    layers: list[int]
    accuracy: list[list[float]] | None = None
    majority: list[float] | None = None
    n_train: int = 0
    n_heldout: int = 0
    margin: float = 0.0
    seconds: float = 0.0
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Localisation:
        return cls(**d)


def fixed_localisation(sid_len: int, n_layers: int) -> Localisation:
    """L_p = min(p, n_layers - 1)."""
    return Localisation("fixed", [min(p, n_layers - 1) for p in range(sid_len)])


def ridge_probe_accuracy(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    n_classes: int,
    ridge: float = 1e-2,
) -> float:
    """Held-out accuracy of a closed-form ridge one-vs-rest classifier.

    x: float[n, d] (standardised with the training mean/std, plus a bias column);
    weights = (X^T X + ridge * n * I)^-1 X^T Y with Y one-hot[n, n_classes]; prediction = argmax.
    """
    xt, xs = x_train.double(), x_test.double()
    mu, sd = xt.mean(0), xt.std(0).clamp_min(1e-6)
    xt, xs = (xt - mu) / sd, (xs - mu) / sd
    xt = torch.cat([xt, torch.ones(xt.shape[0], 1, dtype=xt.dtype)], 1)
    xs = torch.cat([xs, torch.ones(xs.shape[0], 1, dtype=xs.dtype)], 1)
    Y = torch.nn.functional.one_hot(y_train.long(), n_classes).double()
    A = xt.T @ xt + ridge * xt.shape[0] * torch.eye(xt.shape[1], dtype=xt.dtype)
    Wt = torch.linalg.solve(A, xt.T @ Y)
    pred = (xs @ Wt).argmax(1)
    return float((pred == y_test.long()).double().mean())


def choose_layer(acc: list[float], margin: float) -> int:
    """Earliest layer whose accuracy is within `margin` of the best."""
    a = np.asarray(acc)
    return int(np.flatnonzero(a >= a.max() - margin)[0])


def probe_localisation(
    model: GenerativeRecommender,
    split: Split,
    sid_tokens: np.ndarray,
    *,
    n_samples: int = 3000,
    holdout: float = 0.25,
    ridge: float = 1e-2,
    margin: float = 0.01,
    seed: int = 0,
    batch_size: int = 512,
) -> Localisation:
    """Probe every (position, decoder layer) and pick a layer per position (module doc)."""
    t0 = time.perf_counter()
    P, n_layers = model.vocab.sid_len, len(model.ffn_out_projs())
    req = sample_training_requests(split, n_samples, seed)
    hist, tgt = request_tokens(model, split, req, sid_tokens)
    sites = [(p, layer) for p in range(P) for layer in range(n_layers)]
    was_training = model.training
    model.eval()
    try:
        with suspend_edits(model):
            keys = capture_keys(model, hist, tgt, sites, batch_size)
    finally:
        model.train(was_training)
    n = len(req)
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(n))
    n_test = max(1, round(holdout * n))
    test, train = perm[:n_test], perm[n_test:]
    codes = tgt - torch.tensor(model.vocab.offsets)[None, :]  # [n, P] code within each block
    accuracy, majority, layers = [], [], []
    for p in range(P):
        y = codes[:, p]
        counts = torch.bincount(y[train], minlength=model.vocab.sizes[p])
        majority.append(float((y[test] == counts.argmax()).double().mean()))
        acc = [
            ridge_probe_accuracy(
                keys[(p, layer)][train],
                y[train],
                keys[(p, layer)][test],
                y[test],
                model.vocab.sizes[p],
                ridge,
            )
            for layer in range(n_layers)
        ]
        accuracy.append(acc)
        layers.append(choose_layer(acc, margin))
    return Localisation(
        "probe",
        layers,
        accuracy=accuracy,
        majority=majority,
        n_train=int(train.numel()),
        n_heldout=n_test,
        margin=margin,
        seconds=time.perf_counter() - t0,
        extra={"ridge": ridge, "seed": seed},
    )


def cached_probe_localisation(
    model: GenerativeRecommender,
    split: Split,
    sid_tokens: np.ndarray,
    config: EditConfig,
    *,
    model_hash: str,
    data_hash: str,
    cache_dir: Path | None,
) -> Localisation:
    """`probe_localisation` with the config's probe settings, cached as
    `<cache_dir>/locate-<key>.json`, key = sha256 of (checkpoint content hash, split content
    hash, max_history, probe settings); an unreadable cache file is recomputed and overwritten.
    sid_tokens: int64[n_items, P] token ids of the catalog; cache_dir None = no cache."""
    key = {
        "model": model_hash,
        "data": data_hash,
        "max_history": model.config.max_history,
        "n": config.probe_samples,
        "holdout": config.probe_holdout,
        "ridge": config.probe_ridge,
        "margin": config.probe_margin,
        "seed": config.cov_seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = None if cache_dir is None else cache_dir / f"locate-{digest}.json"
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            loc = Localisation.from_dict(json.loads(path.read_text()))
            loc.cached = True
            return loc
    loc = probe_localisation(
        model,
        split,
        sid_tokens,
        n_samples=config.probe_samples,
        holdout=config.probe_holdout,
        ridge=config.probe_ridge,
        margin=config.probe_margin,
        seed=config.cov_seed,
        batch_size=config.batch_size,
    )
    if path is not None:
        write_json(path, loc.to_dict())
    return loc
