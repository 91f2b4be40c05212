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
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import freshrec
from freshrec.atomic import write_json
from freshrec.data.schema import Requests, Split
from freshrec.edit.base import Editor, register_editor
from freshrec.edit.config import EditConfig
from freshrec.edit.covariance import CovarianceInfo, key_covariances, split_hash
from freshrec.edit.keys import TeacherForcedBatch, request_tokens
from freshrec.edit.locate import Localisation, fixed_localisation, probe_localisation
from freshrec.edit.observed import edit_requests
from freshrec.edit.pseudo import PseudoRequests, pseudo_requests
from freshrec.edit.solve import (
    alphaedit_solve,
    memit_solve,
    null_space_basis,
    preserved_change,
)
from freshrec.edit.targets import TargetResult, optimise_targets
from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError, UnknownItemError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.checkpoint import checkpoint_identity
from freshrec.model.edit_hooks import EditHooks, Site, active_hooks
from freshrec.model.edit_packs import FORMAT as PACK_FORMAT
from freshrec.model.edit_packs import VERSION as PACK_VERSION
from freshrec.model.edit_packs import EditPack, hooks_for
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.gr import GRRanker
from freshrec.semid.table import SidTable
from freshrec.workspace import Workspace

_IN_PROGRESS = "<in-progress>"
_KEEP_BYTES = 2 << 30  # prepared request states kept across positions up to this size


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
        if self._loc is not None:
            return self._loc
        cfg = self.config
        P, n_layers = self.vocab.sid_len, len(self.model.ffn_out_projs())
        if cfg.locate == "fixed":
            self._loc = fixed_localisation(P, n_layers)
            return self._loc
        key = {
            "model": self.base_hash,
            "data": self.data_hash,
            "max_history": self.model.config.max_history,
            "n": cfg.probe_samples,
            "holdout": cfg.probe_holdout,
            "ridge": cfg.probe_ridge,
            "margin": cfg.probe_margin,
            "seed": cfg.cov_seed,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        path = None if self.cache_dir is None else self.cache_dir / f"locate-{digest}.json"
        if path is not None and path.is_file():
            with contextlib.suppress(OSError, ValueError, TypeError):
                loc = Localisation.from_dict(json.loads(path.read_text()))
                loc.cached = True
                self._loc = loc
                return loc
        loc = probe_localisation(
            self.model,
            self.split,
            self.sid_tokens,
            n_samples=cfg.probe_samples,
            holdout=cfg.probe_holdout,
            ridge=cfg.probe_ridge,
            margin=cfg.probe_margin,
            seed=cfg.cov_seed,
            batch_size=cfg.batch_size,
        )
        if path is not None:
            write_json(path, loc.to_dict())
        self._loc = loc
        return loc

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
    def _allowed(self, codes: np.ndarray, p: int) -> torch.Tensor:
        """Bool[n, sizes[p]]: tokens the full-catalog trie allows at position p after each
        request's SID prefix codes[:, :p]."""
        node = torch.zeros(codes.shape[0], dtype=torch.long)
        c = torch.from_numpy(codes)
        for q in range(p):
            node = self.trie.children[q].cpu()[node, c[:, q]]
        return self.trie.children[p].cpu()[node] >= 0

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
        Returns the pack with metrics and timings.
        """
        cfg = self.config
        seed = cfg.seed if seed is None else int(seed)
        model = self.model
        for pack in previous:
            self._check_pack(pack)
        items = np.asarray(new_items, dtype=np.int64).reshape(-1)
        if items.size and (items.min() < 0 or items.max() >= self.table.n_items):
            bad = int(items[(items < 0) | (items >= self.table.n_items)][0])
            raise UnknownItemError(
                f"item index {bad} is not in the SID table (0..{self.table.n_items - 1})"
            )
        if items.size and (self.table.sids[items] < 0).any():
            bad = int(items[(self.table.sids[items] < 0).any(axis=1)][0])
            raise ConfigError(
                f"item {bad} has no SID; assign new items SIDs first (semid.assign_new_items)"
            )
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if observed is None:
            pseudo = self.pseudo(items, seed)
        else:
            pseudo = edit_requests(
                observed, lambda need: self.pseudo(need, seed), items, cfg.n_contexts, cfg.top_up
            )
        # requests sharing a context are adjacent, so a batch computes each context once
        pseudo = pseudo.subset(np.lexsort((pseudo.item, pseudo.pos, pseudo.user)))
        timings["pseudo"] = time.perf_counter() - t0
        if len(pseudo) == 0:
            raise ConfigError("no pseudo-requests for these items (no warm neighbour has context)")
        t0 = time.perf_counter()
        loc = self.localise()
        timings["locate"] = time.perf_counter() - t0
        P = self.vocab.sid_len
        positions = cfg.resolved_positions(P)
        sites = [(p, loc.layers[p]) for p in positions]
        covs, cov_info = self.covariances(sites)

        was_training = model.training
        model.eval()
        req = pseudo.requests()
        hist, tgt = request_tokens(model, self.split, req, self.sid_tokens)
        codes = self.table.sids[pseudo.item]  # [n, P] SID codes of the targets
        n = len(pseudo)
        deltas: dict[Site, torch.Tensor] = {}
        grams: dict[Site, torch.Tensor] = {}
        per_pos: dict[str, dict[str, Any]] = {}
        failed_any = np.zeros(n, dtype=bool)
        timings.update(keys=0.0, targets=0.0, solve=0.0)
        projs = model.ffn_out_projs()
        try:
            with self._packs_applied(previous):
                # teacher-forced rows carry no prefix keys: the gate is open for them, as the
                # union gate of the finished stack will be on the new items' own prefixes
                work = EditHooks(model, tags=[_IN_PROGRESS]).install()
                try:
                    bs = cfg.batch_size
                    chunks = [slice(s, min(s + bs, n)) for s in range(0, n, bs)]
                    prepared: dict[int, TeacherForcedBatch] = {}
                    kept_bytes = 0
                    # prompt states that see the edited FFNs change under ungated (no-trigger)
                    # edits: rebuild them then
                    keep = cfg.trigger or not model.prompt_states_see_ffn_edits
                    for p, site in zip(positions, sites, strict=True):
                        layer = site[1]
                        allowed = self._allowed(codes, p)
                        parts: list[TargetResult] = []
                        for ci, rows in enumerate(chunks):
                            t0 = time.perf_counter()
                            batch = prepared.get(ci)
                            if batch is None:
                                batch = TeacherForcedBatch(model, hist[rows], tgt[rows])
                                if keep and kept_bytes + batch.nbytes <= _KEEP_BYTES:
                                    prepared[ci] = batch
                                    kept_bytes += batch.nbytes
                            scorer = batch.scorer(p)
                            timings["keys"] += time.perf_counter() - t0
                            t0 = time.perf_counter()
                            parts.append(
                                optimise_targets(
                                    scorer,
                                    projs[layer],
                                    torch.from_numpy(codes[rows, p]),
                                    allowed[rows],
                                    steps=cfg.target_steps,
                                    lr=cfg.target_lr,
                                    norm_reg=cfg.norm_reg,
                                    clamp=cfg.clamp,
                                    margin=cfg.target_margin,
                                )
                            )
                            timings["targets"] += time.perf_counter() - t0
                            del scorer
                        res = TargetResult.cat(parts)
                        t0 = time.perf_counter()
                        use = res.success if cfg.drop_failures else torch.ones(n, dtype=torch.bool)
                        K = res.keys[use].double().T  # [d_in, n_used]
                        R = res.delta[use].double().T  # [d_out, n_used]
                        null_dim = None
                        if cfg.method == "memit":
                            dw = memit_solve(K, R, covs[site], cfg.lam, cfg.ridge)
                        else:
                            prev = [pk.grams[site] for pk in previous if site in pk.grams]
                            G = torch.stack(prev).sum(0) if prev else None
                            U = null_space_basis(covs[site], G, cfg.null_threshold)
                            null_dim = int(U.shape[1])
                            dw = alphaedit_solve(K, R, U, cfg.alpha)
                        timings["solve"] += time.perf_counter() - t0
                        deltas[site] = dw.float()
                        grams[site] = K @ K.T
                        work.add({site: deltas[site]}, trigger=cfg.trigger)
                        fit = (dw @ K - R).norm() / R.norm().clamp_min(1e-30)
                        failed = np.flatnonzero(~res.success.numpy())
                        failed_any[failed] = True
                        ratio = res.delta.norm(dim=1) / res.values.norm(dim=1).clamp_min(1e-6)
                        per_pos[str(p)] = {
                            "layer": layer,
                            "n_success": int(res.success.sum()),
                            "n_failed": int(failed.size),
                            "failed_requests": failed.tolist(),
                            "success_rate": float(res.success.double().mean()),
                            "already_met": int((res.steps == 0).logical_and(res.success).sum()),
                            "mean_steps": float(res.steps.double().mean()),
                            "logp_before": float(res.logp_before.mean()),
                            "logp_after": float(res.logp_after.mean()),
                            "delta_over_v": float(ratio.mean()),
                            "fit_residual": float(fit),
                            "delta_w_norm": float(dw.norm()),
                            "preserved_change": preserved_change(
                                dw, projs[layer].weight.detach().cpu(), covs[site]
                            ),
                            "null_dim": null_dim,
                            "n_used_in_solve": int(use.sum()),
                        }
                finally:
                    work.remove()
        finally:
            model.train(was_training)

        parts_s = ("pseudo", "locate", "keys", "targets", "solve")
        timings["edit_total"] = sum(timings[k] for k in parts_s)
        timings["covariance"] = cov_info.seconds
        ids = self.split.dataset.items.ids
        item_ids = [ids[i] if i < len(ids) else str(i) for i in items.tolist()]
        failed_items = np.unique(pseudo.item[failed_any]).tolist()
        manifest: dict[str, Any] = {
            "format": PACK_FORMAT,
            "version": PACK_VERSION,
            "pack_id": "",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "freshrec_version": freshrec.__version__,
            "arch": model.arch,
            "base": {
                "checkpoint_hash": self.base_hash,
                "tokenizer_fingerprint": self.fingerprint,
                "checkpoint_dir": str(self.checkpoint_dir),
                "data_hash": self.data_hash,
            },
            "items": {"index": items.tolist(), "id": item_ids},
            "sids": self.table.sids[items].tolist(),
            "sites": [{"position": p, "layer": layer} for p, layer in sites],
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
                "n_requests": n,
                "n_observed": 0 if observed is None else len(observed),
                "items_without_context": pseudo.no_context.tolist(),
                "mean_neighbor_sim": (
                    float(np.nanmean(pseudo.sim)) if np.isfinite(pseudo.sim).any() else None
                ),
                "positions": per_pos,
                "failures": {
                    "n_requests": int(failed_any.sum()),
                    "requests": np.flatnonzero(failed_any).tolist(),
                    "items": failed_items,
                    "in_solve": not cfg.drop_failures,
                },
                "covariance": cov_info.to_dict(),
            },
            "timings": timings,
        }
        pack = EditPack(
            deltas=deltas,
            manifest=manifest,
            grams=grams,
            requests={
                "user": pseudo.user.astype(np.int64),
                "pos": pseudo.pos.astype(np.int64),
                "item": pseudo.item.astype(np.int64),
            },
        )
        manifest["pack_id"] = EditPack.content_id(deltas, manifest)
        if cfg.measure_reliability:
            t0 = time.perf_counter()
            with self._packs_applied(previous):
                before = self._reliability(pack, [])
                after = self._reliability(pack, [pack])
            manifest["metrics"]["reliability"] = {**after, "before": before}
            timings["reliability"] = time.perf_counter() - t0
        return pack

    # ------------------------------------------------------------------ reliability
    @staticmethod
    def pack_requests(pack: EditPack) -> Requests:
        """The pack's edit requests (history from the split, target = the new item)."""
        r = pack.requests
        if not r:
            raise CheckpointError(f"edit pack {pack.pack_id} has no stored edit requests")
        return Requests(
            r["user"].astype(np.int32),
            r["pos"].astype(np.int32),
            r["item"].astype(np.int32),
            np.ones(len(r["user"]), dtype=bool),
        )

    def _reliability(self, pack: EditPack, extra: list[EditPack]) -> dict[str, float]:
        req = self.pack_requests(pack)
        cap = self.config.reliability_requests
        if cap is not None and len(req) > cap:  # a seeded sample, the same for every call
            idx = np.sort(np.random.default_rng(0).choice(len(req), cap, replace=False))
            req = req.subset(idx)
        hist = self.split.histories(req, self.model.config.max_history)
        ranker = GRRanker(
            self.model,
            self.catalog,
            scope="full",
            name="edited",
            beam_size=self.config.reliability_beam,
            batch_size=256,
        )
        hooks = hooks_for(self.model, extra).install() if extra else None
        try:
            top, _ = ranker.rank_histories(hist, np.asarray(req.user), top_k=10)
        finally:
            if hooks is not None:
                hooks.remove()
        hit = top == np.asarray(req.target)[:, None]
        return {
            "top1": float(hit[:, 0].mean()) if len(req) else float("nan"),
            "top10": float(hit.any(axis=1).mean()) if len(req) else float("nan"),
            "n": len(req),
            "beam": self.config.reliability_beam,
        }

    def evaluate_reliability(self, pack: EditPack) -> dict[str, float]:
        """Share of the pack's edit requests whose full SID is the top-1 / in the top-10 of the
        edited model over the full catalog (beam = config.reliability_beam; a seeded sample of
        config.reliability_requests requests). The model is evaluated as currently hooked, plus
        `pack` if it is not applied yet."""
        self._check_pack(pack)
        live = {tag for h in active_hooks(self.model) for tag in h.tags}
        return self._reliability(pack, [] if pack.pack_id in live else [pack])
