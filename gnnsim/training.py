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
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from gnnsim.checkpoint import load_checkpoint, save_checkpoint
from gnnsim.data.dataset import Batch, FrameDataset
from gnnsim.simulators import Simulator


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings.

    Attributes:
        steps: total optimisation steps (normaliser warm-up steps included).
        batch_size: graphs per step.
        lr: initial learning rate; decays as ``lr * decay_rate ** (step / decay_steps) + lr_min``.
        lr_min: floor added to the decayed rate (MeshGraphNets: 1e-6).
        decay_rate, decay_steps: exponential decay (MeshGraphNets: 0.1 over 5M steps).
        warmup_steps: first steps only accumulate normaliser statistics, without updates (MeshGraphNets: 1000).
        log_every: steps between metric records (JSONL + TensorBoard).
        checkpoint_every: steps between checkpoints (one is also written at the end).
        num_workers: DataLoader worker processes.
        seed: seeds the data order and the noise.
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda[:i]``.
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

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"trainer: steps >= 1, batch_size >= 1, lr > 0, warmup_steps >= 0 expected, got {self}")


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
    """Return the device ``name`` asks for (``auto``: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def rng_state() -> dict[str, Any]:
    """Return the torch RNG states (CPU and CUDA) for a checkpoint."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by ``rng_state``."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    sim: Simulator,
    dataset: FrameDataset,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``sim`` on ``dataset``; resume from ``run_dir/checkpoint.pt`` if it exists.

    Args:
        sim: the domain simulator (model + normalisers), freshly built or to be restored.
        dataset: training windows.
        cfg: optimisation settings.
        run_dir: where the checkpoint, ``metrics.jsonl`` and TensorBoard events go.
        extra: JSON-able metadata stored in checkpoints (e.g. the resolved hydra config, the data path).
        progress: show a progress bar.

    Returns:
        ``{"step", "loss", "checkpoint"}`` of the final state.
    """
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    device = resolve_device(cfg.device)
    sim.to(device).train()
    opt = torch.optim.Adam(sim.parameters(), lr=learning_rate(0, cfg))

    # 1. Start fresh or resume exactly where the last checkpoint left off.
    step = 0
    torch.manual_seed(cfg.seed)
    if ckpt_path.exists():
        payload = load_checkpoint(ckpt_path)
        if payload["simulator"] != sim.spec():
            raise ValueError(f"{ckpt_path}: checkpoint was made by a different model/simulator config; use a new run name")
        sim.load_state_dict(payload["state_dict"])
        opt.load_state_dict(payload["optimizer"])
        step = int(payload["step"])
        set_rng_state(payload["rng"])
    if step >= cfg.steps:
        return {"step": step, "loss": float("nan"), "checkpoint": str(ckpt_path)}

    def checkpoint(loss: float) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "simulator": sim.spec(),
                "state_dict": sim.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "loss": loss,
                "rng": rng_state(),
                "train_config": asdict(cfg),
                "extra": json.loads(json.dumps(extra or {}, default=str)),
            },
        )

    loader = DataLoader(
        dataset,
        batch_sampler=StepSampler(len(dataset), cfg.batch_size, cfg.seed, step, cfg.steps),
        collate_fn=dataset.collate,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (noise) untouched by the loader
    )
    writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=step)
    log = (run_dir / "metrics.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    loss_sum, loss_n, t_last, step_last = 0.0, 0, time.perf_counter(), step
    loss_value = float("nan")
    try:
        for batch in loader:
            # 2. Forward: normalisers accumulate statistics on every training batch.
            loss = sim.loss(to_device(batch, device))
            # 3. Update, once the normalisers have warmed up.
            if step >= cfg.warmup_steps:
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step - cfg.warmup_steps, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            step += 1
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower optim.lr or check the data")
            loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
            bar.update(1)
            # 4. Log.
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                rate = (step - step_last) / max(now - t_last, 1e-9)
                record = {"step": step, "loss": loss_sum / loss_n, "lr": opt.param_groups[0]["lr"], "steps_per_s": rate}
                log.write(json.dumps(record) + "\n")
                log.flush()
                for key in ("loss", "lr", "steps_per_s"):
                    writer.add_scalar(f"train/{key}", record[key], step)
                bar.set_postfix(loss=f"{record['loss']:.4g}", steps_s=f"{rate:.1f}")
                loss_sum, loss_n, t_last, step_last = 0.0, 0, now, step
            # 5. Checkpoint.
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint(loss_value)
    finally:
        bar.close()
        log.close()
        writer.close()
    return {"step": step, "loss": loss_value, "checkpoint": str(ckpt_path)}
