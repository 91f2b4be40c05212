"""Fixtures of the data-stage tests: the loaded bundled MovieLens, its splits, fixture folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def amazon_dir(tmp_path: Path) -> Path:
    """A writable copy of the Amazon 2023 fixture folder (category Video_Games)."""
    return Path(shutil.copytree(FIXTURES / "amazon", tmp_path / "amazon"))


@pytest.fixture
def custom_dir(tmp_path: Path) -> Path:
    """A writable copy of the bring-your-own fixture folder."""
    return Path(shutil.copytree(FIXTURES / "custom", tmp_path / "custom"))
