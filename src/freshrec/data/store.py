"""Save and load a prepared Split as one folder, written atomically.

Layout: items.parquet (id, title, text), users.parquet (id), interactions.parquet (user,
item, ts), split.npz (CSR sequences, train_len, is_new, valid_*/test_* request arrays and
`meta__*` array-valued dataset meta), meta.json (format, scheme, cutoffs, skipped, dataset
meta, sizes and a sha256 content hash checked on load).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

from freshrec.atomic import atomic_dir, write_json
from freshrec.data.schema import Dataset, Interactions, Items, Requests, Split
from freshrec.errors import DataError
from freshrec.manifest import read_manifest

FORMAT = "freshrec.split/1"
FILES = ("items.parquet", "users.parquet", "interactions.parquet", "split.npz", "meta.json")
_SPLIT_ARRAYS = ("seq_offsets", "seq_items", "seq_ts", "train_len", "is_new")
_REQ_FIELDS = ("user", "pos", "target", "cold")


def _arrays(split: Split) -> dict[str, np.ndarray]:
    out = {name: np.asarray(getattr(split, name)) for name in _SPLIT_ARRAYS}
    for part in ("valid", "test"):
        req = getattr(split, part)
        for f in _REQ_FIELDS:
            out[f"{part}_{f}"] = np.asarray(getattr(req, f))
    inter = split.dataset.interactions
    out.update(inter_user=inter.user, inter_item=inter.item, inter_ts=inter.ts)
    for key, value in split.dataset.meta.items():
        if isinstance(value, np.ndarray):
            out[f"meta__{key}"] = value
    return out


def content_hash(split: Split) -> str:
    """sha256 over the catalog, users, interactions and every split array."""
    h = hashlib.sha256()
    ds = split.dataset
    for strings in (ds.items.ids, ds.items.titles, ds.items.texts, ds.user_ids):
        h.update(json.dumps(strings, ensure_ascii=False).encode("utf-8"))
    for name, arr in sorted(_arrays(split).items()):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update(json.dumps([split.scheme, split.cutoffs, split.skipped], sort_keys=True).encode())
    return h.hexdigest()


def _plain(value: object) -> object:
    """JSON-able copy of a meta value (numpy scalars -> Python, tuples -> lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def save_split(split: Split, folder: str | Path) -> Path:
    """Write `split` to `folder` (replaced atomically). Returns the folder."""
    folder = Path(folder)
    ds = split.dataset
    with atomic_dir(folder) as tmp:
        pl.DataFrame(
            {"id": ds.items.ids, "title": ds.items.titles, "text": ds.items.texts},
            schema={"id": pl.String, "title": pl.String, "text": pl.String},
        ).write_parquet(tmp / "items.parquet")
        pl.DataFrame({"id": ds.user_ids}, schema={"id": pl.String}).write_parquet(
            tmp / "users.parquet"
        )
        inter = ds.interactions
        pl.DataFrame({"user": inter.user, "item": inter.item, "ts": inter.ts}).write_parquet(
            tmp / "interactions.parquet"
        )
        arrays = {k: v for k, v in _arrays(split).items() if not k.startswith("inter_")}
        np.savez(tmp / "split.npz", **arrays)
        meta = {
            "format": FORMAT,
            "name": ds.name,
            "scheme": split.scheme,
            "cutoffs": list(split.cutoffs) if split.cutoffs is not None else None,
            "skipped": _plain(split.skipped),
            "dataset_meta": {
                k: _plain(v) for k, v in ds.meta.items() if not isinstance(v, np.ndarray)
            },
            "n_users": ds.n_users,
            "n_items": ds.n_items,
            "n_interactions": len(inter),
            "content_hash": content_hash(split),
        }
        write_json(tmp / "meta.json", meta)
    return folder


def load_split(folder: str | Path) -> Split:
    """Load a folder written by `save_split`; DataError if missing, incomplete or corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("prepared data folder not found; prepare the dataset first", file=folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"prepared data folder is incomplete: missing {', '.join(missing)}; prepare again",
            file=folder,
        )
    meta = read_manifest(
        folder / "meta.json",
        "prepared-data",
        format=FORMAT,
        version=None,
        hint="prepare again",
        error=DataError,
    )
    try:
        items = pl.read_parquet(folder / "items.parquet")
        users = pl.read_parquet(folder / "users.parquet")
        inter = pl.read_parquet(folder / "interactions.parquet")
        with np.load(folder / "split.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as e:
        raise DataError(f"cannot read prepared data: {e}; prepare again", file=folder) from None
    try:
        ds_meta = dict(meta["dataset_meta"])
        ds_meta.update({k[6:]: v for k, v in arrays.items() if k.startswith("meta__")})
        dataset = Dataset(
            name=meta["name"],
            user_ids=users["id"].to_list(),
            items=Items(items["id"].to_list(), items["title"].to_list(), items["text"].to_list()),
            interactions=Interactions(
                user=inter["user"].to_numpy().astype(np.int32),
                item=inter["item"].to_numpy().astype(np.int32),
                ts=inter["ts"].to_numpy().astype(np.int64),
            ),
            meta=ds_meta,
        )
        req = {
            part: Requests(*(arrays[f"{part}_{f}"] for f in _REQ_FIELDS))
            for part in ("valid", "test")
        }
        split = Split(
            dataset=dataset,
            **{name: arrays[name] for name in _SPLIT_ARRAYS},
            valid=req["valid"],
            test=req["test"],
            scheme=meta["scheme"],
            cutoffs=tuple(meta["cutoffs"]) if meta["cutoffs"] is not None else None,
            skipped=dict(meta["skipped"]),
        )
    except KeyError as e:
        raise DataError(f"prepared data lacks {e}; prepare again", file=folder) from None
    if content_hash(split) != meta.get("content_hash"):
        raise DataError(
            "prepared data does not match its content hash (modified or corrupt); prepare again",
            file=folder,
        )
    return split
