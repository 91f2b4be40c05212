"""Shared fixtures: the bundled MovieLens data and a per-session work folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ML_DIR = REPO / "data" / "ml-latest-small"

# Tests share 2 cores with each other's subprocesses; one intra-op thread keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ml_dir() -> Path:
    """The bundled MovieLens latest-small folder (ratings.csv, movies.csv, README.txt)."""
    return ML_DIR
