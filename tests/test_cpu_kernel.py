"""The fused CPU kernel computes what the PyTorch path computes: outputs and gradients, in float32."""

import os
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import synthetic_flow_batch
from gnnsim.nn import cpu_kernel
from gnnsim.nn.blocks import GraphNetBlock, fused_mlp, split_edge_mlp
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.nn.mlp import MLP
from gnnsim.nn.processor import CheckpointedProcessor, Processor
from gnnsim.simulators.flow import FlowSimulator

pytestmark = pytest.mark.skipif(
    cpu_kernel.library() is None, reason="no fused CPU kernel here (no AVX-512 or no C compiler)"
)


@pytest.fixture
def calls(monkeypatch):
    """Count the kernel's forward passes (one per MLP) and backward calls."""
    counts = {"forward": 0, "backward": 0}
    run_forward, mlp_backward = cpu_kernel.run_forward, cpu_kernel.mlp_backward

    def forward(passes):
        counts["forward"] += len(passes)
        return run_forward(passes)

    def backward(*args, **kwargs):
        counts["backward"] += 1
        return mlp_backward(*args, **kwargs)

    monkeypatch.setattr(cpu_kernel, "run_forward", forward)
    monkeypatch.setattr(cpu_kernel, "mlp_backward", backward)
    return counts


def block_outputs_and_gradients(block, nodes, edges, topology):
    nodes = nodes.clone().requires_grad_()
    edges = {k: e.clone().requires_grad_() for k, e in edges.items()}
    new_nodes, new_edges = block(nodes, edges, topology)
    outs = [new_nodes, *new_edges.values()]
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [nodes, *edges.values(), *block.parameters()])
    return [o.detach() for o in outs] + list(grads)


def assert_close_float32(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        scale = e.abs().max().item() if e.numel() else 1.0
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize("hidden_layers", [0, 1, 2])
@pytest.mark.parametrize(
    "latent,edge_counts", [(32, {"mesh": 301}), (64, {"mesh": 53, "world": 13}), (128, {"mesh": 101, "world": 29})]
)
def test_kernel_block_equals_pytorch_block(calls, hidden_layers, latent, edge_counts):
    """Ragged row blocks (12) and backward chunks (96), one or two edge sets, 0-2 hidden layers; widths of 128
    take the forward's Strassen products."""
    torch.manual_seed(0)
    block = GraphNetBlock(latent, tuple(edge_counts), hidden_layers)
    g = torch.Generator().manual_seed(0)
    nodes = torch.randn(37, latent, generator=g)
    edges = {k: torch.randn(n, latent, generator=g) for k, n in edge_counts.items()}
    topology = {k: tuple(torch.randint(0, 37, (2, n), generator=g)) for k, n in edge_counts.items()}
    kernel = block_outputs_and_gradients(block, nodes, edges, topology)
    assert calls == {"forward": len(edge_counts) + 1, "backward": len(edge_counts) + 1}
    with cpu_kernel.disabled():
        reference = block_outputs_and_gradients(block, nodes, edges, topology)
    assert calls["forward"] == len(edge_counts) + 1
    assert_close_float32(kernel, reference)
    with torch.no_grad():  # the inference call (no saved tensors) gives the same outputs
        assert_close_float32([block(nodes, edges, topology)[0]], reference[:1])
        with FlopCounterMode(display=False) as counter:  # a dispatch mode sees the PyTorch path's matmuls
            block(nodes, edges, topology)
    assert calls["forward"] == 2 * (len(edge_counts) + 1) and counter.get_total_flops() > 0


@pytest.mark.parametrize("processor", [Processor, CheckpointedProcessor])
@pytest.mark.parametrize("latent,edge_counts", [(32, {"mesh": 301}), (128, {"mesh": 101, "world": 29})])
def test_processor_runs_its_blocks_in_one_kernel_call(monkeypatch, processor, latent, edge_counts):
    """Without autograd the processor's blocks are one kernel call of 3 x (edge sets + 1) passes, the later
    blocks updating the first's outputs in place: the same floats as block by block, the inputs untouched."""
    torch.manual_seed(0)
    blocks = processor([GraphNetBlock(latent, tuple(edge_counts)) for _ in range(3)])
    g = torch.Generator().manual_seed(0)
    nodes = torch.randn(37, latent, generator=g)
    edges = {k: torch.randn(n, latent, generator=g) for k, n in edge_counts.items()}
    topology = {k: tuple(torch.randint(0, 37, (2, n), generator=g)) for k, n in edge_counts.items()}
    inputs = (nodes.clone(), {k: e.clone() for k, e in edges.items()})
    calls, run_forward = [], cpu_kernel.run_forward
    monkeypatch.setattr(cpu_kernel, "run_forward", lambda passes: calls.append(len(passes)) or run_forward(passes))
    with torch.no_grad():
        one_call = blocks(nodes, edges, topology)
        assert calls == [3 * (len(edge_counts) + 1)]
        monkeypatch.setattr("gnnsim.nn.processor.run_blocks", lambda *args: None)
        by_block = blocks(nodes, edges, topology)
    assert len(calls) == 1 + 3 * (len(edge_counts) + 1)
    assert torch.equal(one_call[0], by_block[0]) and all(torch.equal(one_call[1][k], by_block[1][k]) for k in edges)
    assert torch.equal(nodes, inputs[0]) and all(torch.equal(edges[k], inputs[1][k]) for k in edges)
    with torch.no_grad(), cpu_kernel.disabled():  # and the PyTorch path's to float32 rounding
        reference = blocks(nodes, edges, topology)
    assert_close_float32([one_call[0], *one_call[1].values()], [reference[0], *reference[1].values()])


def test_kernel_on_one_and_two_threads():
    """Two threads: each sums into its own buffers (receivers forward, the projections backward), then they add up."""
    torch.manual_seed(0)
    block = GraphNetBlock(32, ("mesh", "world"))
    nodes, edges = torch.randn(20, 32), {"mesh": torch.randn(250, 32), "world": torch.randn(37, 32)}
    topology = {k: tuple(torch.randint(0, 20, (2, e.shape[0]))) for k, e in edges.items()}
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(block_outputs_and_gradients(block, nodes, edges, topology))
    finally:
        torch.set_num_threads(threads)
    assert_close_float32(*results)


def test_kernel_mlp_equals_module_with_incoming_sum():
    """By hand: ``out = x + MLP(x)`` and ``incoming[n] = sum of MLP(x) over rows received by n``."""
    torch.manual_seed(0)
    mlp = MLP(32, 32, 32)
    x = torch.randn(30, 32)
    receivers = torch.randint(0, 4, (30,))
    with torch.no_grad():
        out, incoming = fused_mlp(mlp, [x], [mlp.first.weight], residual=True, receivers=receivers, num_nodes=4)
        y = mlp(x)
    expected = torch.stack([y[receivers == n].sum(0) for n in range(4)])
    assert_close_float32([out, incoming], [x + y, expected])


def test_no_edges_and_a_single_node():
    torch.manual_seed(0)
    block = GraphNetBlock(32, ("mesh",))
    for num_nodes, num_edges in ((5, 0), (1, 3)):
        nodes, edges = torch.randn(num_nodes, 32), {"mesh": torch.randn(num_edges, 32)}
        topology = {"mesh": tuple(torch.randint(0, num_nodes, (2, num_edges)))}
        kernel = block_outputs_and_gradients(block, nodes, edges, topology)
        with cpu_kernel.disabled():
            assert_close_float32(kernel, block_outputs_and_gradients(block, nodes, edges, topology))


@pytest.mark.parametrize("bad", [4, -1, 1 << 40])
def test_out_of_range_index_is_an_error_not_a_crash(bad):
    torch.manual_seed(0)
    mlp = MLP(96, 32, 32)
    nodes, edges = torch.randn(4, 32), torch.randn(6, 32)
    senders, receivers = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1] * 6)
    gather, w_edge = split_edge_mlp(mlp, nodes, senders, receivers)
    with torch.no_grad():
        fused_mlp(mlp, [edges], [w_edge], gather, receivers=receivers, num_nodes=4)  # in range: runs
        wrong = torch.tensor([0, 1, bad, 3, 0, 1])
        with pytest.raises(IndexError, match="out of range"):
            fused_mlp(mlp, [edges], [w_edge], gather._replace(index=(senders, wrong)))
        with pytest.raises(IndexError, match="out of range"):
            fused_mlp(mlp, [edges], [w_edge], gather, receivers=wrong, num_nodes=4)


def test_flow_step_and_loss_match_the_plain_model(calls):
    """The whole simulator, optimised (kernel) against plain (concatenating): step outputs and gradients."""
    torch.manual_seed(0)
    plain, optimised = FlowSimulator(ModelConfig(32, 3, fused=False)), FlowSimulator(ModelConfig(32, 3, fused=True))
    optimised.load_state_dict(plain.state_dict())
    batch = synthetic_flow_batch()
    results = []
    for sim in (plain, optimised):
        sim.train()
        torch.manual_seed(1)
        loss = sim.loss(batch)
        results.append([loss, *torch.autograd.grad(loss, list(sim.parameters()))])
    # forward: 3 blocks' two MLPs and the two encoders; backward: not the encoders' (inputs of 11 and 3 features)
    assert calls["forward"] == 3 * 2 + 2 and calls["backward"] == 3 * 2
    assert_close_float32(results[1], results[0])


def test_build_failure_warns_once_and_runs_the_pytorch_path(tmp_path):
    code = (
        "import warnings, torch\n"
        "from gnnsim.nn import cpu_kernel\n"
        "from gnnsim.nn.blocks import GraphNetBlock\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    assert cpu_kernel.library() is None and cpu_kernel.library() is None\n"
        "    block = GraphNetBlock(32, ('mesh',))\n"
        "    out = block(torch.randn(3, 32), {'mesh': torch.randn(4, 32)}, {'mesh': (torch.tensor([0, 1, 2, 0]),"
        " torch.tensor([1, 2, 0, 2]))})\n"
        "print(len(seen), seen[0].message if seen else '')\n"
    )
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "GNNSIM_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    count, message = done.stdout.split(" ", 1)
    assert count == "1" and "no fused CPU kernel" in message and "no-such-cc" in message
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_disabled_by_environment(tmp_path):
    code = "from gnnsim.nn import cpu_kernel; print(cpu_kernel.library())"
    env = {**os.environ, "GNNSIM_CPU_KERNEL": "0", "GNNSIM_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "None" and not any(tmp_path.iterdir())


def test_mlp_without_layer_norm_two_inputs_and_a_bias(calls):
    """The node MLP's shape (two inputs, the first Linear's own bias), here without LayerNorm or residual."""
    torch.manual_seed(0)
    mlp = MLP(64, 32, 32, hidden_layers=1, layer_norm=False)
    x1, x2 = torch.randn(29, 32, requires_grad=True), torch.randn(29, 32, requires_grad=True)

    def run():
        out = fused_mlp(mlp, [x1, x2], mlp.first.weight.split([32, 32], dim=1))[0]
        return [out, *torch.autograd.grad(out.square().sum(), [x1, x2, *mlp.parameters()])]

    kernel = run()
    assert calls == {"forward": 1, "backward": 1}
    with cpu_kernel.disabled():
        assert_close_float32(kernel, run())
    assert_close_float32(kernel[:1], [mlp(torch.cat([x1, x2], dim=1))])


@pytest.mark.parametrize("hidden,out,latent", [(45, 32, 32), (64, 96, 32), (111, 64, 32), (64, 32, 8)])
def test_hidden_widths_are_padded_to_the_kernels_panels(calls, hidden, out, latent):
    """Hidden widths that are not multiples of 32 run padded with zero units, widths differing layer to layer:
    the PyTorch path's outputs and every gradient (a gathered edge MLP and a two-input node MLP). Latents of 8
    run the kernel forward (any input width) and the PyTorch backward (the kernel's takes multiples of 32)."""
    torch.manual_seed(0)
    edge_mlp, node_mlp = MLP(3 * latent, hidden, out), MLP(2 * latent, hidden, out)
    g = torch.Generator().manual_seed(0)
    nodes, edges, other = (torch.randn(n, latent, generator=g).requires_grad_() for n in (23, 150, 23))
    senders, receivers = torch.randint(0, 23, (2, 150), generator=g)

    def outputs_and_gradients():
        gather, w_edge = split_edge_mlp(edge_mlp, nodes, senders, receivers)
        e, incoming = fused_mlp(edge_mlp, [edges], [w_edge], gather, receivers=receivers, num_nodes=23)
        v = fused_mlp(node_mlp, [nodes, other], node_mlp.first.weight.split([latent, latent], dim=1))[0]
        outs = [e, incoming, v]
        loss = sum((o * torch.randn(o.shape, generator=torch.Generator().manual_seed(1))).sum() for o in outs)
        params = [*edge_mlp.parameters(), *node_mlp.parameters()]
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, [nodes, edges, other, *params]))

    kernel = outputs_and_gradients()
    assert calls == {"forward": 2, "backward": 2 if latent == 32 else 0}
    with cpu_kernel.disabled():
        assert_close_float32(kernel, outputs_and_gradients())
