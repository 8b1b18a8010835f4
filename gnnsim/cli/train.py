"""gnnsim-train: train a simulator on a generated or converted data set (hydra app).

One process: ``gnnsim-train experiment=NAME``. Several GPUs or nodes: start one process per GPU with
``torchrun --nproc_per_node=8 -m gnnsim.cli.train experiment=NAME`` (or ``-m hydra/launcher=slurm`` for a
SLURM job); the processes join one DistributedDataParallel run, and ``trainer.batch_size`` stays the global
batch.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gnnsim import distributed
from gnnsim.cli.common import CONF_DIR, command, plain, typed
from gnnsim.data.dataset import FrameDataset
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators import build_simulator
from gnnsim.training import TrainConfig, train


@command
def run(cfg: DictConfig) -> dict:
    """Build the simulator and data set the config names, train, and print where the checkpoint went."""
    model_cfg = typed(ModelConfig, cfg.model, "model")
    torch.manual_seed(cfg.trainer.seed)  # the initial weights depend on the seed only
    sim = build_simulator(cfg.simulator.domain, model_cfg, plain(cfg.simulator.params))
    data_dir = Path(cfg.data_dir)
    dataset = FrameDataset(data_dir / "train.h5", sim.window, sim.fields)
    train_cfg = typed(TrainConfig, cfg.trainer, "trainer", **plain(cfg.optim))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    layout = distributed.launched_layout()  # set by torchrun or a SLURM job of several tasks
    if layout is not None:
        distributed.init(layout)
    try:
        result = train(sim, dataset, train_cfg, run_dir, extra={"config": plain(cfg), "data_dir": str(data_dir)})
    finally:
        if layout is not None:
            dist.destroy_process_group()
    if layout is None or layout.rank == 0:
        print(f"checkpoint: {result['checkpoint']} (step {result['step']}, loss {result['loss']:.4g})")
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
