"""The flow training and rollout steps read nothing back to the host: on a GPU, no host-device sync per step.

Each such read (``.item()``, ``bool(tensor)``, boolean-mask indexing, ``nonzero``) makes the host wait until the
device has finished everything queued so far. The check runs on the CPU: a dispatch mode records every op
that would be such a read on a GPU.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import synthetic_flow_batch
from gnnsim.graph import NodeType
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.normalization import Normalizer
from gnnsim.simulators.base import masked_mse, node_type_one_hot
from gnnsim.simulators.flow import FlowSimulator

aten = torch.ops.aten
READS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.is_nonzero, aten.equal, aten._unique2,
         aten.unique_consecutive, aten.unique_dim}


class HostReads(TorchDispatchMode):
    """Record the ops that read device values back to the host."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        bool_index = packet in (aten.index, aten.index_put, aten.index_put_) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
        )
        sized_by_values = packet is aten.repeat_interleave and kwargs.get("output_size") is None
        if packet in READS or bool_index or sized_by_values:
            self.ops.append(str(func))
        return func(*args, **kwargs)


def test_the_detector_sees_the_reads_it_looks_for():
    x = torch.arange(4.0)
    with HostReads() as reads:
        x.sum().item()
        x[x > 1]
        bool(x.any())
    assert len(reads.ops) == 3


def test_flow_training_and_rollout_steps_read_nothing_back():
    torch.manual_seed(0)
    batch = synthetic_flow_batch()
    for fused in (True, False):
        sim = FlowSimulator(ModelConfig(latent_size=16, num_blocks=2, fused=fused))
        opt = torch.optim.Adam(sim.parameters())
        with HostReads() as reads:
            loss = sim.loss(batch)  # normalisers accumulating, noise, features, model, masked loss
            loss.backward()
        opt.step()  # Adam's step counters live on the host unless capturable: not checked here
        sim.eval()
        with HostReads() as rollout_reads:
            sim.rollout(batch, num_steps=2)
        assert reads.ops == [] and rollout_reads.ops == [], (fused, reads.ops, rollout_reads.ops)
        assert torch.isfinite(loss)


def test_normalizer_stops_at_its_cap_without_reading_the_count():
    norm = Normalizer(2, max_accumulations=2).train()
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    with HostReads() as reads:
        for scale in (1.0, 1.0, 100.0):  # the third call is past the cap: it must change nothing
            norm(x * scale)
    assert reads.ops == []
    assert norm.num_accumulations.item() == 2 and norm.count.item() == 4
    torch.testing.assert_close(norm.mean, torch.tensor([2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(norm.std, torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_one_hot_and_masked_mse_values():
    node_type = torch.tensor([NodeType.NORMAL, NodeType.WALL_BOUNDARY, NodeType.OUTFLOW], dtype=torch.int32)
    torch.testing.assert_close(node_type_one_hot(node_type), torch.eye(int(NodeType.SIZE))[[0, 6, 5]])
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0], [float("nan"), 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, float("nan")]])  # the unmasked NaN row must not leak
    mask = torch.tensor([True, True, False])
    loss = masked_mse(pred, target, mask)
    assert loss.item() == (5.0 + 2.0) / 2
    loss.backward()  # d/dpred of sum |pred - target|^2 / 2 rows, zero on the unmasked row
    torch.testing.assert_close(pred.grad, torch.tensor([[1.0, 2.0], [-1.0, -1.0], [0.0, 0.0]]))
    assert masked_mse(pred, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0  # no row: 0, not NaN
