"""Training: overfitting, exact resume after a kill, checkpoint contents."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_synthetic_flow
from gnnsim.checkpoint import load_checkpoint, simulator_from_checkpoint
from gnnsim.data.dataset import FrameDataset
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators.flow import FlowSimulator
from gnnsim.training import TrainConfig, batch_indices, learning_rate, train


def test_overfit_loss_falls_tenfold(tmp_path):
    path = write_synthetic_flow(tmp_path / "train.h5", 1, 6)
    torch.manual_seed(0)
    sim = FlowSimulator(ModelConfig(latent_size=32, num_blocks=2), noise_std=0.0)
    cfg = TrainConfig(steps=300, batch_size=1, lr=1e-3, warmup_steps=5, log_every=10, checkpoint_every=1000)
    train(sim, FrameDataset(path, 2, sim.fields), cfg, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert losses[0] / losses[-1] >= 10, losses


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-4, lr_min=1e-6, decay_rate=0.1, decay_steps=100)
    assert learning_rate(0, cfg) == pytest.approx(1.01e-4)
    assert learning_rate(100, cfg) == pytest.approx(1e-5 + 1e-6)
    assert learning_rate(50, cfg) == pytest.approx(1e-4 * 0.1**0.5 + 1e-6)


def test_batches_cover_each_epoch_once():
    seen = np.concatenate([batch_indices(10, 3, seed=1, step=s) for s in range(3)])
    assert len(set(seen.tolist())) == 9  # one epoch = 3 batches of 3 distinct samples, last one dropped
    assert not np.array_equal(batch_indices(10, 3, 1, 3), batch_indices(10, 3, 1, 0))  # next epoch reshuffles


def test_checkpoint_rebuilds_the_same_simulator(tmp_path):
    path = write_synthetic_flow(tmp_path / "train.h5", 1, 5)
    sim = FlowSimulator(ModelConfig(latent_size=8, num_blocks=1))
    train(sim, FrameDataset(path, 2, sim.fields), TrainConfig(steps=4, warmup_steps=1, batch_size=1), tmp_path / "r",
          progress=False)
    payload = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert payload["step"] == 4 and payload["simulator"]["domain"] == "flow"
    rebuilt = simulator_from_checkpoint(payload)
    for (k, a), b in zip(sim.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a.cpu(), b), k
    # The same command again has nothing left to do: it reports the checkpoint's step and loss, changes
    # nothing.
    again = train(sim, FrameDataset(path, 2, sim.fields), TrainConfig(steps=4, warmup_steps=1, batch_size=1),
                  tmp_path / "r", progress=False)
    assert again["step"] == 4 and again["loss"] == payload["loss"] and np.isfinite(again["loss"])
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 4


def test_corrupt_checkpoint_is_one_line_error(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt: not a readable gnnsim checkpoint"):
        load_checkpoint(bad)


def cli(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gnnsim.cli.train", "debug=overfit", f"paths.root={tmp_path}", "data.name=syn",
        f"name={name}", "trainer.steps=400", "trainer.checkpoint_every=20", "trainer.log_every=20", "threads=1", *extra,
    ]


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    write_synthetic_flow(tmp_path / "datasets" / "syn" / "train.h5", 2, 8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Uninterrupted reference run.
    subprocess.run(cli(tmp_path, "ref"), check=True, cwd=tmp_path, env=env, capture_output=True)
    # Killed run: SIGKILL as soon as its first checkpoint exists, then the same command again.
    ckpt = tmp_path / "runs" / "killed" / "checkpoint.pt"
    proc = subprocess.Popen(cli(tmp_path, "killed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert killed_at < 400, "the run finished before it could be killed; raise trainer.steps"
    subprocess.run(cli(tmp_path, "killed"), check=True, cwd=tmp_path, env=env, capture_output=True)
    ref = load_checkpoint(tmp_path / "runs" / "ref" / "checkpoint.pt")
    resumed = load_checkpoint(ckpt)
    assert resumed["step"] == ref["step"] == 400
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
