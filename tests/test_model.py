"""Properties of the learned core and the flow domain on tiny hand-built graphs."""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import grid_mesh, synthetic_flow_batch
from gnnsim.graph import EdgeSet, Graph, cells_to_edges
from gnnsim.nn.encode_process_decode import EncodeProcessDecode, ModelConfig
from gnnsim.simulators.flow import FlowSimulator

CFG = ModelConfig(latent_size=16, num_blocks=3)


def random_graph(n: int, e: int, seed: int, dtype=torch.float64) -> Graph:
    g = torch.Generator().manual_seed(seed)
    senders, receivers = torch.randint(0, n, (2, e), generator=g)
    return Graph(
        torch.randn(n, 5, generator=g, dtype=dtype),
        {"mesh": EdgeSet(torch.randn(e, 3, generator=g, dtype=dtype), senders, receivers)},
    )


@pytest.fixture
def model():
    torch.manual_seed(0)
    return EncodeProcessDecode.build(5, {"mesh": 3}, 2, CFG).double().eval()


def test_batch_equals_concatenated_singles(model):
    g1, g2 = random_graph(6, 10, 1), random_graph(4, 7, 2)
    e1, e2 = g1.edge_sets["mesh"], g2.edge_sets["mesh"]
    batched = Graph(
        torch.cat([g1.node_features, g2.node_features]),
        {"mesh": EdgeSet(torch.cat([e1.features, e2.features]), torch.cat([e1.senders, e2.senders + 6]),
                         torch.cat([e1.receivers, e2.receivers + 6]))},
    )
    torch.testing.assert_close(model(batched), torch.cat([model(g1), model(g2)]), rtol=1e-12, atol=1e-12)


def test_permutation_equivariance(model):
    g = random_graph(7, 15, 3)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    inv = torch.argsort(perm)  # new id of old node i is inv[i]
    es = g.edge_sets["mesh"]
    edge_perm = torch.randperm(15, generator=torch.Generator().manual_seed(1))
    permuted = Graph(
        g.node_features[perm],
        {"mesh": EdgeSet(es.features[edge_perm], inv[es.senders[edge_perm]], inv[es.receivers[edge_perm]])},
    )
    torch.testing.assert_close(model(permuted), model(g)[perm], rtol=1e-10, atol=1e-12)


def test_graph_without_edges_and_single_node(model):
    for n in (1, 3):
        g = Graph(torch.randn(n, 5, dtype=torch.float64),
                  {"mesh": EdgeSet(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.long),
                                   torch.zeros(0, dtype=torch.long))})
        out = model(g)
        assert out.shape == (n, 2) and torch.isfinite(out).all()
    # An isolated node's output does not depend on the rest of the batch.
    g = random_graph(5, 8, 4)
    es = g.edge_sets["mesh"]
    keep = (es.senders != 4) & (es.receivers != 4)
    g = Graph(g.node_features, {"mesh": EdgeSet(es.features[keep], es.senders[keep], es.receivers[keep])})
    alone = Graph(g.node_features[4:], {"mesh": EdgeSet(es.features[:0], es.senders[:0], es.receivers[:0])})
    torch.testing.assert_close(model(g)[4:], model(alone), rtol=1e-12, atol=1e-12)


def test_fused_edge_update_equals_concatenation():
    torch.manual_seed(0)
    fused = EncodeProcessDecode.build(5, {"mesh": 3}, 2, CFG).double()
    plain = EncodeProcessDecode.build(5, {"mesh": 3}, 2, ModelConfig(16, 3, fused=False)).double()
    plain.load_state_dict(fused.state_dict())
    g = random_graph(9, 20, 5)
    out_f, out_p = fused(g), plain(g)
    torch.testing.assert_close(out_f, out_p, rtol=1e-12, atol=1e-12)
    grads_f = torch.autograd.grad(out_f.square().sum(), list(fused.parameters()))
    grads_p = torch.autograd.grad(out_p.square().sum(), list(plain.parameters()))
    for a, b in zip(grads_f, grads_p):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_processor_changes_output_only_through_edges():
    # With one block, a node's output depends only on itself and its in-neighbours.
    torch.manual_seed(0)
    model = EncodeProcessDecode.build(5, {"mesh": 3}, 2, ModelConfig(8, 1)).double()
    g = random_graph(6, 0, 6)
    es = EdgeSet(torch.randn(1, 3, dtype=torch.float64), torch.tensor([0]), torch.tensor([1]))
    g = Graph(g.node_features, {"mesh": es})
    before = model(g)
    g.node_features[0] += 1.0
    after = model(g)
    changed = (before - after).abs().sum(1) > 0
    assert changed.tolist() == [True, True, False, False, False, False]


def flow_inputs(shift=(0.0, 0.0)):
    pos, cells, node_type = grid_mesh(6, 4, jitter=0.3)
    pos = torch.from_numpy(pos).double() + torch.tensor(shift, dtype=torch.float64)
    vel = torch.randn(pos.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return pos, torch.from_numpy(node_type), cells_to_edges(torch.from_numpy(cells)), vel


def test_flow_prediction_is_translation_invariant():
    torch.manual_seed(0)
    sim = FlowSimulator(CFG).double()
    sim.train()
    sim.graph(*flow_inputs())  # accumulate some normaliser statistics, then freeze
    sim.eval()
    a = sim.step(*flow_inputs())
    b = sim.step(*flow_inputs(shift=(3.5, -1.25)))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


def test_edge_set_mismatch_is_reported(model):
    g = random_graph(3, 2, 0)
    g.edge_sets["world"] = g.edge_sets["mesh"]
    with pytest.raises(ValueError, match=r"graph edge sets \['mesh', 'world'\] != model's \['mesh'\]"):
        model(g)


def test_bf16_autocast_runs_linears_in_bf16_and_keeps_the_latent_stream_float32():
    """Under autocast (CPU here; the GPU path is the same code) the Linears run in bfloat16, while LayerNorm, the
    residual sums, the sums over edges and the outputs stay float32 and the normaliser statistics float64."""
    aten = torch.ops.aten
    seen = collections.defaultdict(set)

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (aten.addmm, aten.mm, aten.native_layer_norm, aten.index_add_, aten.index_add):
                seen[str(func.overloadpacket)].add((out[0] if isinstance(out, tuple) else out).dtype)
            return out

    batch = synthetic_flow_batch()
    losses = {}
    for amp in (False, True):
        torch.manual_seed(0)
        sim = FlowSimulator(ModelConfig(latent_size=16, num_blocks=2))
        with Dtypes(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses[amp] = sim.loss(batch)
            out = sim.model(sim.graph(batch["mesh_pos"], batch["node_type"], batch["edge_index"], batch["velocity"][0]))
        losses[amp].backward()
        assert out.dtype == torch.float32 and losses[amp].dtype == torch.float32
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in sim.model.parameters())
        assert sim.node_normalizer.sum.dtype == torch.float64
    assert seen["aten.addmm"] == {torch.float32, torch.bfloat16}  # float32 without autocast, bfloat16 with
    assert seen["aten.native_layer_norm"] == {torch.float32} and seen["aten.index_add_"] == {torch.float32}
    torch.testing.assert_close(losses[True], losses[False], rtol=0.05, atol=0)
