"""Token layout shared by tokenizers, models, tries and decoders.

A semantic ID (SID) has `n_levels` quantisation codes in `[0, codebook_size)` plus one collision
digit in `[0, max_collision)`: length `sid_len = n_levels + 1`. Model token ids:

    0                     PAD
    1                     BOS / decoder start (also EOS)
    2 + p*K + c           code c at SID position p < n_levels   (K = codebook_size)
    2 + L*K + d           collision digit d                    (L = n_levels)
    2 + L*K + D + b       hashed user bucket b (optional)      (D = max_collision)

Each SID position owns a disjoint token block, so `block(p)` is a contiguous slice of the
vocabulary and decoders only ever score that slice at step p.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

PAD = 0
BOS = 1


@dataclass(frozen=True)
class SidVocab:
    n_levels: int = 3
    codebook_size: int = 64
    max_collision: int = 64
    user_buckets: int = 0

    @property
    def sid_len(self) -> int:
        return self.n_levels + 1

    @property
    def sizes(self) -> list[int]:
        """Number of token values at each SID position, len sid_len."""
        return [self.codebook_size] * self.n_levels + [self.max_collision]

    @property
    def offsets(self) -> list[int]:
        """First token id of each SID position's block, len sid_len."""
        out, start = [], 2
        for size in self.sizes:
            out.append(start)
            start += size
        return out

    @property
    def user_offset(self) -> int:
        return 2 + self.n_levels * self.codebook_size + self.max_collision

    @property
    def size(self) -> int:
        """Total vocabulary size."""
        return self.user_offset + self.user_buckets

    def block(self, p: int) -> slice:
        """Token-id slice of SID position p."""
        start = self.offsets[p]
        return slice(start, start + self.sizes[p])

    def to_tokens(self, sids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """SIDs int[..., sid_len] (codes + collision digit) -> token ids of the same shape."""
        offsets = self.offsets
        if isinstance(sids, torch.Tensor):
            return sids + torch.as_tensor(offsets, dtype=sids.dtype, device=sids.device)
        return np.asarray(sids) + np.asarray(offsets, dtype=np.int64)

    def from_tokens(self, tokens: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Token ids int[..., sid_len] -> SIDs (inverse of `to_tokens`)."""
        offsets = self.offsets
        if isinstance(tokens, torch.Tensor):
            return tokens - torch.as_tensor(offsets, dtype=tokens.dtype, device=tokens.device)
        return np.asarray(tokens) - np.asarray(offsets, dtype=np.int64)

    def prefix_key(self, prefix: torch.Tensor) -> torch.Tensor:
        """SID prefixes Long[..., p] (codes) -> Long[...]: an integer key (mixed radix over
        `sizes`; 0 for p = 0), equal for two prefixes of the same length iff they are."""
        key = torch.zeros(prefix.shape[:-1], dtype=torch.long, device=prefix.device)
        for p in range(prefix.shape[-1]):
            key = key * self.sizes[p] + prefix[..., p]
        return key

    def prefix_keys(self, sids: torch.Tensor) -> torch.Tensor:
        """SID codes Long[..., k] -> Long[..., k]: column p = `prefix_key(sids[..., :p])`."""
        return torch.stack([self.prefix_key(sids[..., :p]) for p in range(sids.shape[-1])], -1)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
