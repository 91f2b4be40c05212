"""transformers KV-cache helpers shared by the tiger and causal wrappers."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache


def filled_cache(config: object, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A DynamicCache whose layers hold `kv` as they are (no copy; the next forward appends)."""
    cache = DynamicCache(config=config)  # type: ignore[arg-type]
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return cache
