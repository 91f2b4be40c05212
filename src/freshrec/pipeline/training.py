"""The train stage: a model trained on the training period, validated each epoch by the beam
ranker's N@10, its best-on-validation checkpoint kept in the workspace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freshrec.atomic import write_json
from freshrec.config import Recipe
from freshrec.data.schema import Split
from freshrec.evaluate.protocol import evaluate_ranker
from freshrec.model.base import GenerativeRecommender, build_model
from freshrec.model.batches import iterate_batches, n_batches, n_targets, training_examples
from freshrec.model.checkpoint import BEST, load_checkpoint
from freshrec.pipeline.inputs import workspace
from freshrec.pipeline.rankers import gr_ranker
from freshrec.semid import SemanticTokenizer, SidTable
from freshrec.train.trainer import Trainer, TrainResult, seed_everything


@dataclass
class TrainedModel:
    """A finished run: the best-on-validation model, the run folder, the trainer's result."""

    model: GenerativeRecommender
    folder: Path
    result: TrainResult


def run_name(recipe: Recipe) -> str:
    """The default run folder name, `<arch>-s<seed>`."""
    return f"{recipe.model.arch}-s{recipe.train.seed}"


def train(
    recipe: Recipe,
    split: Split,
    tokenizer: SemanticTokenizer,
    table: SidTable,
    *,
    name: str | None = None,
    resume: bool = False,
    progress: bool = True,
    examples: dict[str, np.ndarray] | None = None,
    init_from: str | Path | None = None,
    validate_part: str = "valid",
) -> TrainedModel:
    """Train `recipe.model` on the training period; keeps the best-on-validation checkpoint.

    examples: training examples (default: every training-period target of `split`).
    init_from: a checkpoint to continue from (incremental training) instead of a fresh init;
    it must share the tokenizer.
    """
    cfg = recipe.train
    seed_everything(cfg.seed)
    vocab = tokenizer.vocab
    if init_from is not None:
        model = load_checkpoint(init_from, expect_fingerprint=tokenizer.fingerprint)
    else:
        model = build_model(recipe.model, vocab)
    if examples is None:
        examples = training_examples(recipe.model, split, table.tokens(vocab), vocab)

    def validate(m: GenerativeRecommender) -> float:
        # ranks with the weights handed in (the EMA copy when train.ema_decay is set); the
        # full prompt whatever eval.prompt_new_items says (a decoding choice made after
        # training: it does not change which epoch is kept)
        ranker = gr_ranker(
            recipe, m, table, split, catalog="warm", beam_size=cfg.valid_beam, prompt_new_items=True
        )
        res = evaluate_ranker(
            ranker,
            split,
            validate_part,  # type: ignore[arg-type]
            top_k=10,
            max_requests=cfg.valid_requests,
            seed=cfg.seed,
        )
        return res.metrics.overall.ndcg[10]

    folder = workspace(recipe).checkpoints(name or run_name(recipe))
    trainer = Trainer(
        model,
        cfg,
        batches=lambda epoch: iterate_batches(examples, cfg.batch_size, True, cfg.seed + epoch),
        n_batches=n_batches(examples, cfg.batch_size),
        n_examples=n_targets(examples),
        validate=validate,
        out_dir=folder,
        tokenizer_fingerprint=tokenizer.fingerprint,
        progress=progress,
    )
    result = trainer.fit(resume=resume)
    write_json(folder / "recipe.json", recipe.to_dict())
    best = load_checkpoint(folder / BEST, expect_fingerprint=tokenizer.fingerprint)
    return TrainedModel(best, folder, result)
