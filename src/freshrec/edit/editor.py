"""`GenRecEditor`: inject new items into a trained generative recommender in seconds.

    editor = GenRecEditor(model, checkpoint_dir, split, table, emb, EditConfig(), work)
    pack = editor.edit(new_items, seed=0)          # -> EditPack (timings + metrics inside)
    pack.save(work / "edits" / pack.pack_id)
    stack = EditStack(model, checkpoint_dir); stack.push(pack)   # live, gated by the trigger

Steps of `edit` (docs/EDITING.md): pseudo-requests from text neighbours' training contexts ->
localisation (a layer per SID position) -> per position p, in order: keys (projection inputs
at the position-p token, teacher-forced on the new item's SID, with the edits of positions < p
already live, as they are when decoding) -> target residuals (batched Adam) -> closed form
(MEMIT or AlphaEdit, float64) -> the position's delta goes live for the next positions. The
preservation statistics are computed once per base checkpoint and cached (timed apart).

Sequential batches: `edit(items, previous=packs)` builds on earlier packs: they are applied
while editing (or must already be, e.g. by an EditStack) and AlphaEdit keeps their keys.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import freshrec
from freshrec.data.schema import Requests, Split
from freshrec.edit.base import Editor, register_editor
from freshrec.edit.config import EditConfig
from freshrec.edit.covariance import CovarianceInfo, key_covariances, split_hash
from freshrec.edit.keys import request_tokens
from freshrec.edit.locate import Localisation, cached_probe_localisation, fixed_localisation
from freshrec.edit.observed import edit_requests
from freshrec.edit.pseudo import PseudoRequests, pseudo_requests
from freshrec.edit.reliability import pack_reliability, pack_requests
from freshrec.edit.sites import SiteEdits, edit_sites
from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError, UnknownItemError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.checkpoint import checkpoint_identity
from freshrec.model.edit_hooks import Site, active_hooks
from freshrec.model.edit_packs import FORMAT as PACK_FORMAT
from freshrec.model.edit_packs import VERSION as PACK_VERSION
from freshrec.model.edit_packs import EditPack, hooks_for
from freshrec.recommend.catalog import Catalog
from freshrec.semid.table import SidTable
from freshrec.workspace import Workspace


@register_editor("genrecedit", config=EditConfig)
class GenRecEditor(Editor):
    """Edits `model` (loaded from `checkpoint_dir`) so that it recommends new items.

    split: the data the model was trained on (training contexts); table: SID table with the new
    items' SIDs assigned (without refitting); emb: float32[n_items, d] item text embeddings;
    work: a `Workspace`, or a folder whose `cache/` holds the reusable statistics (None = no
    disk cache).
    """

    accepts_observed = True

    def __init__(
        self,
        model: GenerativeRecommender,
        checkpoint_dir: str | Path,
        split: Split,
        table: SidTable,
        emb: np.ndarray,
        config: EditConfig | None = None,
        work: Workspace | str | Path | None = None,
    ) -> None:
        self.model = model
        self.checkpoint_dir = Path(checkpoint_dir)
        self.base_hash, self.fingerprint = checkpoint_identity(checkpoint_dir)
        self.split = split
        self.table = table
        self.emb = np.asarray(emb, dtype=np.float32)
        if self.emb.ndim != 2 or self.emb.shape[0] < table.n_items:
            raise ConfigError(
                f"emb must be float[n_items, d] with a row per catalog item ({table.n_items}), "
                f"got shape {self.emb.shape}"
            )
        self.config = config or EditConfig()
        if isinstance(work, Workspace):
            self.cache_dir: Path | None = work.cache
        else:
            self.cache_dir = None if work is None else Path(work) / "cache"
        self.vocab = model.vocab
        self.sid_tokens = table.tokens(self.vocab)
        self.catalog = Catalog.from_split(split, table, self.vocab)
        self.trie = self.catalog.trie("full")  # the full catalog: new items included
        self._loc: Localisation | None = None
        self._data_hash: str | None = None

    # ------------------------------------------------------------------ shared statistics
    @property
    def data_hash(self) -> str:
        if self._data_hash is None:
            self._data_hash = split_hash(self.split)
        return self._data_hash

    def localise(self) -> Localisation:
        """The layer of each SID position (config.locate); probes are cached on disk."""
        if self._loc is None:
            if self.config.locate == "fixed":
                n_layers = len(self.model.ffn_out_projs())
                self._loc = fixed_localisation(self.vocab.sid_len, n_layers)
            else:
                self._loc = cached_probe_localisation(
                    self.model,
                    self.split,
                    self.sid_tokens,
                    self.config,
                    model_hash=self.base_hash,
                    data_hash=self.data_hash,
                    cache_dir=self.cache_dir,
                )
        return self._loc

    def covariances(self, sites: Sequence[Site]) -> tuple[dict[Site, torch.Tensor], CovarianceInfo]:
        """Preservation statistics C_{p,L} of `sites` (cached on disk, see covariance.py)."""
        return key_covariances(
            self.model,
            self.split,
            self.sid_tokens,
            list(sites),
            model_hash=self.base_hash,
            cache_dir=self.cache_dir,
            n_samples=self.config.cov_samples,
            seed=self.config.cov_seed,
            batch_size=min(self.config.batch_size, 512),
        )

    # ------------------------------------------------------------------ packs on the model
    def _check_pack(self, pack: EditPack) -> None:
        if pack.base_hash != self.base_hash:
            raise CheckpointError(
                f"edit pack {pack.pack_id} was made on base checkpoint {pack.base_hash}, not on "
                f"{self.base_hash} ({self.checkpoint_dir})"
            )
        if pack.tokenizer_fingerprint != self.fingerprint:
            raise TokenizerMismatchError(
                f"edit pack {pack.pack_id} was made with SID tokenizer "
                f"{pack.tokenizer_fingerprint}, the checkpoint uses {self.fingerprint}"
            )

    @contextlib.contextmanager
    def _packs_applied(self, packs: Sequence[EditPack]) -> Iterator[None]:
        """Make the model compute with exactly `packs` applied: packs already live (an
        EditStack's hooks) must be a prefix of them; the rest is applied for the duration."""
        live = [tag for h in active_hooks(self.model) for tag in h.tags]
        want = [p.pack_id for p in packs]
        if live != want[: len(live)]:
            raise ConfigError(
                f"the model has edit packs {live} applied, but this call expects {want}; "
                "apply exactly the previous packs (e.g. with an EditStack) or none"
            )
        extra = list(packs)[len(live) :]
        hooks = hooks_for(self.model, extra).install() if extra else None
        try:
            yield
        finally:
            if hooks is not None:
                hooks.remove()

    # ------------------------------------------------------------------ edit
    def _checked_items(self, new_items: np.ndarray | Sequence[int]) -> np.ndarray:
        """int64[m] item indices of `new_items`; UnknownItemError for an index outside the SID
        table, ConfigError for an item without a SID."""
        items = np.asarray(new_items, dtype=np.int64).reshape(-1)
        n_items = self.table.n_items
        if items.size and (items.min() < 0 or items.max() >= n_items):
            bad = int(items[(items < 0) | (items >= n_items)][0])
            raise UnknownItemError(f"item index {bad} is not in the SID table (0..{n_items - 1})")
        if items.size and (self.table.sids[items] < 0).any():
            bad = int(items[(self.table.sids[items] < 0).any(axis=1)][0])
            raise ConfigError(
                f"item {bad} has no SID; assign new items SIDs first (semid.assign_new_items)"
            )
        return items

    def pseudo(self, new_items: np.ndarray, seed: int) -> PseudoRequests:
        cfg = self.config
        return pseudo_requests(
            self.split,
            self.emb,
            new_items,
            n_neighbors=cfg.n_neighbors,
            n_contexts=cfg.n_contexts,
            contexts=cfg.contexts,
            seed=seed,
        )

    def _sorted_pseudo(
        self, items: np.ndarray, seed: int, observed: Requests | None = None
    ) -> PseudoRequests:
        """The edit requests of `items` (the observed ones, topped up with pseudo-requests,
        when `observed` is given), those sharing a context adjacent (so a batch computes each
        context once); ConfigError if there are none."""
        cfg = self.config
        if observed is None:
            pseudo = self.pseudo(items, seed)
        else:
            pseudo = edit_requests(
                observed, lambda need: self.pseudo(need, seed), items, cfg.n_contexts, cfg.top_up
            )
        pseudo = pseudo.subset(np.lexsort((pseudo.item, pseudo.pos, pseudo.user)))
        if len(pseudo) == 0:
            raise ConfigError("no pseudo-requests for these items (no warm neighbour has context)")
        return pseudo

    def edit(
        self,
        new_items: np.ndarray | Sequence[int],
        seed: int | None = None,
        previous: Sequence[EditPack] = (),
        observed: Requests | None = None,
    ) -> EditPack:
        """Edit the model so that it recommends `new_items` (int item indices with SIDs).

        seed: pseudo-request sampling seed (None = config.seed). previous: packs this edit
        builds on (applied while editing; AlphaEdit preserves their keys). observed: real
        interactions with the items as edit requests (`edit.observed.edit_requests`; items
        without one get pseudo-requests). The model is left as it was (no hooks added).
        Returns the pack with metrics and timings (seconds).
        """
        cfg = self.config
        seed = cfg.seed if seed is None else int(seed)
        for pack in previous:
            self._check_pack(pack)
        items = self._checked_items(new_items)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pseudo = self._sorted_pseudo(items, seed, observed)
        timings["pseudo"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        loc = self.localise()
        timings["locate"] = time.perf_counter() - t0
        sites = [(p, loc.layers[p]) for p in cfg.resolved_positions(self.vocab.sid_len)]
        covs, cov_info = self.covariances(sites)
        edits = self._edit_sites(pseudo, sites, covs, previous, timings)

        timings["edit_total"] = sum(
            timings[k] for k in ("pseudo", "locate", "keys", "targets", "solve")
        )
        timings["covariance"] = cov_info.seconds
        manifest = self._manifest(items, seed, previous, pseudo, loc, edits, cov_info, timings)
        manifest["metrics"]["n_observed"] = 0 if observed is None else len(observed)
        pack = EditPack(
            deltas=edits.deltas,
            manifest=manifest,
            grams=edits.grams,
            requests={
                "user": pseudo.user.astype(np.int64),
                "pos": pseudo.pos.astype(np.int64),
                "item": pseudo.item.astype(np.int64),
            },
        )
        manifest["pack_id"] = EditPack.content_id(edits.deltas, manifest)
        if cfg.measure_reliability:
            t0 = time.perf_counter()
            with self._packs_applied(previous):
                before = self._reliability(pack, [])
                after = self._reliability(pack, [pack])
            manifest["metrics"]["reliability"] = {**after, "before": before}
            timings["reliability"] = time.perf_counter() - t0
        return pack

    def _edit_sites(
        self,
        pseudo: PseudoRequests,
        sites: list[Site],
        covs: dict[Site, torch.Tensor],
        previous: Sequence[EditPack],
        timings: dict[str, float],
    ) -> SiteEdits:
        """`edit_sites` for the edit requests `pseudo`, in eval mode with `previous` applied;
        the model's training mode and hooks are restored afterwards."""
        model = self.model
        was_training = model.training
        model.eval()
        hist, tgt = request_tokens(model, self.split, pseudo.requests(), self.sid_tokens)
        codes = self.table.sids[pseudo.item]  # [n, P] SID codes of the targets
        timings.update(keys=0.0, targets=0.0, solve=0.0)
        try:
            with self._packs_applied(previous):
                return edit_sites(
                    model, hist, tgt, codes, self.trie, sites, covs, self.config, previous, timings
                )
        finally:
            model.train(was_training)

    def _manifest(
        self,
        items: np.ndarray,
        seed: int,
        previous: Sequence[EditPack],
        pseudo: PseudoRequests,
        loc: Localisation,
        edits: SiteEdits,
        cov_info: CovarianceInfo,
        timings: dict[str, float],
    ) -> dict[str, Any]:
        """The pack's manifest (pack_id left empty: it is the content id of deltas + manifest):
        the base checkpoint, items and SIDs, sites, settings, metrics and timings (seconds)."""
        cfg = self.config
        ids = self.split.dataset.items.ids
        item_ids = [ids[i] if i < len(ids) else str(i) for i in items.tolist()]
        failed_items = np.unique(pseudo.item[edits.failed]).tolist()
        return {
            "format": PACK_FORMAT,
            "version": PACK_VERSION,
            "pack_id": "",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "freshrec_version": freshrec.__version__,
            "arch": self.model.arch,
            "base": {
                "checkpoint_hash": self.base_hash,
                "tokenizer_fingerprint": self.fingerprint,
                "checkpoint_dir": str(self.checkpoint_dir),
                "data_hash": self.data_hash,
            },
            "items": {"index": items.tolist(), "id": item_ids},
            "sids": self.table.sids[items].tolist(),
            "sites": [{"position": p, "layer": layer} for p, layer in edits.deltas],
            "localisation": loc.to_dict(),
            "method": cfg.method,
            "lam": cfg.lam,
            "trigger": cfg.trigger,
            "gate": cfg.gate,
            "seed": seed,
            "config": cfg.model_dump(mode="json"),
            "previous_packs": [pk.pack_id for pk in previous],
            "metrics": {
                "n_items": int(items.size),
                "n_requests": len(pseudo),
                "items_without_context": pseudo.no_context.tolist(),
                "mean_neighbor_sim": (
                    float(np.nanmean(pseudo.sim)) if np.isfinite(pseudo.sim).any() else None
                ),
                "positions": edits.per_position,
                "failures": {
                    "n_requests": int(edits.failed.sum()),
                    "requests": np.flatnonzero(edits.failed).tolist(),
                    "items": failed_items,
                    "in_solve": not cfg.drop_failures,
                },
                "covariance": cov_info.to_dict(),
            },
            "timings": timings,
        }

    # ------------------------------------------------------------------ reliability
    pack_requests = staticmethod(pack_requests)

    def _reliability(self, pack: EditPack, extra: list[EditPack]) -> dict[str, float]:
        return pack_reliability(
            self.model,
            self.catalog,
            self.split,
            pack,
            extra,
            beam=self.config.reliability_beam,
            max_requests=self.config.reliability_requests,
        )

    def evaluate_reliability(self, pack: EditPack) -> dict[str, float]:
        """Share of the pack's edit requests whose full SID is the top-1 / in the top-10 of the
        edited model over the full catalog (beam = config.reliability_beam; a seeded sample of
        config.reliability_requests requests). The model is evaluated as currently hooked, plus
        `pack` if it is not applied yet."""
        self._check_pack(pack)
        live = {tag for h in active_hooks(self.model) for tag in h.tags}
        return self._reliability(pack, [] if pack.pack_id in live else [pack])
