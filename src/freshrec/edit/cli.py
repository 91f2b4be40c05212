"""`freshrec edit`: inject the catalog's new items into a trained checkpoint (an editor from
`EDITORS`, default GenRecEdit) and save the edit pack (`freshrec recommend --edit PACK`
applies it). Register the command on the app with `register(app)`.

```
freshrec edit .freshrec/ml-latest-small/checkpoints/causal-s0   # all new items -> <work>/edits/
freshrec edit CKPT --items 187593,188301 --set edit.lam=300 --out packs/two  # two given ids
freshrec recommend --user 1 --checkpoint CKPT --edit packs/two
```

Overrides: `--set edit.<key>=<value>` sets a field of the editor's config class (GenRecEdit:
`EditConfig`, e.g. `edit.lam`, `edit.positions=[0,1]`, `edit.trigger=false`); every other
`--set` is a recipe override. `--editor NAME` picks another registered editor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from freshrec.cli_support import RecipeOpt, console, friendly
from freshrec.config import parse_value
from freshrec.errors import ConfigError, UnknownItemError

__all__ = [
    "edit",
    "register",
    "resolve_checkpoint",
    "resolve_items",
    "resolve_pack",
    "split_overrides",
]


SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="override: edit.<key>=v (EditConfig, e.g. edit.lam=1000) or a recipe key "
        "(e.g. train.seed=1); repeatable",
    ),
]


# ----------------------------------------------------------------------------------- helpers


def split_overrides(overrides: Sequence[str] | None) -> tuple[list[str], dict[str, Any]]:
    """(recipe overrides, EditConfig dict) from `--set` values; `edit.<key>=<value>` goes to
    the edit config (values parsed as YAML), everything else to the recipe."""
    recipe: list[str] = []
    edit_cfg: dict[str, Any] = {}
    for assignment in overrides or []:
        key, sep, value = assignment.partition("=")
        if sep and key.strip().startswith("edit."):
            name = key.strip()[len("edit.") :]
            if not name or "." in name:
                raise ConfigError(f"override {assignment!r}: expected edit.<key>=<value>")
            edit_cfg[name] = parse_value(value)
        else:
            recipe.append(assignment)
    return recipe, edit_cfg


def resolve_checkpoint(path: str | Path) -> Path:
    """`freshrec.model.checkpoint.resolve_checkpoint` (a checkpoint or a run folder's best/)."""
    from freshrec.model.checkpoint import resolve_checkpoint as resolve

    return resolve(path)


def resolve_items(split: Any, items: Sequence[str] | None) -> np.ndarray:
    """int64 item indices to edit. None / ["new"]: every catalog item with `split.is_new`;
    otherwise external item ids (repeatable and/or comma-separated). Unknown ids raise
    UnknownItemError; warm ids (with training interactions) raise ConfigError."""
    is_new = np.asarray(split.is_new, dtype=bool)
    tokens = [t.strip() for raw in items or [] for t in str(raw).split(",") if t.strip()]
    if not tokens or tokens == ["new"]:
        idx = np.flatnonzero(is_new).astype(np.int64)
        if idx.size == 0:
            raise ConfigError("the catalog has no new items (every item has training data)")
        return idx
    if "new" in tokens:
        raise ConfigError("--items takes either 'new' or item ids, not both")
    index = split.dataset.items.index_of()
    unknown = [t for t in tokens if t not in index]
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UnknownItemError(
            f"unknown item id(s) {shown} ({len(unknown)} of {len(tokens)}; the catalog has "
            f"{len(index)} items)"
        )
    idx = np.array([index[t] for t in dict.fromkeys(tokens)], dtype=np.int64)
    warm = [t for t, i in zip(dict.fromkeys(tokens), idx.tolist(), strict=True) if not is_new[i]]
    if warm:
        shown = ", ".join(repr(t) for t in warm[:5]) + (" ..." if len(warm) > 5 else "")
        raise ConfigError(
            f"item id(s) {shown} have training interactions (warm items); only new items can "
            "be injected by an edit"
        )
    return idx


def resolve_pack(recipe: Any, pack: str | Path) -> Path:
    """A pack folder: `pack` as a path, else a pack id under `<work>/edits/`."""
    from freshrec import pipeline
    from freshrec.model.edit_packs import pack_folder

    return pack_folder(pack, pipeline.workspace(recipe).edits())


def _reliability_cell(rel: dict[str, Any] | None) -> str:
    if not rel:
        return "not measured"
    before = rel.get("before", {})
    return (
        f"top-1 {before.get('top1', float('nan')):.1%} -> {rel['top1']:.1%}, "
        f"top-10 {before.get('top10', float('nan')):.1%} -> {rel['top10']:.1%} "
        f"({rel['n']} edit requests, beam {rel['beam']})"
    )


# ----------------------------------------------------------------------------------- commands
@friendly
def edit(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder (…/best or a run folder)")],
    items: Annotated[
        list[str] | None,
        typer.Option(
            "--items",
            "-i",
            help="'new' (default: every new catalog item) or external item ids "
            "(repeatable or comma-separated)",
        ),
    ] = None,
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="pack folder (default: <work>/edits/<pack_id>)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="pseudo-request sampling seed (default edit.seed)")
    ] = None,
    editor: Annotated[
        str, typer.Option(help="editing algorithm, a name registered in freshrec.edit.EDITORS")
    ] = "genrecedit",
) -> None:
    """Edit CHECKPOINT so that it recommends new items (default GenRecEdit), without retraining.

    The base weights are not modified: the edit is saved as a pack (deltas + manifest) that
    `freshrec recommend --edit PACK` applies on top of the checkpoint."""
    from freshrec import pipeline
    from freshrec.config import load_recipe
    from freshrec.edit import EDITORS
    from freshrec.model.checkpoint import load_checkpoint

    t_all = time.perf_counter()
    editor_cls = EDITORS.get(editor)
    recipe_sets, edit_sets = split_overrides(set_)
    r = load_recipe(recipe, recipe_sets)
    cfg = editor_cls.make_config(edit_sets)
    folder = resolve_checkpoint(checkpoint)
    split = pipeline.load_prepared(r)
    tok, table = pipeline.load_tokenized(r)
    model = load_checkpoint(folder, expect_fingerprint=tok.fingerprint)
    idx = resolve_items(split, items)
    emb = pipeline.item_embeddings(r, split)
    ws = pipeline.workspace(r)
    algorithm = editor_cls(model, folder, split, table, emb, cfg, ws)
    console.print(f"editing {len(idx)} item(s) into {folder} ({model.arch}, {editor}) ...")
    pack = algorithm.edit(idx, seed=seed)
    dest = pack.save(out if out is not None else ws.edits() / pack.pack_id)

    console.print(_summary(pack, dest, time.perf_counter() - t_all))


def _summary(pack: Any, dest: Path, total_s: float) -> Table:
    """The pack's summary table; fields an editor's manifest lacks show as '-'."""
    m, t, man = pack.metrics, pack.timings, pack.manifest
    out = Table(title=f"edit pack {pack.pack_id}", show_header=False)
    out.add_row("saved to", str(dest))
    out.add_row(
        "items",
        f"{m.get('n_items', len(pack.items))} "
        f"({len(m.get('items_without_context', []))} no context)",
    )
    out.add_row("edit requests", str(m.get("n_requests", "-")))
    sites = ", ".join(f"p{p}->L{layer}" for p, layer in pack.sites)
    located = man.get("localisation", {}).get("method", "-")
    out.add_row("positions -> layers", f"{sites} ({located})")
    lam = man.get("lam")
    out.add_row(
        "method / lambda", f"{man.get('method', '-')} / {'-' if lam is None else f'{lam:g}'}"
    )
    out.add_row("reliability", _reliability_cell(m.get("reliability")))
    cov = m.get("covariance", {})
    cached = " (one-time, cached for next edits)" if cov.get("computed") else " (cached)"
    out.add_row(
        "seconds",
        f"edit {t.get('edit_total', float('nan')):.1f}, "
        f"covariance {t.get('covariance', 0.0):.1f}{cached}, "
        f"reliability check {t.get('reliability', 0.0):.1f}, total {total_s:.1f}",
    )
    return out


def register(app: typer.Typer) -> None:
    """Add `freshrec edit` to `app`."""
    app.command("edit")(edit)
