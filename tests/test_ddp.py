"""Multi-process training (DistributedDataParallel, gloo on CPU): 2 processes match 1 with the combined batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import write_synthetic_flow
from gnnsim.checkpoint import load_checkpoint
from gnnsim.data.dataset import FrameDataset
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators.flow import FlowSimulator
from gnnsim.training import TrainConfig, train

STEPS = 6  # 2 warm-up steps (normaliser statistics only), then 4 updates with a global batch of 4


def run_training(data_path, run_dir, steps: int) -> None:
    """Train the same seeded tiny simulator, without noise, up to ``steps`` (resuming from ``run_dir``)."""
    torch.manual_seed(0)
    sim = FlowSimulator(ModelConfig(latent_size=16, num_blocks=2), noise_std=0.0)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, checkpoint_every=3)
    train(sim, FrameDataset(data_path, sim.window, sim.fields), cfg, run_dir, progress=False)


def two_process_worker(rank: int, init_file: str, data_path, runs) -> None:
    """Join a 2-process gloo group and do each (run_dir, steps) training run."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for run_dir, steps in runs:
            run_training(data_path, run_dir, steps)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train: one process to STEPS; two processes to STEPS and to STEPS / 2; one process resuming the latter."""
    tmp = tmp_path_factory.mktemp("ddp")
    data_path = write_synthetic_flow(tmp / "train.h5", num_trajectories=2, steps=12)
    two = [(tmp / "two", STEPS), (tmp / "two_then_one", STEPS // 2)]
    mp.spawn(two_process_worker, args=(str(tmp / "rendezvous"), data_path, two), nprocs=2, join=True)
    assert load_checkpoint(tmp / "two_then_one" / "checkpoint.pt")["step"] == STEPS // 2
    run_training(data_path, tmp / "one", STEPS)
    run_training(data_path, tmp / "two_then_one", STEPS)
    return {name: load_checkpoint(tmp / name / "checkpoint.pt") for name in ("one", "two", "two_then_one")}


def assert_same_state(actual: dict, expected: dict) -> None:
    assert actual["step"] == expected["step"] == STEPS
    for key, value in expected["state_dict"].items():  # weights and normaliser statistics
        torch.testing.assert_close(actual["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_two_processes_match_one_process_with_the_combined_batch(runs):
    assert_same_state(runs["two"], runs["one"])
    torch.manual_seed(0)
    initial = FlowSimulator(ModelConfig(latent_size=16, num_blocks=2)).state_dict()
    key = "model.decoder.layers.4.weight"
    assert (runs["one"]["state_dict"][key] - initial[key]).abs().max() > 1e-3  # the weights did move


def test_checkpoint_of_two_processes_resumes_in_one(runs):
    assert_same_state(runs["two_then_one"], runs["one"])
