"""Multi-process data-parallel training with torchrun.

    torchrun --nproc-per-node 2 .venv/bin/freshrec train ...

torchrun sets RANK/WORLD_SIZE/MASTER_ADDR; `init_from_env()` joins the process group (gloo on
CPU, NCCL on CUDA) and the `Trainer` then wraps the model in DistributedDataParallel.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """Join the torchrun process group if WORLD_SIZE > 1. Returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 (the process that writes shared outputs)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
