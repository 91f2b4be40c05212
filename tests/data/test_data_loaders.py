"""The dataset-loader registry: a loader defined here (one class + its decorator) is usable by
`data.kind` through `load_dataset`, recipes and `pipeline.prepare`, its options validated by
its own class; unknown kinds, unknown options and duplicate kinds are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from freshrec import pipeline
from freshrec.config import load_recipe
from freshrec.data import (
    DATASET_LOADERS,
    Dataset,
    DatasetLoader,
    load_dataset,
    loader_for,
    register_loader,
)
from freshrec.data.loaders import AmazonLoader, CustomLoader, MovieLensLoader
from freshrec.data.schema import Interactions, Items
from freshrec.errors import ConfigError

CAT = "Video_Games"


class EventsLoader(DatasetLoader):
    """Test loader: `events.json` = {"titles": {item: title}, "events": [[user, item, ts]]}."""

    min_ts: int = Field(0, ge=0, description="drop events before this unix second")

    def load(self, folder: Path) -> Dataset:
        raw = json.loads((folder / "events.json").read_text(encoding="utf-8"))
        events = sorted((u, i, t) for u, i, t in raw["events"] if t >= self.min_ts)
        users = sorted({u for u, _, _ in events})
        items = sorted({i for _, i, _ in events})
        u_idx, i_idx = {u: k for k, u in enumerate(users)}, {i: k for k, i in enumerate(items)}
        rows = sorted((u_idx[u], t, i_idx[i]) for u, i, t in events)
        titles = [raw["titles"][i] for i in items]
        return Dataset(
            name=folder.name,
            user_ids=users,
            items=Items(ids=items, titles=titles, texts=[f"{t}." for t in titles]),
            interactions=Interactions(
                user=np.array([r[0] for r in rows], dtype=np.int32),
                item=np.array([r[2] for r in rows], dtype=np.int32),
                ts=np.array([r[1] for r in rows], dtype=np.int64),
            ),
        )


@pytest.fixture
def events() -> Iterator[type[EventsLoader]]:
    yield register_loader("events")(EventsLoader)
    DATASET_LOADERS.remove("events")


@pytest.fixture
def events_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    titles = {f"i{k}": f"Item {k}" for k in range(6)}
    evts = [[f"u{u}", f"i{(u + k) % 6}", 100 * u + 10 * k] for u in range(5) for k in range(4)]
    (folder / "events.json").write_text(json.dumps({"titles": titles, "events": evts}))
    return folder


def test_builtin_kinds_and_their_option_classes() -> None:
    assert {"movielens", "amazon", "custom"} <= set(DATASET_LOADERS.names())
    assert DATASET_LOADERS.get("amazon") is AmazonLoader
    assert set(AmazonLoader.model_fields) == {"category", "official_split", "max_description_chars"}
    assert set(CustomLoader.model_fields) == {"name", "keep_unused_items", "max_description_chars"}
    assert set(MovieLensLoader.model_fields) == {"name"}


def test_registered_loader_by_name(events: type[EventsLoader], events_dir: Path) -> None:
    ds = load_dataset("events", events_dir, min_ts=5)
    assert ds.n_users == 5
    assert len(ds.interactions) == 19  # u0's first event (ts 0) dropped
    assert isinstance(loader_for("events", {"min_ts": 5}), events)


@pytest.mark.usefixtures("events")
def test_registered_loader_through_recipe_and_prepare(events_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(
        "cpu",
        [
            "data.kind=events",
            f"data.path={events_dir}",
            "data.min_ts=5",
            "data.split=loo",
            f"work_dir={tmp_path / 'work'}",
        ],
    )
    assert recipe.data.loader_options() == {"min_ts": 5}
    assert recipe.to_dict()["data"]["min_ts"] == 5
    split = pipeline.prepare(recipe, show=False)
    assert split.scheme == "loo"
    assert len(split.dataset.interactions) == 19
    assert (tmp_path / "work" / "shop" / "prepared").is_dir()


@pytest.mark.usefixtures("events")
def test_options_validated_by_the_loaders_class(events_dir: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"data: .*events loader: unknown option 'colour' \(its options: min_ts\)",
    ):
        load_recipe("cpu", ["data.kind=events", "data.colour=red"])
    with pytest.raises(
        ConfigError, match=r"unknown option 'splt'.*own keys: kind, path, name, split"
    ):
        load_recipe("cpu", ["data.splt=loo"])  # a typo of a data key reads as a loader option
    with pytest.raises(ConfigError, match=r"events loader: min_ts: Input should be greater"):
        load_dataset("events", events_dir, min_ts=-1)


def test_amazon_through_recipe_and_prepare(amazon_dir: Path, tmp_path: Path) -> None:
    """`data.category` is an amazon option; `data.split=official` implies `official_split`."""
    sets = ["data.kind=amazon", f"data.path={amazon_dir}", f"work_dir={tmp_path / 'w'}"]
    with pytest.raises(ConfigError, match=r"amazon loader: missing required option 'category'"):
        load_recipe("cpu", sets)
    recipe = load_recipe("cpu", [*sets, f"data.category={CAT}", "data.split=official"])
    assert recipe.data.loader_options() == {"official_split": True, "category": CAT}
    split = pipeline.prepare(recipe, show=False)
    assert split.scheme == "official"
    time_recipe = load_recipe("cpu", [*sets, f"data.category={CAT}"])
    assert time_recipe.data.loader_options() == {"official_split": False, "category": CAT}


def test_null_options_are_unset() -> None:
    """Run snapshots written before loader options had their own classes hold category: null."""
    recipe = load_recipe("cpu", ["data.category=null"])
    assert recipe.data.loader_options() == {}
    assert "category" not in recipe.to_dict()["data"]


def test_unknown_kind_lists_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"data\.kind: .*unknown dataset kind 'netflix'; expected one of: movielens, amaz",
    ):
        load_recipe("cpu", ["data.kind=netflix"])
    with pytest.raises(ConfigError, match=r"unknown dataset kind 'netflix'; choose one of"):
        load_dataset("netflix", tmp_path)


def test_duplicate_and_non_loader_refused() -> None:
    with pytest.raises(ConfigError, match=r"dataset kind 'amazon' is already registered"):
        register_loader("amazon")(EventsLoader)
    assert DATASET_LOADERS.get("amazon") is AmazonLoader
    with pytest.raises(ConfigError, match=r"is not a DatasetLoader subclass"):
        register_loader("thing")(dict)  # type: ignore[arg-type]
