"""Model checkpoints: a folder with `model.safetensors` + `config.json`, written atomically.
The one place that names checkpoint files (`WEIGHTS`, `CONFIG`) and a training run's
checkpoint folders (`BEST`, `LAST`).

config.json: {"arch", "model" (ModelConfig), "vocab" (SidVocab), "tokenizer_fingerprint",
"freshrec_version", "extra"}. The fingerprint ties a model to the SID tokenizer it was trained
with; loading with a different expected fingerprint raises `TokenizerMismatchError`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

import freshrec
from freshrec.atomic import atomic_dir, write_json
from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError
from freshrec.manifest import read_json_object
from freshrec.model.base import GenerativeRecommender, build_model
from freshrec.model.config import ModelConfig
from freshrec.semid.vocab import SidVocab

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
REQUIRED_CONFIG = ("arch", "model", "vocab", "tokenizer_fingerprint")
BEST, LAST = "best", "last"  # a training run's best-on-validation checkpoint, resume state


def save_checkpoint(
    model: GenerativeRecommender,
    folder: str | Path,
    tokenizer_fingerprint: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` to `folder` (replaced atomically if it exists). Returns the folder."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        # save_model drops tied duplicates (T5/Llama share embedding and lm_head weights)
        save_model(model, str(tmp / WEIGHTS), metadata={"format": "pt"})
        write_json(
            tmp / CONFIG,
            {
                "arch": model.arch,
                "model": model.config.model_dump(),
                "vocab": model.vocab.to_dict(),
                "tokenizer_fingerprint": tokenizer_fingerprint,
                "freshrec_version": freshrec.__version__,
                "extra": extra or {},
            },
        )
    return folder


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """The parsed config.json of a checkpoint; CheckpointError if missing or malformed."""
    return read_json_object(
        Path(folder) / CONFIG,
        "checkpoint config",
        required=REQUIRED_CONFIG,
        hint=f"is {folder} a checkpoint?",
    )


def load_checkpoint(
    folder: str | Path,
    expect_fingerprint: str | None = None,
    map_location: str | torch.device = "cpu",
) -> GenerativeRecommender:
    """Load a checkpoint written by `save_checkpoint`, in eval mode on `map_location`.

    Raises TokenizerMismatchError when `expect_fingerprint` differs from the stored one, and
    CheckpointError (naming the file) when a file is missing, corrupt or does not fit.
    """
    folder = Path(folder)
    data = read_checkpoint_config(folder)
    stored = data["tokenizer_fingerprint"]
    if expect_fingerprint is not None and stored != expect_fingerprint:
        raise TokenizerMismatchError(
            f"{folder}: checkpoint was trained with SID tokenizer {stored!r} but the current "
            f"tokenizer is {expect_fingerprint!r}; retrain the model or use the matching tokenizer"
        )
    cfg_path = folder / CONFIG
    try:
        config = ModelConfig.from_dict(data["model"])
        vocab = SidVocab(**data["vocab"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{cfg_path}: bad model/vocab config ({exc})") from None
    if config.arch != data["arch"]:
        raise CheckpointError(f"{cfg_path}: arch {data['arch']!r} != model.arch {config.arch!r}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: checkpoint weights not found")
    model = build_model(config, vocab)
    try:
        missing, unexpected = load_model(
            model, str(weights), strict=False, device=str(map_location)
        )
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot load weights ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not fit the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    return model.to(map_location).eval()


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder holding the weights: `path` itself, or `path/best` for a training
    run folder. CheckpointError when neither exists."""
    folder = Path(path)
    for cand in (folder, folder / BEST):
        if (cand / WEIGHTS).is_file():
            return cand
    raise CheckpointError(f"{folder}: no checkpoint here (expected {WEIGHTS} or {BEST}/)")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_identity(checkpoint_dir: str | Path) -> tuple[str, str]:
    """(content hash = sha256 of the weights file, tokenizer fingerprint) of a checkpoint."""
    folder = Path(checkpoint_dir)
    cfg = read_checkpoint_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: checkpoint weights not found")
    return file_sha256(weights), str(cfg["tokenizer_fingerprint"])
