"""In-process pieces of the service: new items' texts, micro-batcher, catalog store
(transactions, WAL), Prometheus rendering, config and the `serve` CLI command."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from freshrec.errors import ConfigError
from freshrec.serve.batching import BatcherClosedError, MicroBatcher
from freshrec.serve.catalog import CatalogStore, ItemRow
from freshrec.serve.cli import register
from freshrec.serve.config import API_KEY_ENV, ServeConfig
from freshrec.serve.inputs import NewItem, ServeError, new_item_texts
from freshrec.serve.metrics import Metrics


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
def row(item_id: str, idx: int, sid=(1, 2, 3, 0)) -> ItemRow:
    emb = np.arange(4, dtype=np.float32).tobytes()
    return ItemRow(item_id, idx, f"t{item_id}", f"text {item_id}", sid, emb, 1.0, "pending")


def test_catalog_store_is_wal_and_transactional(tmp_path: Path):
    store = CatalogStore(f"sqlite:///{tmp_path / 'sub' / 'c.db'}")
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    store.add_items([row("a", 10), row("b", 11)])
    with pytest.raises(sa.exc.IntegrityError):
        store.add_items([row("c", 12), row("a", 13)])  # one duplicate: nothing is written
    assert [r.item_id for r in store.items()] == ["a", "b"]
    assert store.item("a") == row("a", 10)
    assert np.frombuffer(store.item("a").embedding, np.float32).tolist() == [0, 1, 2, 3]

    p1 = store.record_pack("p1", "p1", ["a"], ["b"], "no context", now=5.0)
    assert p1.seq == 1
    assert store.item("a").status == "live"
    assert store.item("a").live_at == 5.0
    assert store.item("b").status == "failed"
    assert store.item("b").error == "no context"
    assert store.count_by_status() == {"live": 1, "failed": 1}
    assert store.rollback_pack(p1.seq, "p1") == ["a"]
    assert store.item("a").status == "rolled_back"
    assert store.pack("p1").status == "rolled_back"

    store.add_items([row("c", 12)])
    p2 = store.record_pack("p2", "p2", ["c"])
    assert store.mark_pack_lost(p2.seq, "p2", "missing folder") == ["c"]
    assert store.item("c").status == "pending"
    assert store.item("c").pack_id is None
    p2b = store.record_pack("p2", "p2", ["c"])  # re-edited: a new row, same pack id
    assert store.pack("p2").seq == p2b.seq
    assert [r.status for r in store.packs()] == ["rolled_back", "lost", "applied"]
    assert [r.pack_id for r in store.packs("applied")] == ["p2"]
    store.close()
    # reopened: everything is still there
    again = CatalogStore(f"sqlite:///{tmp_path / 'sub' / 'c.db'}")
    assert [r.item_id for r in again.items()] == ["a", "b", "c"]
    again.close()


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
