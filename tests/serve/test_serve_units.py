"""In-process pieces of the service: new items' texts, micro-batcher, catalog store
(transactions, WAL), Prometheus rendering, config and the `serve` CLI command."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
import typer
from serve_helpers import check_catalog_store
from typer.testing import CliRunner

from freshrec.errors import ConfigError
from freshrec.model.edit_packs import EditPack, combined_deltas
from freshrec.serve.batching import BatcherClosedError, MicroBatcher
from freshrec.serve.bodies import ItemsIn, RecommendIn
from freshrec.serve.catalog import CatalogStore
from freshrec.serve.cli import register
from freshrec.serve.compaction import fold_packs
from freshrec.serve.config import API_KEY_ENV, ServeConfig
from freshrec.serve.inputs import NewItem, ServeError, new_item_texts
from freshrec.serve.metrics import MAX_SERIES, Metrics
from freshrec.serve.state import PackStore, WriterLock, check_layout


# ------------------------------------------------------------------------------ new items
def test_new_item_texts():
    items = [
        NewItem("a", "Dune", categories=("Sci-Fi", "Classic")),
        NewItem("b", "ignored", text="  Given \n  text "),
    ]
    assert new_item_texts(items, "Categories") == [
        "Dune. Categories: Sci-Fi, Classic.",
        "Given text",
    ]
    with pytest.raises(ServeError, match="empty text for items: 'c'"):
        new_item_texts([NewItem("c", "x", text="  ")], "Genres")


# ------------------------------------------------------------------------------ batching
def test_micro_batcher_groups_concurrent_calls():
    sizes: list[int] = []

    def fn(qs: list[int]) -> list[int]:
        sizes.append(len(qs))
        time.sleep(0.05)
        return [q * 2 for q in qs]

    b = MicroBatcher(fn, max_batch=8, window_ms=100, on_batch=lambda n, s: None).start()
    out: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda q=q: out.__setitem__(q, b.submit(q))) for q in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert out == {q: 2 * q for q in range(12)}
    assert sum(sizes) == 12
    assert max(sizes) <= 8
    assert len(sizes) <= 4  # 12 calls in a 100 ms window: 2 batches, a few more at worst
    with pytest.raises(BatcherClosedError):
        b.submit(1)


def test_micro_batcher_off_and_errors():
    sizes: list[int] = []

    def fn(qs: list[int]) -> list[int]:
        sizes.append(len(qs))
        if qs[0] < 0:
            raise ValueError("negative")
        return qs

    off = MicroBatcher(fn, enabled=False)
    assert [off.submit(q) for q in range(3)] == [0, 1, 2]
    assert sizes == [1, 1, 1]
    on = MicroBatcher(fn, window_ms=0).start()
    with pytest.raises(ValueError, match="negative"):
        on.submit(-1)
    assert on.submit(5) == 5  # the worker survives a failing batch
    on.close()


# ------------------------------------------------------------------------------ catalog
def test_catalog_store_is_wal_and_transactional(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'sub' / 'c.db'}"
    store = CatalogStore(url)
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    store.close()
    check_catalog_store(url)  # test_serve_postgres.py runs it on PostgreSQL


def test_catalog_store_meta_is_write_once(tmp_path: Path):
    store = CatalogStore(f"sqlite:///{tmp_path / 'c.db'}")
    assert store.meta() == {}
    store.set_meta({"tokenizer_fingerprint": "a", "checkpoint_hash": "b"})
    store.set_meta({"tokenizer_fingerprint": "z", "data_hash": "c"})
    assert store.meta() == {"tokenizer_fingerprint": "a", "checkpoint_hash": "b", "data_hash": "c"}
    store.close()


def test_catalog_store_bad_url():
    with pytest.raises(ConfigError, match="cannot open the catalog database"):
        CatalogStore("nosuchdialect://x")


# ------------------------------------------------------------------------------ metrics
def test_metrics_render():
    m = Metrics()
    m.declare("c_total", "counter", "a counter")
    m.declare("h_seconds", "histogram", "a histogram", (0.1, 1.0))
    m.inc("c_total", labels={"path": '/a"b'})
    m.inc("c_total", 2, labels={"path": '/a"b'})
    m.observe("h_seconds", 0.5)
    m.observe("h_seconds", 5.0)
    text = m.render()
    assert '# TYPE c_total counter\nc_total{path="/a\\"b"} 3\n' in text
    assert 'h_seconds_bucket{le="0.1"} 0' in text
    assert 'h_seconds_bucket{le="1"} 1' in text
    assert 'h_seconds_bucket{le="+Inf"} 2' in text
    assert "h_seconds_sum 5.5" in text
    assert "h_seconds_count 2" in text


# ------------------------------------------------------------------------------ config / CLI
def test_api_key_sources(tmp_path: Path, monkeypatch):
    cfg = ServeConfig(checkpoint=tmp_path)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match="no API key"):
        cfg.api_key()
    key_file = tmp_path / "key"
    key_file.write_text("file-key-0123456789\nignored\n")
    with_file = ServeConfig(checkpoint=tmp_path, api_key_file=key_file)
    assert with_file.api_key() == "file-key-0123456789"
    monkeypatch.setenv(API_KEY_ENV, "env-key-0123456789")
    assert with_file.api_key() == "env-key-0123456789"
    monkeypatch.setenv(API_KEY_ENV, "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        cfg.api_key()
    for weak in ("a" * 16, "abab" * 8, "0000111122223333"):
        monkeypatch.setenv(API_KEY_ENV, weak)
        with pytest.raises(ConfigError, match="distinct characters"):
            cfg.api_key()
    # the key never becomes part of the (loggable) config
    assert "env-key" not in with_file.model_dump_json()
    assert "file-key" not in with_file.model_dump_json()


def test_config_validation_and_paths(tmp_path: Path):
    with pytest.raises(ConfigError, match="max_batch"):
        ServeConfig.from_dict({"checkpoint": str(tmp_path), "max_batch": 0})
    with pytest.raises(ConfigError, match="nonsense"):
        ServeConfig.from_dict({"checkpoint": str(tmp_path), "nonsense": 1})
    with pytest.raises(ConfigError, match="mode"):
        ServeConfig.from_dict({"checkpoint": str(tmp_path), "mode": "greedy"})
    cfg = ServeConfig(checkpoint=tmp_path, work_dir=tmp_path / "w")
    assert cfg.mode == "fresh"
    paths = cfg.paths()
    assert paths.state_dir == tmp_path / "w" / "ml-latest-small" / "serve"
    assert paths.edits_dir == paths.state_dir / "edits"
    assert paths.db_url == f"sqlite:///{(paths.state_dir / 'catalog.db').resolve()}"
    assert cfg.edit_config().measure_reliability is False
    assert cfg.threads() >= 1
    assert ServeConfig(checkpoint=tmp_path, torch_threads=3).threads() == 3
    with pytest.raises(ConfigError, match="invalid edit config"):
        ServeConfig(checkpoint=tmp_path, edit={"lam": -1}).edit_config()


def test_cli_serve_command_reports_config_errors(tmp_path: Path, monkeypatch):
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """freshrec."""

    register(app)
    runner = CliRunner()
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    res = runner.invoke(app, ["serve", "--checkpoint", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "no API key" in res.output
    res = runner.invoke(app, ["serve", "--help"])
    assert res.exit_code == 0
    assert "--batch-window-ms" in res.output
    monkeypatch.setenv(API_KEY_ENV, "env-key-0123456789")
    res = runner.invoke(app, ["serve", "--checkpoint", str(tmp_path / "none"), "--edit", "x"])
    assert res.exit_code == 2
    assert "must look like key=value" in res.output


# ------------------------------------------------------------------------------ state layout
def test_layout_refuses_a_pack_folder_that_overlaps(tmp_path: Path):
    state, ckpt = tmp_path / "state", tmp_path / "ckpt"
    db = state / "catalog.db"
    check_layout(state / "edits", state, db, [ckpt])  # the default layout
    check_layout(tmp_path / "packs", state, db, [ckpt])
    for edits, why in (
        (state, "it is the state folder"),
        (tmp_path, "it is a parent of the state folder"),
        (ckpt / "sub", "it overlaps"),
    ):
        with pytest.raises(ConfigError, match=why):
            check_layout(edits, state, db, [ckpt])
    with pytest.raises(ConfigError, match="it holds the catalog database"):
        check_layout(tmp_path / "x", state, tmp_path / "x" / "db" / "c.db", [])


def test_pack_store_owns_only_what_it_writes(tmp_path: Path):
    foreign = tmp_path / "shared"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"holds files the service did not write \(notes.txt\)"):
        PackStore(foreign).claim("s1")
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match=r"no \.freshrec-packs"):
        PackStore(tmp_path / "new").check("s1")  # a replica never creates it

    # a folder of an older version (packs only) is claimed; another catalog's is refused
    root = tmp_path / "edits"
    for name in ("0123456789abcdef", "fedcba9876543210", ".0123456789abcdef.x1.tmp"):
        (root / name).mkdir(parents=True)
    store = PackStore(root)
    store.claim("s1")
    store.claim("s1")
    store.check("s1")
    with pytest.raises(ConfigError, match="belongs to another catalog"):
        store.claim("s2")
    (root / "README").write_text("an operator's note")  # later foreign files are left alone
    assert store.sweep(keep={"0123456789abcdef"}) == [
        ".0123456789abcdef.x1.tmp",
        "fedcba9876543210",
    ]
    assert sorted(p.name for p in root.iterdir()) == [
        ".freshrec-packs",
        "0123456789abcdef",
        "README",
    ]
    moved = store.quarantine(root / "0123456789abcdef", "torn deltas")
    assert moved is not None
    assert moved.parent == root / "quarantine"
    assert store.quarantined() == [moved.name]
    assert "torn deltas" in moved.with_name(moved.name + ".reason.txt").read_text()
    assert store.sweep(keep=set()) == []  # quarantine is never swept
    assert store.quarantine(root / "ffffffffffffffff", "missing") is None


def test_writer_lock_is_exclusive(tmp_path: Path):
    db = tmp_path / "catalog.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    first = WriterLock(engine, db)
    first.acquire()
    second = WriterLock(engine, db)
    with pytest.raises(
        ConfigError, match=rf"in use by another freshrec service \(pid {os.getpid()}"
    ):
        second.acquire()
    first.release()
    second.acquire()  # free again (a killed process releases it too: it is a flock)
    second.release()
    engine.dispose()


# ------------------------------------------------------------------------------ compaction
def fake_pack(seed: int, items: list[int], gate: str = "prefix") -> EditPack:
    g = torch.Generator().manual_seed(seed)
    sites = [(0, 1), (1, 1)] if seed % 2 else [(0, 1), (2, 0)]
    manifest = {
        "format": "freshrec-edit-pack",
        "version": 1,
        "base": {"checkpoint_hash": "c" * 64, "tokenizer_fingerprint": "t" * 16},
        "items": {"index": items, "id": [f"i{i}" for i in items]},
        "sids": [[i, 1, 2, 0] for i in items],
        "sites": [{"position": p, "layer": layer} for p, layer in sites],
        "method": "alphaedit",
        "trigger": True,
        "gate": gate,
        "metrics": {"items_without_context": items[:1]},
    }
    pack = EditPack(
        deltas={s: torch.randn(6, 4, generator=g) for s in sites},
        manifest=manifest,
        grams={s: torch.randn(4, 4, generator=g).double() for s in sites},
        requests={k: np.arange(3, dtype=np.int64) + seed for k in ("user", "pos", "item")},
    )
    manifest["pack_id"] = EditPack.content_id(pack.deltas, manifest)
    return pack


def test_fold_packs_sums_what_the_stack_sums(tmp_path: Path):
    packs = [fake_pack(1, [10, 11]), fake_pack(2, [12]), fake_pack(3, [13, 14])]
    folded = fold_packs(packs)
    gated, ungated = combined_deltas(packs)
    assert set(folded.deltas) == set(gated)
    assert not ungated
    for site, d in gated.items():
        torch.testing.assert_close(folded.deltas[site], d)
        want = sum(p.grams[site] for p in packs if site in p.grams)
        torch.testing.assert_close(folded.grams[site], want)
    assert folded.items.tolist() == [10, 11, 12, 13, 14]
    np.testing.assert_array_equal(folded.sids, np.concatenate([p.sids for p in packs]))
    assert folded.gate == "prefix"
    assert folded.trigger
    assert folded.requests["user"].tolist() == [1, 2, 3, 2, 3, 4, 3, 4, 5]
    assert folded.manifest["config"]["folded"] == [p.pack_id for p in packs]
    again = EditPack.load(folded.save(tmp_path / folded.pack_id))
    assert again.pack_id == folded.pack_id
    assert fold_packs([*packs[:2], fake_pack(5, [15], gate="none")]).gate == "none"
    untriggered = fake_pack(7, [16])
    untriggered.manifest["trigger"] = False
    with pytest.raises(ConfigError, match="cannot be folded"):
        fold_packs([packs[0], untriggered])
    with pytest.raises(ConfigError, match="at least two"):
        fold_packs(packs[:1])


# ------------------------------------------------------------------------------ inputs
def test_bodies_do_not_coerce():
    from pydantic import ValidationError

    assert RecommendIn.model_validate({"history": ["1", 2]}).history == ["1", "2"]
    for bad, where in (
        ({"history": [True]}, "history[0]: item ids are strings (or integers), got a boolean"),
        ({"history": [1.5]}, "got float"),
        ({"history": ["1"], "top_k": "5"}, "top_k"),
        ({"history": ["1"], "exclude_seen": "yes"}, "exclude_seen"),
        ({"history": ["1"], "user": False}, "user ids are strings"),
    ):
        with pytest.raises(ValidationError, match=re.escape(where)):
            RecommendIn.model_validate(bad)
    with pytest.raises(ValidationError, match="got a boolean"):
        ItemsIn.model_validate({"items": [{"item_id": True, "title": "t"}]})


def test_metrics_label_sets_are_bounded():
    m = Metrics()
    m.declare("c_total", "counter", "a counter")
    for i in range(MAX_SERIES + 50):
        m.inc("c_total", labels={"k": str(i)})
    text = m.render()
    assert text.count("c_total{") == MAX_SERIES + 1
    assert 'c_total{series="overflow"} 50' in text


def test_cli_options_become_the_serve_config(tmp_path: Path):
    """`freshrec serve` options over a config file: given options win, the others keep the
    file's values, replicas and load bounds are reachable from the command line."""
    from freshrec.serve.cli import serve_config

    cfg_file = tmp_path / "serve.json"
    cfg_file.write_text(json.dumps({"checkpoint": str(tmp_path), "port": 9000, "beam_size": 7}))
    options = {"port": None, "read_only": True, "follow_interval_s": 0.5, "mode": "beam",
               "max_inflight_recommend": 3, "db_url": "postgresql+psycopg://u@h/db"}  # fmt: skip
    cfg = serve_config(options, cfg_file, "cpu", ["train.epochs=1"], ["lam=300"])
    assert (cfg.port, cfg.beam_size) == (9000, 7)  # from the file
    assert cfg.read_only is True
    assert cfg.follow_interval_s == 0.5
    assert cfg.mode == "beam"
    assert cfg.max_inflight_recommend == 3
    assert cfg.db_url == "postgresql+psycopg://u@h/db"
    assert cfg.overrides == ["train.epochs=1"]
    assert cfg.edit["lam"] == 300
    with pytest.raises(ConfigError, match="--checkpoint is required"):
        serve_config({}, None, "cpu", [], [])
    with pytest.raises(ConfigError, match="follow_interval_s"):
        serve_config({"checkpoint": tmp_path, "follow_interval_s": 0}, None, "cpu", [], [])
