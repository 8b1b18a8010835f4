"""GPU paths, on a machine with CUDA: `make test-gpu` (deselected elsewhere by the `gpu` marker).

Not yet run on a GPU in this project's sessions: they are the checks for the first session that has one.
"""

import math

import pytest
import torch

from conftest import synthetic_flow_batch
from gnnsim.data.dataset import FrameDataset
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators.flow import FlowSimulator
from gnnsim.training import TrainConfig, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CFG = ModelConfig(latent_size=32, num_blocks=3)


@pytest.fixture
def batch():
    return {k: v.cuda() for k, v in synthetic_flow_batch().items()}


def test_bf16_training_and_rollout_steps_never_sync(batch):
    """``set_sync_debug_mode("error")`` raises on any host-device sync: none in a training or rollout step."""
    torch.manual_seed(0)
    sim = FlowSimulator(CFG).cuda()
    opt = torch.optim.Adam(sim.parameters(), fused=True)

    def train_step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = sim.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train_step()  # the first step allocates the optimiser state and the library handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step()
        sim.eval()
        with torch.autocast("cuda", torch.bfloat16):
            sim.rollout(batch, num_steps=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_optimised_block_equals_plain_on_gpu(batch, monkeypatch):
    """The GPU path of the optimised block (whole-tensor split first layer) computes the plain function."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # full float32 matmuls
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        sim = FlowSimulator(ModelConfig(latent_size=32, num_blocks=3, fused=fused)).cuda()
        torch.manual_seed(1)
        loss = sim.loss(batch)
        loss.backward()
        results.append([loss.detach(), *(p.grad for p in sim.parameters())])
    for plain, fused in zip(*results, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_train_with_bf16_pinned_workers_and_resume_on_cpu(tmp_path, flow_split):
    """`trainer=gpu`'s settings train a few finite steps; the checkpoint resumes on the CPU."""
    common = dict(batch_size=2, warmup_steps=1, log_every=2, checkpoint_every=2)
    dataset = FrameDataset(flow_split, 2, FlowSimulator.fields)
    result = train(FlowSimulator(CFG), dataset, TrainConfig(steps=4, device="cuda", amp="bf16", num_workers=2, **common),
                   tmp_path / "run", progress=False)
    assert result["step"] == 4 and math.isfinite(result["loss"])
    resumed = train(FlowSimulator(CFG), dataset, TrainConfig(steps=6, device="cpu", amp="off", **common),
                    tmp_path / "run", progress=False)
    assert resumed["step"] == 6 and math.isfinite(resumed["loss"])
