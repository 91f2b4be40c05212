"""Trainer: AdamW, warmup + cosine / inverse-sqrt, gradient clipping, optional weight EMA,
validation each epoch, early stopping, best-on-validation checkpoint, exact resume, optional data
parallelism.

Weight EMA (`TrainConfig.ema_decay`): `torch.optim.swa_utils.AveragedModel` keeps a moving
average of the weights, updated after every optimizer step; validation, early stopping and the
`best/` checkpoint use the averaged copy, while the optimizer keeps stepping the raw weights
(both are in the `last/` resume state).

Data parallelism: launched with `torchrun --nproc-per-node N` (gloo on CPU, NCCL on GPU). Every
process builds the same global batch from the same seed and takes its contiguous slice; the
model is wrapped in `DistributedDataParallel`, which averages gradients, so with equal slices one
step equals the single-process step on the global batch up to float summation order.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from freshrec.atomic import atomic_dir, write_json
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from freshrec.train.config import TrainConfig

Batch = dict[str, torch.Tensor]


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    valid_score: float | None
    seconds: float
    examples_per_s: float


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: float
    epochs_run: int
    seconds: float
    history: list[EpochLog] = field(default_factory=list)

    @property
    def sec_per_epoch(self) -> float:
        return float(np.median([h.seconds for h in self.history])) if self.history else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "epochs_run": self.epochs_run,
            "seconds": self.seconds,
            "sec_per_epoch": self.sec_per_epoch,
            "history": [asdict(h) for h in self.history],
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _LossModule(nn.Module):
    """Routes `forward` to `model.loss` so DistributedDataParallel sees a forward call."""

    def __init__(self, model: GenerativeRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.loss(batch)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warm = max(cfg.warmup_steps, 0)

    def fn(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "inverse_sqrt":
            return math.sqrt(max(warm, 1) / max(step + 1, 1))
        progress = (step - warm) / max(total_steps - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return fn


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _progress_bar(disable: bool) -> Progress:
    """The training bar: epoch, batches done / total, recent loss, examples per second."""
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[eps]:.0f} ex/s"),
        TimeElapsedColumn(),
        disable=disable,
    )


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    """This process's contiguous slice of a global batch (dim 0)."""
    if world == 1:
        return batch
    n = next(iter(batch.values())).shape[0]
    per = math.ceil(n / world)
    return {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}


class Trainer:
    """Trains a `GenerativeRecommender`, keeping the best-on-validation checkpoint.

    batches: `batches(epoch) -> iterable of global batches` (seeded by epoch, so a resumed run
    sees the same order). n_examples: examples per epoch (for examples/s and the schedule).
    validate: `validate(model) -> float`, higher is better (validation N@10); None disables
    early stopping and keeps the last epoch.
    out_dir: gets `best/` (plain checkpoint), `last/` (resume state), `train_log.json`.
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        cfg: TrainConfig,
        batches: Callable[[int], Iterable[Batch]],
        n_batches: int,
        n_examples: int,
        validate: Callable[[GenerativeRecommender], float] | None,
        out_dir: str | Path,
        tokenizer_fingerprint: str,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.batches = batches
        self.n_batches = n_batches
        self.n_examples = n_examples
        self.validate = validate
        self.out_dir = Path(out_dir)
        self.fingerprint = tokenizer_fingerprint
        self.progress = progress
        self.rank, self.world = _world()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        total = cfg.epochs * max(n_batches, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg, total))
        self.ema: AveragedModel | None = None
        if cfg.ema_decay is not None:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
        self.step_module: nn.Module = _LossModule(model)
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module)

    @property
    def eval_model(self) -> GenerativeRecommender:
        """The weights that are validated and saved as `best/`: the EMA copy when enabled."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]

    # --- resume state ---------------------------------------------------------------------
    def _save_state(self, epoch: int, best: float, best_epoch: int, bad: int, log: list) -> None:
        if self.rank != 0:
            return
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }
        with atomic_dir(self.out_dir / LAST) as tmp:
            save_checkpoint(self.model, tmp / "model", self.fingerprint)
            torch.save(state, tmp / "optim.pt")
            write_json(
                tmp / "progress.json",
                {
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad,
                    "history": [asdict(h) for h in log],
                },
            )

    def _load_state(self) -> tuple[int, float, int, int, list[EpochLog]] | None:
        last = self.out_dir / LAST
        if not (last / "progress.json").exists():
            return None
        loaded = load_checkpoint(last / "model", expect_fingerprint=self.fingerprint)
        self.model.load_state_dict(loaded.state_dict())
        state = torch.load(last / "optim.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if (self.ema is None) != (state.get("ema") is None):
            raise ConfigError(
                f"{last}: resume state was saved with ema_decay "
                f"{'off' if state.get('ema') is None else 'on'}; this run has it "
                f"{'off' if self.ema is None else 'on'}"
            )
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        prog = json.loads((last / "progress.json").read_text())
        log = [EpochLog(**h) for h in prog["history"]]
        return prog["epoch"], prog["best"], prog["best_epoch"], prog["bad_epochs"], log

    # --- training ---------------------------------------------------------------------------
    def _validate(self) -> float | None:
        if self.validate is None:
            return None
        score = torch.tensor([0.0])
        if self.rank == 0:
            model = self.eval_model
            model.eval()
            with torch.no_grad():
                score[0] = float(self.validate(model))
            model.train()
        if self.world > 1:
            dist.broadcast(score, src=0)
        return float(score[0])

    def _train_epoch(self, epoch: int, bar: Progress, task: TaskID) -> EpochLog:
        """One pass over epoch `epoch`'s batches (an optimizer and scheduler step per batch, on
        this process's shard), then validation; the bar shows batches, the loss averaged over
        the last 20 batches and examples/s."""
        self.model.train()
        bar.reset(task, total=self.n_batches, epoch=epoch, loss=0.0, eps=0.0)
        t0 = time.perf_counter()
        losses, seen = [], 0
        for batch in self.batches(epoch):
            local = _shard(batch, self.rank, self.world)
            loss = self.step_module(local)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            losses.append(float(loss.detach()))
            seen += next(iter(batch.values())).shape[0]
            eps = seen / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=1, loss=float(np.mean(losses[-20:])), eps=eps)
        seconds = time.perf_counter() - t0
        score = self._validate()
        return EpochLog(
            epoch=epoch,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            valid_score=score,
            seconds=seconds,
            examples_per_s=seen / max(seconds, 1e-9),
        )

    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train until early stopping (`patience` epochs without a validation gain, once
        `max(min_epochs, ceil(min_fraction * epochs))` epochs have run) or `cfg.epochs`.
        resume: continue from `out_dir/last`.
        stop_after: return after this many epochs of this call (time-sliced training; a later
        `fit(resume=True)` continues exactly where it stopped)."""
        cfg = self.cfg
        start_epoch, best, best_epoch, bad, log = 0, -math.inf, -1, 0, []
        if resume and (state := self._load_state()) is not None:
            start_epoch, best, best_epoch, bad, log = state
            start_epoch += 1
        min_epochs = max(cfg.min_epochs, math.ceil(cfg.min_fraction * cfg.epochs))
        t_run = time.perf_counter()
        show = self.progress and self.rank == 0
        with _progress_bar(disable=not show) as bar:
            task = bar.add_task("train", total=self.n_batches, epoch=0, loss=0.0, eps=0.0)
            for epoch in range(start_epoch, cfg.epochs):
                log.append(self._train_epoch(epoch, bar, task))
                score = log[-1].valid_score
                seconds = log[-1].seconds
                if show:
                    bar.console.print(
                        f"epoch {epoch}: loss {log[-1].train_loss:.4f}"
                        + (f", valid N@10 {score:.4f}" if score is not None else "")
                        + f", {seconds:.1f}s"
                    )
                improved = score is None or score > best
                if improved:
                    best, best_epoch, bad = (score if score is not None else 0.0), epoch, 0
                    if self.rank == 0:
                        save_checkpoint(
                            self.eval_model,
                            self.out_dir / BEST,
                            self.fingerprint,
                            extra={"epoch": epoch, "valid_ndcg10": score},
                        )
                else:
                    bad += 1
                self._save_state(epoch, best, best_epoch, bad, log)
                if score is not None and bad >= cfg.patience and epoch + 1 >= min_epochs:
                    break
                if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
                    break
        result = TrainResult(
            best_epoch=best_epoch,
            best_valid=best,
            epochs_run=len(log),
            seconds=time.perf_counter() - t_run,
            history=log,
        )
        if self.rank == 0:
            write_json(self.out_dir / "train_log.json", result.to_dict())
        return result
