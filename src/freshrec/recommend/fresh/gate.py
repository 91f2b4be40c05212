"""The freshness gate: a per-request estimate of how likely the next item is new.

A logistic model on request features that the service can compute from the request alone
(its history, which catalog items are new, the GR beam and the content channel), fitted on
validation requests (label: the target is a new item). Features (`FEATURES`):

- share_new_10 / share_new_3 / last_new: share of new items among the last 10 / 3 / 1
  history items;
- new_mass: log of the content distribution's total probability on new items (not used by
  default: it grows with the number of live new items, so a gate fitted with every new item
  live stays shut in a service whose catalog holds only a few);
- new_top: the best new item's content log-probability;
- gr_top / gr_mass: the GR beam's best log-prob and the log-sum of its top-K log-probs
  (how sure the model is about warm items);
- log_history: log(1 + history length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from freshrec.errors import ConfigError

FEATURES: tuple[str, ...] = (
    "share_new_10",
    "share_new_3",
    "last_new",
    "new_mass",
    "new_top",
    "gr_top",
    "gr_mass",
    "log_history",
)
DEFAULT_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f != "new_mass")


def _share(histories: np.ndarray, is_new: np.ndarray, k: int) -> np.ndarray:
    h = histories[:, -k:]
    real = h >= 0
    new = real & is_new[np.clip(h, 0, None)]
    return new.sum(1) / np.maximum(real.sum(1), 1)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, -np.inf).astype(np.float64)
    top = np.max(x, axis=1, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(1)) + top[:, 0]


def gate_features(
    histories: np.ndarray,
    is_new: np.ndarray,
    warm_scores: np.ndarray,
    new_log_probs_all: np.ndarray,
) -> np.ndarray:
    """float64[n, len(FEATURES)] gate features.

    histories int64[n, H] (right-aligned, -1 padded); is_new bool[n_items]; warm_scores
    float[n, K] the GR beam's log-probs (-inf in empty slots); new_log_probs_all float[n, m]
    content log-probs of every live new item (-inf where excluded).
    """
    is_new = np.asarray(is_new, dtype=bool)
    gr_top = warm_scores[:, 0].astype(np.float64)
    floor = -50.0
    cols = {
        "share_new_10": _share(histories, is_new, 10),
        "share_new_3": _share(histories, is_new, 3),
        "last_new": _share(histories, is_new, 1),
        "new_mass": np.maximum(_logsumexp(new_log_probs_all), floor),
        "new_top": np.maximum(np.max(new_log_probs_all, axis=1, initial=-np.inf), floor),
        "gr_top": np.where(np.isfinite(gr_top), gr_top, floor),
        "gr_mass": np.maximum(_logsumexp(warm_scores), floor),
        "log_history": np.log1p((histories >= 0).sum(1)),
    }
    return np.stack([cols[f] for f in FEATURES], axis=1)


@dataclass
class LogisticGate:
    """P(next item is new | features) = sigmoid(((x - mean) / std) . coef + bias)."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    mean: list[float] = field(default_factory=lambda: [0.0] * len(DEFAULT_FEATURES))
    std: list[float] = field(default_factory=lambda: [1.0] * len(DEFAULT_FEATURES))
    coef: list[float] = field(default_factory=lambda: [0.0] * len(DEFAULT_FEATURES))
    bias: float = 0.0

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        n = len(self.features)
        if unknown := set(self.features) - set(FEATURES):
            raise ConfigError(f"unknown gate features {sorted(unknown)}; known: {FEATURES}")
        if not (len(self.mean) == len(self.std) == len(self.coef) == n):
            raise ConfigError("gate mean/std/coef must each have one value per feature")

    def _select(self, x: np.ndarray) -> np.ndarray:
        idx = [FEATURES.index(f) for f in self.features]
        return (x[:, idx] - np.asarray(self.mean)) / np.asarray(self.std)

    def logit(self, x: np.ndarray) -> np.ndarray:
        """float64[n] log-odds that the next item is new, for features x float[n, FEATURES]."""
        return self._select(x) @ np.asarray(self.coef) + self.bias

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        l2: float = 1e-2,
        features: tuple[str, ...] = DEFAULT_FEATURES,
    ) -> LogisticGate:
        """Maximum-likelihood fit (L2 `l2` on the standardised coefficients) to labels y bool[n]."""
        y = np.asarray(y, dtype=bool)
        if len(y) == 0 or y.all() or not y.any():
            raise ConfigError("the freshness gate needs requests with both new and warm targets")
        idx = [FEATURES.index(f) for f in features]
        xs = x[:, idx]
        mean, std = xs.mean(0), xs.std(0)
        std = np.where(std > 1e-9, std, 1.0)
        z = torch.from_numpy((xs - mean) / std)
        t = torch.from_numpy(y.astype(np.float64))
        w = torch.zeros(len(features) + 1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = z @ w[:-1] + w[-1]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
            loss = loss + l2 * (w[:-1] ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        coef = w.detach().numpy()
        return cls(features, mean.tolist(), std.tolist(), coef[:-1].tolist(), float(coef[-1]))
