"""Edit packs (a folder per edit, written atomically) and the `EditStack` that applies them to
a model. Packs are computed by `freshrec.edit.GenRecEditor`; applying them is model-level.

Pack folder:
    manifest.json        pack id, base checkpoint hash + tokenizer fingerprint, items (indices,
                         external ids, SIDs), sites + localisation report, method, lambda,
                         seeds, config, metrics (reliability, requests, failures), timings
    deltas.safetensors   one float32 tensor per site, "p{p}.l{L}": DeltaW [d_out, d_in]
    stats.safetensors    "gram.p{p}.l{L}": K K^T float64 [d_in, d_in] of the edited keys (for
                         AlphaEdit on later packs); "req.user/pos/item": the edit requests

`EditStack(model, checkpoint_dir)` applies packs to a live model via `edit_hooks.EditHooks`,
refusing packs made on another base checkpoint or tokenizer; `pop()` rolls back the latest;
with no pack left the model computes exactly what the base checkpoint computes.
`export_merged` writes a plain checkpoint with every delta added to its weights -- that drops
the trigger gating (each delta then acts at every decoder token), i.e. it equals the
"no trigger" ablation, not the gated edit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import freshrec
from freshrec.atomic import atomic_dir, write_json
from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError
from freshrec.manifest import read_manifest
from freshrec.model.base import GenerativeRecommender, build_model
from freshrec.model.checkpoint import checkpoint_identity, save_checkpoint
from freshrec.model.edit_hooks import EditHooks, Site

FORMAT = "freshrec-edit-pack"
VERSION = 1
MANIFEST, DELTAS, STATS = "manifest.json", "deltas.safetensors", "stats.safetensors"


def pack_folder(pack: str | Path, edits_dir: str | Path | None = None) -> Path:
    """A pack folder: `pack` as a path, else a pack id under `edits_dir`; CheckpointError when
    neither holds a manifest."""
    path = Path(pack)
    if (path / MANIFEST).is_file():
        return path
    if edits_dir is not None:
        under = Path(edits_dir) / str(pack)
        if (under / MANIFEST).is_file():
            return under
        raise CheckpointError(
            f"edit pack {str(pack)!r} not found (neither a folder nor in {under})"
        )
    raise CheckpointError(f"edit pack {str(pack)!r} not found (not a pack folder)")


def site_name(site: Site) -> str:
    return f"p{site[0]}.l{site[1]}"


def parse_site(name: str) -> Site:
    p, layer = name.split(".")
    return int(p[1:]), int(layer[1:])


@dataclass
class EditPack:
    """One edit: deltas per site, its manifest, and the statistics later edits need.

    deltas: {(p, L): float32[d_out, d_in]}; grams: {(p, L): float64[d_in, d_in]} (K K^T of the
    edited keys); requests: {"user", "pos", "item"} int64[n] edit requests."""

    deltas: dict[Site, torch.Tensor]
    manifest: dict[str, Any]
    grams: dict[Site, torch.Tensor] = field(default_factory=dict)
    requests: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------ accessors
    @property
    def pack_id(self) -> str:
        return str(self.manifest["pack_id"])

    @property
    def base_hash(self) -> str:
        return str(self.manifest["base"]["checkpoint_hash"])

    @property
    def tokenizer_fingerprint(self) -> str:
        return str(self.manifest["base"]["tokenizer_fingerprint"])

    @property
    def trigger(self) -> bool:
        return bool(self.manifest.get("trigger", True))

    @property
    def gate(self) -> str:
        """ "prefix" (deltas fire only on prefixes of the edited items' SIDs) or "none"."""
        return str(self.manifest.get("gate", "none"))

    @property
    def sids(self) -> np.ndarray:
        """int64[m, sid_len] SID codes of the edited items."""
        return np.asarray(self.manifest["sids"], dtype=np.int64).reshape(len(self.items), -1)

    @property
    def items(self) -> np.ndarray:
        """int64[m] edited item indices."""
        return np.asarray(self.manifest["items"]["index"], dtype=np.int64)

    @property
    def sites(self) -> list[Site]:
        return sorted(self.deltas)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.setdefault("metrics", {})

    @property
    def timings(self) -> dict[str, float]:
        return self.manifest.setdefault("timings", {})

    def __repr__(self) -> str:
        return (
            f"EditPack(id={self.pack_id}, items={len(self.items)}, sites={self.sites}, "
            f"method={self.manifest.get('method')})"
        )

    @staticmethod
    def content_id(deltas: dict[Site, torch.Tensor], manifest: dict[str, Any]) -> str:
        """16-hex id from the deltas and the manifest's identity fields."""
        h = hashlib.sha256()
        core = {k: manifest.get(k) for k in ("base", "items", "method", "config", "seed")}
        h.update(json.dumps(core, sort_keys=True, default=str).encode())
        for site in sorted(deltas):
            h.update(site_name(site).encode())
            h.update(deltas[site].detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ I/O
    def save(self, folder: str | Path) -> Path:
        """Write the pack to `folder` atomically (replaced if it exists)."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            tensors = {
                site_name(s): d.detach().cpu().float().contiguous() for s, d in self.deltas.items()
            }
            save_file(
                tensors,
                str(tmp / DELTAS),
                metadata={"format": FORMAT, "pack_id": self.pack_id},
            )
            stats = {
                f"gram.{site_name(s)}": g.detach().cpu().double().contiguous()
                for s, g in self.grams.items()
            }
            stats |= {
                f"req.{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64))
                for k, v in self.requests.items()
            }
            if stats:
                save_file(stats, str(tmp / STATS), metadata={"format": FORMAT})
            write_json(tmp / MANIFEST, self.manifest)
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EditPack:
        """Read a pack written by `save`; CheckpointError (naming the file) if incomplete."""
        folder = Path(folder)
        mpath = folder / MANIFEST
        manifest = read_manifest(
            mpath, "edit pack manifest", format=FORMAT, version=VERSION, hint=f"is {folder} a pack?"
        )
        gate = manifest.get("gate", "none")  # packs made before the gate have none
        if gate not in ("prefix", "none"):
            raise CheckpointError(f"{mpath}: unknown gate {gate!r} (expected 'prefix' or 'none')")
        n_items = len(manifest.get("items", {}).get("index", []))
        if gate == "prefix" and len(manifest.get("sids", [])) != n_items:
            raise CheckpointError(f"{mpath}: a prefix-gated pack needs one SID per edited item")
        try:
            raw = load_file(str(folder / DELTAS))
            stats = load_file(str(folder / STATS)) if (folder / STATS).is_file() else {}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{folder}: cannot read edit pack tensors ({exc})") from None
        deltas = {parse_site(k): v for k, v in raw.items()}
        expected = {(int(s["position"]), int(s["layer"])) for s in manifest.get("sites", [])}
        if expected != set(deltas):
            raise CheckpointError(
                f"{folder / DELTAS}: deltas for {sorted(deltas)} but the manifest lists "
                f"{sorted(expected)}"
            )
        grams = {parse_site(k[5:]): v for k, v in stats.items() if k.startswith("gram.")}
        requests = {k[4:]: v.numpy() for k, v in stats.items() if k.startswith("req.")}
        return cls(deltas, manifest, grams, requests, folder)


def combined_deltas(
    packs: list[EditPack],
) -> tuple[dict[Site, torch.Tensor], dict[Site, torch.Tensor]]:
    """(gated, ungated) deltas of `packs` summed per site (float32)."""
    gated: dict[Site, torch.Tensor] = {}
    ungated: dict[Site, torch.Tensor] = {}
    for pack in packs:
        target = gated if pack.trigger else ungated
        for site, d in pack.deltas.items():
            target[site] = target[site] + d.float() if site in target else d.float().clone()
    return gated, ungated


def hooks_for(
    model: GenerativeRecommender, packs: list[EditPack], *, record: bool = False
) -> EditHooks:
    """Uninstalled EditHooks applying `packs` to `model`. The prefix gate (the union of the
    packs' edited SIDs) is used when every triggered pack asks for it."""
    gated, ungated = combined_deltas(packs)
    triggered = [p for p in packs if p.trigger]
    gate_sids = None
    if triggered and all(p.gate == "prefix" for p in triggered):
        gate_sids = np.concatenate([p.sids for p in triggered])
    return EditHooks(
        model,
        gated,
        ungated=ungated,
        record=record,
        tags=[p.pack_id for p in packs],
        gate_sids=gate_sids,
    )


class EditStack:
    """Edit packs applied, in order, to a live model made from `checkpoint_dir`.

    push(pack) checks the pack's base checkpoint hash and tokenizer fingerprint and applies it
    at once; pop() removes the latest pack; `packs` lists them. The hooks (`hooks`) are
    re-installed on every change; `remove()` takes them all off (the model is then the base
    model, bit for bit) and `apply()` puts them back.
    """

    def __init__(self, model: GenerativeRecommender, checkpoint_dir: str | Path) -> None:
        self.model = model
        self.checkpoint_dir = Path(checkpoint_dir)
        self.base_hash, self.tokenizer_fingerprint = checkpoint_identity(checkpoint_dir)
        self._packs: list[EditPack] = []
        self._hooks: EditHooks | None = None
        self.record = False

    @property
    def packs(self) -> list[EditPack]:
        return list(self._packs)

    @property
    def hooks(self) -> EditHooks | None:
        return self._hooks

    def __len__(self) -> int:
        return len(self._packs)

    def check(self, pack: EditPack) -> None:
        """Raise unless `pack` was made on this stack's base checkpoint and tokenizer."""
        if pack.base_hash != self.base_hash:
            raise CheckpointError(
                f"edit pack {pack.pack_id} was made on base checkpoint {pack.base_hash} but this "
                f"model is checkpoint {self.base_hash} ({self.checkpoint_dir}); edit packs only "
                "apply to the exact checkpoint they were made on"
            )
        if pack.tokenizer_fingerprint != self.tokenizer_fingerprint:
            raise TokenizerMismatchError(
                f"edit pack {pack.pack_id} was made with SID tokenizer "
                f"{pack.tokenizer_fingerprint} but the checkpoint uses "
                f"{self.tokenizer_fingerprint}"
            )
        projs = self.model.ffn_out_projs()
        for (p, layer), d in pack.deltas.items():
            if layer >= len(projs) or tuple(d.shape) != tuple(projs[layer].weight.shape):
                raise CheckpointError(
                    f"edit pack {pack.pack_id}: delta (position {p}, layer {layer}) does not fit "
                    "the model"
                )

    def push(self, pack: EditPack) -> None:
        """Apply `pack` on top of the current packs."""
        self.check(pack)
        if any(p.pack_id == pack.pack_id for p in self._packs):
            raise ConfigError(f"edit pack {pack.pack_id} is already applied")
        self._packs.append(pack)
        self.apply()

    def pop(self) -> EditPack:
        """Roll back the most recent pack and return it."""
        if not self._packs:
            raise ConfigError("no edit pack to pop: the stack is empty")
        pack = self._packs.pop()
        self.apply()
        return pack

    def apply(self) -> EditHooks | None:
        """(Re-)install hooks for the current packs (none when the stack is empty)."""
        self.remove()
        if self._packs:
            self._hooks = hooks_for(self.model, self._packs, record=self.record).install()
        return self._hooks

    def remove(self) -> None:
        """Take every hook off: the model computes exactly what the base checkpoint does."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None

    def __enter__(self) -> EditStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def export_merged(self, folder: str | Path) -> Path:
        """A plain checkpoint with every pack's deltas added to the weights.

        This loses the trigger gating: each position's delta then acts at every decoder token
        (it equals the `trigger=False` ablation), so its recommendations differ from the hooked
        model's. The live model is not modified."""
        merged = build_model(self.model.config, self.model.vocab)
        merged.load_state_dict(self.model.state_dict())
        projs = merged.ffn_out_projs()
        with torch.no_grad():
            for pack in self._packs:
                for (_, layer), d in pack.deltas.items():
                    w = projs[layer].weight
                    w += d.to(w.device, w.dtype)
        return save_checkpoint(
            merged,
            folder,
            self.tokenizer_fingerprint,
            extra={
                "merged_edit_packs": [p.pack_id for p in self._packs],
                "base_checkpoint_hash": self.base_hash,
                "note": "edit deltas merged into the weights: trigger gating is lost",
                "freshrec_version": freshrec.__version__,
            },
        )
