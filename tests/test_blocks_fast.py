"""The fused GraphNetBlock computes the plain (concatenating) block's function: outputs and gradients."""

import pytest
import torch

import gnnsim.nn.blocks as blocks
from gnnsim.nn.blocks import GraphNetBlock, TiledMLP, _Layout, edge_mlp_forward, fused_mlp
from gnnsim.nn.mlp import MLP


def random_graph(num_nodes: int, edge_counts: dict[str, int], latent: int, seed: int = 0):
    """Return float64 node and per-set edge latents (requiring gradients) and a random topology."""
    g = torch.Generator().manual_seed(seed)
    nodes = torch.randn(num_nodes, latent, generator=g, dtype=torch.float64, requires_grad=True)
    edges = {k: torch.randn(n, latent, generator=g, dtype=torch.float64) for k, n in edge_counts.items()}
    edges = {k: e.requires_grad_() for k, e in edges.items()}
    topology = {k: tuple(torch.randint(0, num_nodes, (2, n), generator=g)) for k, n in edge_counts.items()}
    return nodes, edges, topology


def outputs_and_gradients(block: GraphNetBlock, nodes, edges, topology):
    """Return the block's outputs and the gradients of a random projection of them (inputs, then parameters)."""
    new_nodes, new_edges = block(nodes, edges, topology)
    outs = [new_nodes, *new_edges.values()]
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [nodes, *edges.values(), *block.parameters()])
    return [o.detach() for o in outs], grads


def assert_close_lists(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@pytest.fixture
def small_tiles(monkeypatch):
    """Make tiles a few rows long, so every case crosses tile boundaries and ends with a ragged tile."""
    monkeypatch.setattr(blocks, "TILE_ELEMENTS", 7 * 8)


@pytest.mark.parametrize("hidden_layers", [0, 1, 2])
@pytest.mark.parametrize("edge_counts", [{"mesh": 53}, {"mesh": 41, "world": 17}])
def test_fused_block_equals_plain_block(small_tiles, hidden_layers, edge_counts):
    torch.manual_seed(0)
    fused = GraphNetBlock(8, tuple(edge_counts), hidden_layers, fused=True).double()
    plain = GraphNetBlock(8, tuple(edge_counts), hidden_layers, fused=False).double()
    plain.load_state_dict(fused.state_dict())
    graph = random_graph(23, edge_counts, 8)
    out_f, grads_f = outputs_and_gradients(fused, *graph)
    out_p, grads_p = outputs_and_gradients(plain, *graph)
    assert_close_lists(out_f, out_p)
    assert_close_lists(grads_f, grads_p)


def test_inference_path_equals_training_path(small_tiles):
    torch.manual_seed(0)
    block = GraphNetBlock(8, ("mesh",)).double()
    nodes, edges, topology = random_graph(19, {"mesh": 61}, 8)
    trained = block(nodes, edges, topology)
    with torch.no_grad():
        inferred = block(nodes, edges, topology)
    assert_close_lists([inferred[0], inferred[1]["mesh"]], [trained[0].detach(), trained[1]["mesh"].detach()])


def test_whole_tensor_path_equals_tiled_path(small_tiles, monkeypatch):
    torch.manual_seed(0)
    block = GraphNetBlock(8, ("mesh", "world")).double()
    graph = random_graph(19, {"mesh": 37, "world": 11}, 8)
    tiled = outputs_and_gradients(block, *graph)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the GPU / torch.compile code path
    whole = outputs_and_gradients(block, *graph)
    assert_close_lists(whole[0] + list(whole[1]), tiled[0] + list(tiled[1]))


def test_edge_mlp_without_layer_norm_and_narrow_hidden_layers(small_tiles):
    """The reversible processor's MLPs: hidden width != output width; here also without LayerNorm."""
    torch.manual_seed(0)
    mlp = MLP(3 * 6, 11, 5, hidden_layers=2, layer_norm=False).double()
    nodes, edges, topology = random_graph(13, {"mesh": 29}, 6)
    senders, receivers = topology["mesh"]
    results = []
    for fused in (True, False):
        out = edge_mlp_forward(mlp, nodes, edges["mesh"], senders, receivers, fused)
        results.append([out, *torch.autograd.grad(out.square().sum(), [nodes, edges["mesh"], *mlp.parameters()])])
    assert_close_lists(*results)


def test_no_edges_and_a_single_node():
    torch.manual_seed(0)
    fused = GraphNetBlock(4, ("mesh",)).double()
    plain = GraphNetBlock(4, ("mesh",), fused=False).double()
    plain.load_state_dict(fused.state_dict())
    for graph in (random_graph(5, {"mesh": 0}, 4), random_graph(1, {"mesh": 3}, 4)):
        out_f, grads_f = outputs_and_gradients(fused, *graph)
        out_p, grads_p = outputs_and_gradients(plain, *graph)
        assert_close_lists(out_f + list(grads_f), out_p + list(grads_p))


def test_tiled_mlp_gradcheck(small_tiles):
    torch.manual_seed(0)
    mlp = MLP(3 + 2, 4, 3, hidden_layers=1).double()
    x1, x2 = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    nodes, node_weights = torch.randn(6, 2, dtype=torch.float64), torch.randn(2, 4, 2, dtype=torch.float64).unbind()
    index, receivers = tuple(torch.randint(0, 6, (2, 9))), torch.randint(0, 5, (9,))
    weights = mlp.first.weight.detach().split([3, 2], dim=1)
    params = [p.detach() for p in mlp.parameters()][1:]  # the first bias, the later Linear, the LayerNorm
    inputs = [x1, x2, *weights, *params, nodes, *node_weights]
    for t in inputs:
        t.requires_grad_(True)
    layout = _Layout(num_inputs=2, num_layers=1, gather=2, eps=mlp.norm.eps, residual=False, scatter=True)

    def fn(*tensors):
        return TiledMLP.apply(layout, 5, receivers, *index, *tensors)

    assert torch.autograd.gradcheck(fn, inputs)


def test_fused_mlp_residual_and_incoming_sum():
    torch.manual_seed(0)
    mlp = MLP(4, 4, 4).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    receivers = torch.tensor([0, 2, 2, 1, 0, 2, 2, 1, 1, 0])
    out, incoming = fused_mlp(mlp, [x], [mlp.first.weight], residual=True, receivers=receivers, num_nodes=4)
    y = mlp(x)
    torch.testing.assert_close(out, x + y)
    torch.testing.assert_close(incoming, torch.zeros(4, 4, dtype=torch.float64).index_add_(0, receivers, y))


@pytest.mark.slow
def test_compiled_block_equals_eager_block():
    torch.manual_seed(0)
    block = GraphNetBlock(8, ("mesh",))
    nodes, edges, topology = random_graph(17, {"mesh": 40}, 8)
    nodes = nodes.float().detach().requires_grad_()
    edges = {k: v.float().detach().requires_grad_() for k, v in edges.items()}
    eager = outputs_and_gradients(block, nodes, edges, topology)
    block.compile(dynamic=True)
    compiled = outputs_and_gradients(block, nodes, edges, topology)
    for a, e in zip(compiled[0] + list(compiled[1]), eager[0] + list(eager[1]), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
