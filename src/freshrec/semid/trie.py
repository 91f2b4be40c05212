"""Prefix trie over the catalog's semantic IDs, stored as dense per-level child tables.

`children[p]` is a LongTensor[n_nodes_p, vocab.sizes[p]]: row = a node at depth p (a distinct
SID prefix of length p), column = the code chosen at SID position p, value = the child node's
index at depth p+1, or at the last level the **item index**; -1 = no such SID. The root is
node 0 of level 0. A batched decoder masks step p with `children[p][node] >= 0` and advances
with `node = children[p][node, code]`, so constrained decoding is pure tensor indexing.
"""

from __future__ import annotations

import numpy as np
import torch

from freshrec.errors import ConfigError
from freshrec.semid.keys import lex_keys
from freshrec.semid.vocab import SidVocab


class SidTrie:
    """Dense prefix trie over (SID, item) pairs. Build with `SidTrie.build`, grow with `add`."""

    def __init__(self, vocab: SidVocab, children: list[torch.Tensor]) -> None:
        if len(children) != vocab.sid_len:
            raise ConfigError(f"trie has {len(children)} levels, vocab sid_len {vocab.sid_len}")
        self.vocab = vocab
        self.children = children

    # --- construction --------------------------------------------------------------------
    @classmethod
    def empty(cls, vocab: SidVocab) -> SidTrie:
        """A trie with only the root (accepts nothing)."""
        children = [torch.full((1, vocab.sizes[0]), -1, dtype=torch.long)]
        children += [torch.full((0, s), -1, dtype=torch.long) for s in vocab.sizes[1:]]
        return cls(vocab, children)

    @classmethod
    def build(
        cls, sids: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, vocab: SidVocab
    ) -> SidTrie:
        """Trie over SIDs int64[n, sid_len] (codes, not token ids) mapping to items int64[n].

        Raises ConfigError on duplicate SIDs or duplicate items, or codes out of range.
        """
        trie = cls.empty(vocab)
        trie.add(sids, items)
        return trie

    @classmethod
    def from_table(
        cls, sids: np.ndarray, vocab: SidVocab, mask: np.ndarray | None = None
    ) -> SidTrie:
        """Trie over a SidTable-like array int64[n_items, sid_len] (row = item index; rows with
        -1 are unassigned and skipped), optionally restricted to `mask: bool[n_items]`."""
        sids = np.asarray(sids, dtype=np.int64)
        keep = (sids >= 0).all(axis=1)
        if mask is not None:
            keep &= np.asarray(mask, dtype=bool)
        items = np.flatnonzero(keep)
        return cls.build(sids[items], items, vocab)

    def add(self, sids: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor) -> None:
        """Insert SIDs int64[n, sid_len] -> items int64[n]. Existing node ids never change; new
        nodes are appended. Raises ConfigError (before changing anything) if a SID is repeated
        or already present, an item would get a second SID, or a code is out of range."""
        sids = _as_np(sids).reshape(-1, self.vocab.sid_len)
        items = _as_np(items).reshape(-1)
        if sids.shape[0] != items.shape[0]:
            raise ConfigError(f"{sids.shape[0]} SIDs but {items.shape[0]} items")
        if sids.shape[0] == 0:
            return
        sizes = np.asarray(self.vocab.sizes, dtype=np.int64)
        if (sids < 0).any() or (sids >= sizes[None, :]).any():
            bad = int(np.flatnonzero(((sids < 0) | (sids >= sizes[None, :])).any(axis=1))[0])
            raise ConfigError(
                f"SID {sids[bad].tolist()} (item {items[bad]}) has a code out of range"
            )
        if (items < 0).any():
            raise ConfigError("item indices must be >= 0")
        dup = _first_duplicate(sids, self.vocab.sizes)
        if dup is not None:
            rows = np.flatnonzero((sids == dup).all(axis=1))
            raise ConfigError(
                f"duplicate SID {dup.tolist()} for items {items[rows].tolist()}: "
                "SIDs must be unique"
            )
        present = self.lookup(sids)
        if (present >= 0).any():
            i = int(np.flatnonzero(present >= 0)[0])
            raise ConfigError(
                f"SID {sids[i].tolist()} is already in the trie (item {present[i]}); "
                f"cannot add it again for item {items[i]}"
            )
        vals, cnt = np.unique(np.concatenate([self.items(), items]), return_counts=True)
        if (cnt > 1).any():
            raise ConfigError(f"item {int(vals[cnt > 1][0])} would have more than one SID")
        dev = self.children[0].device
        node = np.zeros(sids.shape[0], dtype=np.int64)  # current node at level p
        for p in range(self.vocab.sid_len):
            table = self.children[p]
            idx = (torch.as_tensor(node, device=dev), torch.as_tensor(sids[:, p], device=dev))
            if p == self.vocab.sid_len - 1:
                table[idx] = torch.as_tensor(items, device=dev)
                break
            child = table[idx].cpu().numpy()
            missing = child < 0
            if missing.any():
                # distinct new (node, code) pairs get consecutive new node ids at level p+1, in
                # (node, code) order: the key node * size + code sorts like the pair
                size = self.vocab.sizes[p]
                new_keys, inverse = np.unique(
                    node[missing] * size + sids[missing, p], return_inverse=True
                )
                new_ids = self.children[p + 1].shape[0] + np.arange(len(new_keys), dtype=np.int64)
                new_node = torch.as_tensor(new_keys // size, device=dev)
                new_code = torch.as_tensor(new_keys % size, device=dev)
                table[new_node, new_code] = torch.as_tensor(new_ids, device=dev)
                grow = torch.full(
                    (len(new_keys), self.vocab.sizes[p + 1]), -1, dtype=torch.long, device=dev
                )
                self.children[p + 1] = torch.cat([self.children[p + 1], grow])
                child[missing] = new_ids[inverse.reshape(-1)]
            node = child

    # --- queries ------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int((self.children[-1] >= 0).sum())

    def __len__(self) -> int:
        return self.n_items

    def items(self) -> np.ndarray:
        """int64[n] item indices in the trie (leaf order: by last-level node, then code)."""
        leaf = self.children[-1]
        return leaf[leaf >= 0].cpu().numpy().astype(np.int64)

    def sids_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(sids int64[n, sid_len], items int64[n]) of every stored SID, by walking back up."""
        L = self.vocab.sid_len
        leaf = self.children[-1]
        node, code = torch.nonzero(leaf >= 0, as_tuple=True)
        items = leaf[node, code]
        out = torch.empty((node.shape[0], L), dtype=torch.long)
        out[:, L - 1] = code
        for p in range(L - 2, -1, -1):
            table = self.children[p]
            # parent of level-(p+1) node n: the unique (row, col) with table[row, col] == n
            flat = table.reshape(-1)
            valid = flat >= 0
            parent = torch.empty(self.children[p + 1].shape[0], dtype=torch.long)
            parent[flat[valid]] = torch.nonzero(valid, as_tuple=True)[0]
            pos = parent[node]
            node, out[:, p] = pos // table.shape[1], pos % table.shape[1]
        return out.numpy(), items.numpy()

    def lookup(self, sids: np.ndarray | torch.Tensor) -> np.ndarray:
        """int64[n] item of each SID int64[n, sid_len], -1 where the SID is not in the trie."""
        dev = self.children[0].device
        sids = torch.as_tensor(_as_np(sids).reshape(-1, self.vocab.sid_len), device=dev)
        sizes = torch.as_tensor(self.vocab.sizes, device=dev)
        ok = ((sids >= 0) & (sids < sizes)).all(dim=1)
        node = torch.zeros(sids.shape[0], dtype=torch.long, device=dev)
        for p in range(self.vocab.sid_len):
            if self.children[p].shape[0] == 0:
                return np.full(sids.shape[0], -1, dtype=np.int64)
            code = sids[:, p].clamp(0, self.vocab.sizes[p] - 1)
            child = self.children[p][node.clamp(min=0), code]
            node = torch.where(ok & (node >= 0), child, torch.full_like(child, -1))
        return node.cpu().numpy()

    def contains(self, sids: np.ndarray | torch.Tensor) -> np.ndarray:
        """bool[n]: whether each SID int64[n, sid_len] is in the trie."""
        return self.lookup(sids) >= 0

    def restrict(self, items_mask: np.ndarray) -> SidTrie:
        """A new trie with only the items where `items_mask: bool[n_items]` is True (e.g. the
        warm catalog). Items beyond the mask's length are dropped."""
        sids, items = self.sids_items()
        mask = np.asarray(items_mask, dtype=bool)
        keep = (items < mask.shape[0]) & mask[np.minimum(items, max(mask.shape[0] - 1, 0))]
        return SidTrie.build(sids[keep], items[keep], self.vocab)

    def to(self, device: torch.device | str) -> SidTrie:
        """A copy whose tables live on `device`."""
        return SidTrie(self.vocab, [c.to(device) for c in self.children])

    def __repr__(self) -> str:
        nodes = [c.shape[0] for c in self.children]
        return f"SidTrie(items={self.n_items}, nodes_per_level={nodes})"


def _first_duplicate(sids: np.ndarray, sizes: list[int]) -> np.ndarray | None:
    """The lexicographically first SID of sids int64[n, sid_len] (codes within `sizes`) that
    occurs more than once, or None. Sorts 1-d keys (`lex_keys`), rows only if keys overflow."""
    keys = lex_keys(sids, sizes)
    if keys is None:
        uniq, counts = np.unique(sids, axis=0, return_counts=True)
        return uniq[counts > 1][0] if (counts > 1).any() else None
    ordered = np.sort(keys)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return None
    return sids[np.flatnonzero(keys == ordered[1:][same][0])[0]]


def _as_np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.int64)
