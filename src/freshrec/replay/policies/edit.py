"""`edit`: after each step, edit into the running weights (an `Editor` from `EDITORS`, default
GenRecEdit) every new item that was listed in the step or got real interactions in it.

Edit requests are the items' real interactions so far (the `max_real` most recent each), plus
pseudo-requests for items without any. Each step's items go into one pack; when an item is
edited again, every pack holding it is superseded: rolled back, and its other items are edited
again in the new pack. An item with `max_real` real requests already is not re-edited for more.
When the weights change (merge, fine-tune, retrain) every pack is dropped and the new items are
edited again on the new weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from freshrec.data.schema import Requests
from freshrec.edit.base import EDITORS
from freshrec.errors import ConfigError
from freshrec.model.edit_packs import EditPack, EditStack
from freshrec.replay.policies.base import UpdatePolicy, register_policy
from freshrec.replay.state import ReplayContext, ReplayState
from freshrec.replay.timeline import observed_requests, prefix_split


class EditSettings(BaseModel):
    """editor: a name in `freshrec.edit.EDITORS`; edit: its config overrides (GenRecEdit:
    `EditConfig` fields, e.g. {"lam": 300, "positions": [2]}; its diagnostic reliability
    check is off unless set); real: use real interactions as edit requests (else
    pseudo-requests only); max_real: real requests kept per item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    editor: str = "genrecedit"
    edit: dict[str, Any] = Field(default_factory=dict)
    real: bool = True
    max_real: int = Field(10, ge=1)


def _has_field(cls: Any, name: str) -> bool:
    return name in getattr(cls.config_class, "model_fields", {})


def latest_per_item(req: Requests, cap: int) -> Requests:
    """The `cap` most recent requests of each target item (later positions of a user first,
    then by user), in target order."""
    order = np.lexsort((-np.asarray(req.user), -np.asarray(req.pos), np.asarray(req.target)))
    tgt = np.asarray(req.target)[order]
    start = np.r_[True, tgt[1:] != tgt[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(tgt.size), 0))
    return req.subset(order[np.arange(tgt.size) - first < cap])


@register_policy("edit", settings=EditSettings)
class Edit(UpdatePolicy):
    settings: EditSettings

    def __init__(self, settings: BaseModel | None = None) -> None:
        super().__init__(settings)
        cls = EDITORS.get(self.settings.editor)
        if self.settings.real and not cls.accepts_observed:
            raise ConfigError(
                f"editor {self.settings.editor!r} cannot use real interactions "
                "(set real: false to edit with its own requests only)"
            )
        self.editor_cls = cls
        quiet = {"measure_reliability": False} if _has_field(cls, "measure_reliability") else {}
        self.edit_config = cls.make_config({**quiet, **self.settings.edit})

    def start(self, state: ReplayState, ctx: ReplayContext) -> None:
        used = np.zeros(ctx.split.dataset.n_items, dtype=np.int64)  # real requests per item
        state.info["edit"] = {"version": state.version, "packs": [], "used": used}

    def _changed(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> np.ndarray:
        """New items (to the running weights) listed by t1 that appeared in [t0, t1) or got
        real requests there while below `max_real` used requests."""
        info, seen = state.info["edit"], ctx.first_seen
        new = state.model_is_new(ctx) & (seen < t1)
        if info["version"] != state.version:  # new weights: every pack is gone
            info.update(version=state.version, packs=[], used=np.zeros_like(info["used"]))
            return np.flatnonzero(new)
        arrived = new & (seen >= t0)
        req = observed_requests(ctx.split, t0, t1, np.flatnonzero(new))
        targets = np.unique(np.asarray(req.target, dtype=np.int64))
        hungry = targets[info["used"][targets] < self.settings.max_real]
        return np.union1d(np.flatnonzero(arrived), hungry)

    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        info = state.info["edit"]
        changed = self._changed(state, ctx, t0, t1)
        if changed.size == 0:
            return {"edited": 0}
        packs: list[tuple[EditPack, np.ndarray]] = info["packs"]
        hit = [bool(np.isin(items, changed).any()) for _, items in packs]
        keep = [p for p, h in zip(packs, hit, strict=True) if not h]
        redo = np.union1d(
            changed,
            np.concatenate(
                [it for (_, it), h in zip(packs, hit, strict=True) if h] or [np.zeros(0, np.int64)]
            ),
        )
        state.drop_edits()
        stack = EditStack(state.model, state.base_dir)
        for pack, _ in keep:
            stack.push(pack)
        base_split = prefix_split(ctx.split, state.trained_until, is_new=state.model_is_new(ctx))
        editor = self.editor_cls(
            state.model,
            state.base_dir,
            base_split,
            state.table,
            ctx.emb,
            self.edit_config,
            ctx.work / "edit",
        )
        kwargs: dict[str, Any] = {}
        if self.settings.real:
            obs = latest_per_item(
                observed_requests(ctx.split, -np.inf, t1, redo), self.settings.max_real
            )
            kwargs["observed"] = obs
            counts = np.bincount(
                np.asarray(obs.target, dtype=np.int64), minlength=info["used"].size
            )
            info["used"][redo] = counts[redo]
        pack = editor.edit(redo, seed=ctx.seed, previous=stack.packs, **kwargs)
        stack.push(pack)
        state.stack = stack
        info["packs"] = [*keep, (pack, redo)]
        return {
            "edited": int(redo.size),
            "superseded": int(sum(hit)),
            "packs": len(stack),
            "observed": len(kwargs.get("observed", ())),
        }
