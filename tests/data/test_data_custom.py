"""The bring-your-own loader and the `load_dataset` dispatcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.data import load_custom, load_dataset
from freshrec.errors import ConfigError


def test_loads_fixture(custom_dir: Path) -> None:
    ds = load_custom(custom_dir)
    assert ds.name == "custom"
    assert ds.items.ids == ["2", "3", "4", "10"]  # numeric ids in numeric order
    assert ds.user_ids == ["1", "2", "10"]
    assert ds.meta["dropped_items_without_interactions"] == 1
    assert ds.items.texts == [
        "Dune. Categories: Books, Science Fiction. Description: A desert planet and its spice.",
        "Pride and Prejudice. Categories: Books, Classics.",
        "Neuromancer. Description: The sky above the port.",
        "The Hobbit. Categories: Books, Fantasy. Description: Bilbo Baggins, a hobbit, joins a "
        "quest.",
    ]


def test_mixed_timestamp_formats(custom_dir: Path) -> None:
    ds = load_custom(custom_dir)
    inter = ds.interactions
    got = {
        (ds.user_ids[u], ds.items.ids[i]): int(t)
        for u, i, t in zip(inter.user, inter.item, inter.ts, strict=True)
    }
    assert got[("1", "10")] == 1_700_000_000  # unix seconds
    assert got[("1", "2")] == 1_700_037_000  # 2023-11-15T08:30:00Z
    assert got[("2", "4")] == 1_700_092_800  # 2023-11-16 (date only, UTC)
    assert got[("2", "10")] == 1_700_211_600  # 2023-11-17 09:00
    assert got[("10", "3")] == 1_700_035_200  # 10:00+02:00 = 08:00Z
    assert got[("10", "4")] == 1_700_300_000  # decimal seconds floored
    assert np.array_equal(np.lexsort((inter.item, inter.ts, inter.user)), np.arange(len(inter)))


def test_keep_unused_items(custom_dir: Path) -> None:
    ds = load_custom(custom_dir, keep_unused_items=True)
    assert ds.items.ids == ["2", "3", "4", "5", "10"]
    assert ds.meta["dropped_items_without_interactions"] == 0


def test_explicit_text_column(custom_dir: Path) -> None:
    (custom_dir / "items.csv").write_text(
        "item_id,title,text\n"
        "10,The Hobbit,A hobbit's unexpected journey.\n"
        "2,Dune,Spice and sandworms.\n"
        "3,Pride and Prejudice,Manners and marriage.\n"
        "4,Neuromancer,Cyberpunk classic.\n",
        encoding="utf-8",
    )
    ds = load_custom(custom_dir, name="books")
    assert ds.name == "books"
    assert ds.items.texts[ds.items.ids.index("2")] == "Spice and sandworms."


def test_load_dataset_dispatch(custom_dir: Path) -> None:
    assert load_dataset("custom", custom_dir, name="x").name == "x"


def test_unknown_kind(custom_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset kind 'netflix'; choose one of amazon"):
        load_dataset("netflix", custom_dir)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'.*nowhere' does not exist"):
        load_dataset("movielens", tmp_path / "nowhere")
    (tmp_path / "file.csv").write_text("x\n")
    with pytest.raises(ConfigError, match=r"is a file, not a folder"):
        load_dataset("custom", tmp_path / "file.csv")


def test_unknown_option(custom_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"custom loader: .*'colour'"):
        load_dataset("custom", custom_dir, colour="red")
