"""Edit hooks (the one-to-one trigger): edit deltas live in forward hooks, never in the base
weights. Computing deltas is `freshrec.edit`'s job; applying them is the model's.

An edit is a set of weight deltas DeltaW_{p, L}: float[d_out, d_in] for SID position p on decoder
layer L's FFN output projection (`model.ffn_out_projs()[L]`, an nn.Linear with weight
[d_out, d_in]). A forward hook on that projection adds `k @ DeltaW_{p,L}^T` (k = the
projection's input) only at decoder tokens where `model.decode_context.positions == p`, i.e.
while the
model predicts SID token p of the recommended item: during beam search exactly one delta fires
per decoding step. Deltas of several packs for the same (p, L) are summed.

Prefix gate (`gate_sids`): a gated delta then also needs the SID prefix decoded so far to be a
prefix of one of the edited items' SIDs (`model.decode_context.prefixes`, set by the beam search and
by teacher-forced scoring; where it is unknown the gate is open). On a beam whose prefix leads
to no edited item no delta fires (later tokens still attend to earlier, edited ones).

Ungated deltas (`trigger=False`, the "no trigger" ablation) are added at every token of every
forward, which is exactly merging them into W (`EditStack.export_merged`).

Removing the hooks restores the base model bit-for-bit (the weights were never touched), and a
hook whose trigger never matches returns the projection's output object unchanged.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender

Site = tuple[int, int]
"""(SID position p, decoder layer L)."""

# model -> its installed EditHooks (so an editor can tell which packs are live, and suspend them)
_ACTIVE: weakref.WeakKeyDictionary[GenerativeRecommender, list[EditHooks]] = (
    weakref.WeakKeyDictionary()
)


class EditHooks:
    """Forward hooks applying edit deltas to a model's FFN output projections.

    deltas: {(p, L): float[d_out, d_in]} gated by `decode_context.positions == p`; `ungated` deltas
    ({(p, L): ...}, p only for bookkeeping) apply everywhere. `record=True` appends
    (p, L) to `fired` each time a gated delta is applied (tests check one per decoding step);
    ungated applications are recorded as (-1, L). `tags` names what is applied (pack ids).
    gate_sids: int64[m, sid_len] SID codes of the edited items: gated deltas fire only on
    rows whose decoded prefix is a prefix of one of them (None = no prefix gate).
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        deltas: Mapping[Site, torch.Tensor] | None = None,
        *,
        ungated: Mapping[Site, torch.Tensor] | None = None,
        record: bool = False,
        tags: list[str] | None = None,
        gate_sids: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.gate: list[torch.Tensor] | None = None  # per position p: sorted prefix keys
        if gate_sids is not None:
            self.set_gate(gate_sids)
        self.n_layers = len(model.ffn_out_projs())
        self.gated: dict[int, dict[int, torch.Tensor]] = {}  # layer -> position -> summed delta
        self.ungated: dict[int, torch.Tensor] = {}  # layer -> summed delta
        self.record = record
        self.fired: list[Site] = []
        self.tags: list[str] = list(tags or [])
        self.suspended = False
        self._handles: list[RemovableHandle] = []
        if deltas:
            self.add(deltas)
        if ungated:
            self.add(ungated, trigger=False)

    # ------------------------------------------------------------------ content
    def add(self, deltas: Mapping[Site, torch.Tensor], trigger: bool = True) -> None:
        """Add deltas (summed with any already present for the same site); re-installs the
        hooks if they are installed."""
        projs = self.model.ffn_out_projs()
        for (p, layer), dw in deltas.items():
            if not 0 <= layer < self.n_layers:
                raise ConfigError(f"edit layer {layer} out of range (model has {self.n_layers})")
            if p < 0 or p >= self.model.vocab.sid_len:
                sid_len = self.model.vocab.sid_len
                raise ConfigError(f"edit position {p} out of range (sid_len {sid_len})")
            w = projs[layer].weight
            if tuple(dw.shape) != tuple(w.shape):
                raise ConfigError(
                    f"delta for (position {p}, layer {layer}) has shape {tuple(dw.shape)}, the "
                    f"projection's weight is {tuple(w.shape)}"
                )
            dw = dw.detach().to(device=w.device, dtype=w.dtype)
            if trigger:
                slot = self.gated.setdefault(layer, {})
                slot[p] = slot[p] + dw if p in slot else dw.clone()
            else:
                prev = self.ungated.get(layer)
                self.ungated[layer] = dw.clone() if prev is None else prev + dw
        if self.installed:
            self.remove()
            self.install()

    def set_gate(self, sids: np.ndarray) -> None:
        """Gate the gated deltas by the prefixes of SIDs int64[m, sid_len] (codes)."""
        codes = torch.as_tensor(np.asarray(sids, dtype=np.int64))
        P = self.model.vocab.sid_len
        if codes.ndim != 2 or codes.shape[1] != P or (codes < 0).any():
            raise ConfigError(f"gate SIDs must be int[m, {P}] codes >= 0, got {tuple(codes.shape)}")
        keys = self.model.vocab.prefix_keys(codes)
        dev = self.model.device
        self.gate = [torch.unique(keys[:, p]).to(dev) for p in range(P)]  # sorted

    @property
    def sites(self) -> list[Site]:
        """Gated (p, L) sites, sorted."""
        return sorted((p, layer) for layer, d in self.gated.items() for p in d)

    # ------------------------------------------------------------------ hooks
    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def install(self) -> EditHooks:
        """Register the hooks (idempotent). Returns self."""
        if self.installed:
            return self
        projs = self.model.ffn_out_projs()
        for layer in sorted(set(self.gated) | set(self.ungated)):
            self._handles.append(projs[layer].register_forward_hook(self._hook(layer)))
        _ACTIVE.setdefault(self.model, []).append(self)
        return self

    def remove(self) -> None:
        """Unregister the hooks; the model computes exactly what it did before `install`."""
        for h in self._handles:
            h.remove()
        self._handles = []
        live = _ACTIVE.get(self.model, [])
        if self in live:
            live.remove(self)

    def __enter__(self) -> EditHooks:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _hook(self, layer: int):  # the torch forward-hook closure of one layer
        gated = self.gated.get(layer, {})
        ungated = self.ungated.get(layer)
        model = self.model

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if self.suspended:
                return output
            x = args[0]
            out = output
            if ungated is not None:
                out = out + F.linear(x, ungated)
                if self.record:
                    self.fired.append((-1, layer))
            ctx = model.decode_context
            trig, prefixes = ctx.positions, ctx.prefixes
            if trig is None or not gated:
                return out
            for p, dw in gated.items():
                m = trig == p
                if self.gate is not None and prefixes is not None:
                    m = m & torch.isin(prefixes, self.gate[p])
                if not bool(m.any()):
                    continue
                if bool(m.all()):
                    out = out + F.linear(x, dw)
                else:
                    if out is output:
                        out = output.clone()
                    out[m] = out[m] + F.linear(x[m], dw)
                if self.record:
                    self.fired.append((p, layer))
            return out

        return hook


def active_hooks(model: GenerativeRecommender) -> list[EditHooks]:
    """EditHooks currently installed on `model` (in installation order)."""
    return list(_ACTIVE.get(model, []))


@contextlib.contextmanager
def suspend_edits(model: GenerativeRecommender) -> Iterator[None]:
    """Temporarily disable every installed EditHooks of `model` (base-model computations,
    e.g. the preservation statistics, while edits are live)."""
    hooks = active_hooks(model)
    before = [h.suspended for h in hooks]
    for h in hooks:
        h.suspended = True
    try:
        yield
    finally:
        for h, s in zip(hooks, before, strict=True):
            h.suspended = s
