"""Multi-process training: process groups from torchrun or SLURM, and normalisers fed by the global batch.

Every process (rank) holds a full replica of the simulator and takes its share of each global batch
(``StepSampler``); DistributedDataParallel averages the gradients. The normalisers must see the same rows as
one process with the global batch would, so their accumulation is summed across ranks (``sync_normalizers``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gnnsim.normalization import Normalizer


@dataclass(frozen=True)
class Layout:
    """Where this process sits: global rank, rank on its node, and the number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def launched_layout() -> Layout | None:
    """Return the layout that torchrun or a submitit job of several tasks set up, or None for one process.

    torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. In a submitit job (SLURM, or the
    local executor) with more than one task, submitit's helper derives and exports them.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return Layout(rank, int(os.environ.get("LOCAL_RANK", 0)), world_size)
    if "SUBMITIT_EXECUTOR" in os.environ:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        if JobEnvironment().num_tasks > 1:
            env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            return Layout(env.rank, env.local_rank, env.world_size)
    return None


def init(layout: Layout) -> None:
    """Join the process group: NCCL with one GPU per local rank when CUDA is present, else gloo."""
    if torch.cuda.is_available():
        torch.cuda.set_device(layout.local_rank)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=layout.rank, world_size=layout.world_size)


def current() -> Layout:
    """Return this process's layout (a single process when no process group is initialised)."""
    if not dist.is_initialized():
        return Layout()
    local_rank = torch.cuda.current_device() if torch.cuda.is_available() else int(os.environ.get("LOCAL_RANK", 0))
    return Layout(dist.get_rank(), local_rank, dist.get_world_size())


def sync_normalizers(module: nn.Module) -> list[RemovableHandle]:
    """Make every ``Normalizer`` in ``module`` accumulate the statistics of all ranks' rows.

    A forward pre-hook sums this rank's row count, sum and sum of squares with every other rank's, adds the
    totals (one accumulation, as one process with the global batch makes), and lets the normaliser itself
    only normalise. Ranks therefore keep identical statistics.

    Returns:
        The hook handles (``handle.remove()`` undoes this).
    """
    return [
        m.register_forward_pre_hook(_accumulate_global_batch, with_kwargs=True)
        for m in module.modules()
        if isinstance(m, Normalizer)
    ]


def _accumulate_global_batch(norm: Normalizer, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Add the all-reduced statistics of ``args[0]`` to ``norm``; call it without accumulation."""
    x: Tensor = args[0]
    accumulate = kwargs.get("accumulate", args[1] if len(args) > 1 else None)
    accumulate = norm.training if accumulate is None else accumulate
    if accumulate:  # every rank, every step (the cap is applied on the device, identically on every rank)
        stats = norm.row_statistics(x)
        dist.all_reduce(stats)
        norm.accumulate(stats)
    return (x,), {"accumulate": False}
