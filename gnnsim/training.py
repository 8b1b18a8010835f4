"""The training loop: plain PyTorch, readable top to bottom, resumable at any step."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from gnnsim import distributed
from gnnsim.checkpoint import load_checkpoint, save_checkpoint
from gnnsim.data.dataset import Batch, FrameDataset
from gnnsim.simulators import Simulator

AMP_MODES = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings.

    Attributes:
        steps: total optimisation steps (normaliser warm-up steps included).
        batch_size: graphs per step: the global batch, split evenly over the processes of a multi-process run.
        lr: initial learning rate; decays as ``lr * decay_rate ** (step / decay_steps) + lr_min``.
        lr_min: floor added to the decayed rate (MeshGraphNets: 1e-6).
        decay_rate, decay_steps: exponential decay (MeshGraphNets: 0.1 over 5M steps).
        warmup_steps: first steps only accumulate normaliser statistics, without updates (MeshGraphNets: 1000).
        log_every: steps between metric records (JSONL + TensorBoard).
        checkpoint_every: steps between checkpoints (one is also written at the end).
        num_workers: DataLoader worker processes (per training process).
        seed: seeds the data order and the noise.
        device: ``auto`` (CUDA if present; a process's own GPU under torchrun), ``cpu`` or ``cuda[:i]``.
        amp: ``auto`` (bfloat16 autocast on CUDA GPUs that support it, else off), ``bf16`` or ``off``;
            LayerNorm and the normaliser statistics stay in float32 and float64.
        compile: ``torch.compile`` the learned core (on CPU this needs a C++ compiler; the first steps compile).
    """

    steps: int = 10_000
    batch_size: int = 2
    lr: float = 1e-4
    lr_min: float = 1e-6
    decay_rate: float = 0.1
    decay_steps: int = 5_000_000
    warmup_steps: int = 1000
    log_every: int = 50
    checkpoint_every: int = 1000
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    compile: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"trainer: steps >= 1, batch_size >= 1, lr > 0, warmup_steps >= 0 expected, got {self}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"trainer.amp: expected one of {AMP_MODES}, got {self.amp!r}")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Return the learning rate at ``step``."""
    return cfg.lr * cfg.decay_rate ** (step / cfg.decay_steps) + cfg.lr_min


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Return the sample indices of ``step``: epochs of seeded permutations, so any step can be recomputed."""
    per_epoch = num_items // batch_size
    if per_epoch == 0:
        raise ValueError(f"trainer.batch_size={batch_size} exceeds the {num_items} training samples")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_items)
    return perm[k * batch_size : (k + 1) * batch_size]


class StepSampler(Sampler[list[int]]):
    """Yields the batches of steps ``start..stop-1``; with ``world > 1`` each rank takes every world-th sample."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.args = (num_items, batch_size, seed)
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield batch_indices(*self.args, step)[self.rank :: self.world].tolist()


def resolve_device(name: str) -> torch.device:
    """Return the device ``name`` asks for (``auto``: CUDA when available; ``cuda``: this process's GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())  # set per local rank by gnnsim.distributed.init
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype that ``amp`` selects on ``device``, or None for full precision."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of a batch to ``device`` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def step_seed(seed: int, step: int, rank: int) -> int:
    """Return the seed of the noise drawn at ``step`` by ``rank``: every step is reproducible on its own."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class LossModule(nn.Module):
    """Expose ``sim.loss`` as ``forward``, where DistributedDataParallel prepares its gradient reduction."""

    def __init__(self, sim: Simulator):
        super().__init__()
        self.sim = sim

    def forward(self, batch: Batch) -> Tensor:
        """Return the simulator's training loss of ``batch``."""
        return self.sim.loss(batch)


def train(
    sim: Simulator,
    dataset: FrameDataset,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``sim`` on ``dataset``; resume from ``run_dir/checkpoint.pt`` if it exists.

    In a process group (``gnnsim.distributed.init``, e.g. under torchrun), every process runs this function:
    each takes its share of every global batch, DistributedDataParallel averages the gradients, the
    normalisers accumulate the statistics of the whole global batch, and rank 0 alone logs and writes
    checkpoints. A checkpoint resumes with any number of processes.

    Args:
        sim: the domain simulator (model + normalisers), freshly built or to be restored.
        dataset: training windows.
        cfg: optimisation settings.
        run_dir: where the checkpoint, ``metrics.jsonl`` and TensorBoard events go (shared by all processes).
        extra: JSON-able metadata stored in checkpoints (e.g. the resolved hydra config, the data path).
        progress: show a progress bar (rank 0).

    Returns:
        ``{"step", "loss", "checkpoint"}`` of the final state.
    """
    from torch.utils.tensorboard import SummaryWriter

    layout = distributed.current()
    if cfg.batch_size % layout.world_size:
        raise ValueError(
            f"trainer.batch_size={cfg.batch_size} is the global batch and must split evenly over "
            f"{layout.world_size} processes; use a multiple of {layout.world_size}"
        )
    main = layout.rank == 0
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    device = resolve_device(cfg.device)
    amp_dtype = autocast_dtype(cfg.amp, device)
    sim.to(device).train()
    opt = torch.optim.Adam(sim.parameters(), lr=learning_rate(0, cfg), fused=True)  # one kernel, CPU too

    # 1. Start fresh or resume exactly where the last checkpoint left off (from any number of processes).
    step, loss_value = 0, float("nan")
    if ckpt_path.exists():
        payload = load_checkpoint(ckpt_path)
        if payload["simulator"] != sim.spec():
            raise ValueError(f"{ckpt_path}: checkpoint was made by a different model/simulator config; use a new run name")
        sim.load_state_dict(payload["state_dict"])
        opt.load_state_dict(payload["optimizer"])
        step, loss_value = int(payload["step"]), float(payload["loss"])
    if step >= cfg.steps:  # already trained this far: report the checkpoint's loss
        return {"step": step, "loss": loss_value, "checkpoint": str(ckpt_path)}

    def checkpoint(loss: float) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "simulator": sim.spec(),
                "state_dict": sim.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "loss": loss,
                "train_config": asdict(cfg),
                "extra": json.loads(json.dumps(extra or {}, default=str)),
            },
        )

    if cfg.compile:
        sim.model.compile(dynamic=True)
    loss_fn, hooks = sim.loss, []
    if layout.world_size > 1:
        hooks = distributed.sync_normalizers(sim)
        device_ids = [device.index] if device.type == "cuda" else None
        loss_fn = DistributedDataParallel(LossModule(sim), device_ids=device_ids, forward_sync_buffers=False)
    loader = DataLoader(
        dataset,
        batch_sampler=StepSampler(
            len(dataset), cfg.batch_size, cfg.seed, step, cfg.steps, layout.rank, layout.world_size
        ),
        collate_fn=dataset.collate,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (noise) untouched by the loader
    )
    writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=step) if main else None
    log = (run_dir / "metrics.jsonl").open("a") if main else None
    bar = tqdm(
        total=cfg.steps, initial=step, desc="train", unit="step", disable=not (progress and main), dynamic_ncols=True
    )
    loss_sum, loss_n, t_last, step_last = torch.zeros((), device=device), 0, time.perf_counter(), step
    try:
        for batch in loader:
            batch = to_device(batch, device)
            torch.manual_seed(step_seed(cfg.seed, step, layout.rank))  # this step's noise, also after a resume
            updating = step >= cfg.warmup_steps
            # 2. Forward: the normalisers accumulate statistics of every global batch; warm-up keeps no graph.
            autocast = torch.autocast(device.type, torch.bfloat16, enabled=amp_dtype is not None)
            with torch.set_grad_enabled(updating), autocast:
                loss = loss_fn(batch)
            # 3. Update, once the normalisers have warmed up (DistributedDataParallel averages the gradients).
            if updating:
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step - cfg.warmup_steps, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            step += 1
            loss_sum += loss.detach()  # on the device; read (a host sync) at log steps only
            loss_n += 1
            bar.update(1)
            # 4. Log the mean loss over all ranks and steps since the last record (always before a checkpoint).
            checkpoint_due = step % cfg.checkpoint_every == 0 or step == cfg.steps
            if step % cfg.log_every == 0 or checkpoint_due:
                if layout.world_size > 1:
                    dist.all_reduce(loss_sum)
                loss_value = loss_sum.item() / (loss_n * layout.world_size)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"loss is {loss_value} in steps {step_last + 1}-{step}; lower optim.lr or check the data"
                    )
                now = time.perf_counter()
                rate = (step - step_last) / max(now - t_last, 1e-9)
                if main:
                    lr = opt.param_groups[0]["lr"]
                    record = {"step": step, "loss": loss_value, "lr": lr, "steps_per_s": rate}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    for key in ("loss", "lr", "steps_per_s"):
                        writer.add_scalar(f"train/{key}", record[key], step)
                    bar.set_postfix(loss=f"{loss_value:.4g}", steps_s=f"{rate:.1f}")
                loss_sum, loss_n, t_last, step_last = torch.zeros((), device=device), 0, now, step
            # 5. Checkpoint (rank 0; every rank holds the same state).
            if main and checkpoint_due:
                checkpoint(loss_value)
    finally:
        for hook in hooks:
            hook.remove()
        bar.close()
        if main:
            log.close()
            writer.close()
    if layout.world_size > 1:
        dist.barrier()  # the final checkpoint exists before any rank returns
    return {"step": step, "loss": loss_value, "checkpoint": str(ckpt_path)}
