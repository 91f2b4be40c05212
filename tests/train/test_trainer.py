"""Trainer on real MovieLens data with a tiny model: best-on-validation checkpoint, early
stopping, exact resume, schedules, and data-parallel equivalence (torchrun, 2 gloo processes)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import ddp_worker
import pytest
import torch

from freshrec.config import load_recipe
from freshrec.data import save_split
from freshrec.errors import ConfigError
from freshrec.model.base import build_model
from freshrec.model.batches import iterate_batches, n_targets, training_examples
from freshrec.model.checkpoint import load_checkpoint
from freshrec.model.config import ModelConfig
from freshrec.train.config import TrainConfig
from freshrec.train.trainer import Trainer, _lr_lambda, seed_everything

TINY = ModelConfig(
    arch="causal", d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, max_history=10
)
N, BATCH = 384, 64


@pytest.fixture(scope="module")
def examples(ml_split, ml_sids):
    tok, table = ml_sids
    ex = training_examples(TINY, ml_split, table.tokens(tok.vocab), tok.vocab)
    return {k: v[:N] for k, v in ex.items()}


def make_trainer(examples, ml_sids, out: Path, validate=None, **cfg) -> Trainer:
    tok, _ = ml_sids
    seed_everything(0)
    model = build_model(TINY, tok.vocab)
    train_cfg = TrainConfig(**{"batch_size": BATCH, "warmup_steps": 2, "lr": 5e-3, **cfg})
    return Trainer(
        model,
        train_cfg,
        batches=lambda e: iterate_batches(examples, BATCH, True, train_cfg.seed + e),
        n_batches=-(-N // BATCH),
        n_examples=n_targets(examples),
        validate=validate,
        out_dir=out,
        tokenizer_fingerprint=tok.fingerprint,
        progress=False,
    )


def test_loss_decreases_and_log_is_written(examples, ml_sids, tmp_path):
    trainer = make_trainer(examples, ml_sids, tmp_path, epochs=3)
    result = trainer.fit()
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0]
    assert (tmp_path / "train_log.json").exists()
    assert all(h.examples_per_s > 0 for h in result.history)


def test_keeps_best_on_validation_and_stops_early(examples, ml_sids, tmp_path):
    scores = iter([0.10, 0.30, 0.20, 0.25, 0.15, 0.9, 0.9])
    trainer = make_trainer(
        examples, ml_sids, tmp_path, validate=lambda m: next(scores), epochs=7, patience=3
    )
    result = trainer.fit()
    assert result.best_epoch == 1
    assert result.best_valid == pytest.approx(0.30)
    assert result.epochs_run == 5  # epochs 2, 3, 4 did not improve on epoch 1
    best = load_checkpoint(tmp_path / "best")
    assert best.state_dict().keys() == trainer.model.state_dict().keys()


def test_min_fraction_defers_early_stopping(examples, ml_sids, tmp_path):
    """Patience 3 is spent after epoch 4, but 0.7 of 10 epochs must run first: epoch 5's gain
    becomes the best checkpoint, and patience then stops the run after epoch 8."""
    scores = iter([0.10, 0.30, 0.20, 0.25, 0.15, 0.35, 0.2, 0.2, 0.2, 0.2])
    trainer = make_trainer(
        examples,
        ml_sids,
        tmp_path,
        validate=lambda m: next(scores),
        epochs=10,
        patience=3,
        min_fraction=0.7,
    )
    result = trainer.fit()
    assert result.best_epoch == 5
    assert result.best_valid == pytest.approx(0.35)
    assert result.epochs_run == 9


def test_resume_continues_exactly(examples, ml_sids, tmp_path):
    straight = make_trainer(examples, ml_sids, tmp_path / "a", epochs=3)
    straight.fit()
    first = make_trainer(examples, ml_sids, tmp_path / "b", epochs=3)
    first.fit(stop_after=1)  # as if the process died after epoch 0
    resumed = make_trainer(examples, ml_sids, tmp_path / "b", epochs=3)
    result = resumed.fit(resume=True)
    assert [h.epoch for h in result.history] == [0, 1, 2]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_ema_weights_are_validated_and_saved(examples, ml_sids, tmp_path):
    """With ema_decay, validation sees the moving average and best/ holds it, not the raw
    weights the optimizer steps."""
    seen = []

    def validate(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return 0.1 * len(seen)

    trainer = make_trainer(examples, ml_sids, tmp_path, validate=validate, epochs=2, ema_decay=0.9)
    trainer.fit()
    best = load_checkpoint(tmp_path / "best").state_dict()
    raw = trainer.model.state_dict()
    for key, value in best.items():
        torch.testing.assert_close(value, seen[-1][key], rtol=0, atol=0, msg=key)
    moved = [k for k in best if not torch.equal(best[k], raw[k])]
    assert moved, "the averaged weights should differ from the raw ones"


def test_ema_first_update_copies_then_lerps(examples, ml_sids, tmp_path):
    trainer = make_trainer(examples, ml_sids, tmp_path, epochs=1, ema_decay=0.75)
    batches = iter(trainer.batches(0))
    params = dict(trainer.model.named_parameters())
    name = next(iter(params))

    def step():
        loss = trainer.step_module(next(batches))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        trainer.ema.update_parameters(trainer.model)

    step()
    first = params[name].detach().clone()
    torch.testing.assert_close(dict(trainer.eval_model.named_parameters())[name], first)
    step()
    second = params[name].detach()
    expected = 0.75 * first + 0.25 * second
    torch.testing.assert_close(dict(trainer.eval_model.named_parameters())[name], expected)


@pytest.mark.parametrize("value", ["1.5", "0", "-0.1"])
def test_ema_decay_outside_0_1_is_a_clear_error(value):
    with pytest.raises(ConfigError, match="ema_decay"):
        load_recipe("cpu", [f"train.ema_decay={value}"])


def test_resume_with_ema_continues_exactly(examples, ml_sids, tmp_path):
    straight = make_trainer(examples, ml_sids, tmp_path / "a", epochs=3, ema_decay=0.9)
    straight.fit()
    first = make_trainer(examples, ml_sids, tmp_path / "b", epochs=3, ema_decay=0.9)
    first.fit(stop_after=1)
    resumed = make_trainer(examples, ml_sids, tmp_path / "b", epochs=3, ema_decay=0.9)
    resumed.fit(resume=True)
    a, b = straight.eval_model.state_dict(), resumed.eval_model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    plain = make_trainer(examples, ml_sids, tmp_path / "b", epochs=3)
    with pytest.raises(ConfigError, match="ema_decay"):
        plain.fit(resume=True)


@pytest.mark.parametrize("schedule", ["cosine", "inverse_sqrt", "constant"])
def test_schedules_warm_up_then_decay(schedule):
    cfg = TrainConfig(schedule=schedule, warmup_steps=10)
    fn = _lr_lambda(cfg, total_steps=100)
    assert fn(0) == pytest.approx(0.1)
    assert fn(9) == pytest.approx(1.0)
    if schedule == "constant":
        assert fn(99) == 1.0
    else:
        assert fn(99) < fn(20) < 1.0
    if schedule == "cosine":
        assert fn(100) == pytest.approx(0.0, abs=1e-9)
    if schedule == "inverse_sqrt":
        assert fn(39) == pytest.approx(math.sqrt(10 / 40))


def test_two_process_ddp_matches_single_process(ml_split, ml_sids, tmp_path):
    """torchrun with 2 gloo processes, each taking half of every global batch, ends at the
    same weights as one process on the whole batch: tolerance 1e-5 absolute (only the float
    summation order of the gradient all-reduce differs; dropout is 0)."""
    tok, table = ml_sids
    work = tmp_path / "work"
    save_split(ml_split, work / "prepared")
    tok.save(work / "tokenizer", table)
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, worker, str(work), str(single)], check=True, timeout=300)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    subprocess.run([*cmd, worker, str(work), str(ddp)], check=True, timeout=300)
    a = torch.load(single / "weights.pt")
    b = torch.load(ddp / "weights.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    # the comparison is meaningful only if training moved the weights away from the init
    seed_everything(0)
    init = build_model(ddp_worker.CONFIG, tok.vocab).state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in a)
    assert moved > 1e-3
