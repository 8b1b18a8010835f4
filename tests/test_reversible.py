"""Reversible processor: exact inverse, gradients equal to plain autograd, memory independent of depth."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import grid_mesh, write_synthetic_flow
from torch.utils.flop_counter import FlopCounterMode

from gnnsim.checkpoint import load_checkpoint
from gnnsim.data.dataset import FrameDataset, trajectory_tensors
from gnnsim.graph import cells_to_edges
from gnnsim.nn.blocks import GraphNetBlock
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.nn.processor import CheckpointedProcessor, Processor
from gnnsim.nn.reversible import ReversibleBlock, ReversibleProcessor
from gnnsim.simulators.flow import FlowSimulator
from gnnsim.training import TrainConfig, train


def mesh_graph(nx=5, ny=4, seed=0):
    """Return (senders, receivers) of a small triangulated grid."""
    _, cells, _ = grid_mesh(nx, ny, jitter=0.2, seed=seed)
    senders, receivers = cells_to_edges(torch.from_numpy(cells))
    return senders, receivers


def random_topology(num_nodes, edge_counts, seed=0):
    """Return random directed edge sets {name: (senders, receivers)} (repeats and self-loops allowed)."""
    g = torch.Generator().manual_seed(seed)
    return {k: tuple(torch.randint(0, num_nodes, (2, n), generator=g)) for k, n in edge_counts.items()}


def latents(num_nodes, topology, latent, dtype, seed=1):
    """Return random node latents [N, L] and edge latents {name: [E_k, L]}, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    nodes = torch.randn(num_nodes, latent, generator=g, dtype=dtype).requires_grad_()
    edges = {
        k: torch.randn(len(s), latent, generator=g, dtype=dtype).requires_grad_()
        for k, (s, _) in topology.items()
    }
    return nodes, edges


def processor(latent, num_blocks, edge_sets, dtype=torch.float64, fused=True, seed=0):
    """Return a seeded ReversibleProcessor in ``dtype``."""
    torch.manual_seed(seed)
    return ReversibleProcessor.build(latent, num_blocks, edge_sets, 2, fused).to(dtype)


def weighted_sum(nodes, edges, seed=2):
    """A scalar that depends on every output entry, with fixed random weights."""
    g = torch.Generator().manual_seed(seed)
    total = (nodes * torch.randn(nodes.shape, generator=g, dtype=nodes.dtype)).sum()
    for e in edges.values():
        total = total + (e * torch.randn(e.shape, generator=g, dtype=e.dtype)).sum()
    return total


def gradients(proc, nodes, edges, topology, loss=weighted_sum):
    """Return the outputs and the gradients of ``loss`` wrt node and edge inputs and every parameter."""
    out_nodes, out_edges = proc(nodes, edges, topology)
    wrt = [nodes, *edges.values(), *proc.parameters()]
    return (out_nodes, out_edges), torch.autograd.grad(loss(out_nodes, out_edges), wrt, allow_unused=True)


def assert_relative(actual, expected, rtol):
    """Assert ``|a - e| / |e| < rtol`` (Frobenius norms) for each pair of tensors."""
    for a, e in zip(actual, expected, strict=True):
        assert ((a - e).norm() / e.norm().clamp_min(1e-30)).item() < rtol


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("fused", [True, False])
def test_inverse_recovers_node_and_edge_latents(dtype, atol, fused):
    senders, receivers = mesh_graph()
    topology = {"mesh": (senders, receivers)}
    proc = processor(16, 15, ("mesh",), dtype, fused)
    nodes, edges = latents(20, topology, 16, dtype)
    with torch.no_grad():
        out_nodes, out_edges = proc(nodes, edges, topology)
        back_nodes, back_edges = proc.inverse(out_nodes, out_edges, topology)
    assert (out_nodes - nodes).abs().max() > 1  # the blocks do change the latents
    torch.testing.assert_close(back_nodes, nodes.detach(), rtol=0, atol=atol)
    torch.testing.assert_close(back_edges["mesh"], edges["mesh"].detach(), rtol=0, atol=atol)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("edge_sets", [("mesh",), ("mesh", "world")])
def test_gradients_equal_plain_autograd(edge_sets, fused):
    topology = random_topology(12, dict(zip(edge_sets, (40, 17))))
    proc = processor(8, 4, edge_sets, fused=fused)
    nodes, edges = latents(12, topology, 8, torch.float64)
    (rev_nodes, rev_edges), rev_grads = gradients(proc, nodes, edges, topology)
    proc.reversible = False
    (ref_nodes, ref_edges), ref_grads = gradients(proc, nodes, edges, topology)
    assert torch.equal(rev_nodes, ref_nodes)  # forward runs the same operations
    assert all(torch.equal(rev_edges[k], ref_edges[k]) for k in edge_sets)
    assert len(rev_grads) == 1 + len(edge_sets) + len(list(proc.parameters()))
    assert_relative(rev_grads, ref_grads, 1e-8)


def test_gradients_when_only_node_outputs_are_used():
    """Edge outputs get no gradient (as in EncodeProcessDecode); inputs and parameters get the right one."""
    topology = random_topology(10, {"mesh": 30})
    proc = processor(6, 3, ("mesh",))
    nodes, edges = latents(10, topology, 6, torch.float64)

    def loss(n, _):
        return n.square().sum()

    _, rev_grads = gradients(proc, nodes, edges, topology, loss)
    proc.reversible = False
    _, ref_grads = gradients(proc, nodes, edges, topology, loss)
    assert_relative(rev_grads, ref_grads, 1e-8)


@pytest.mark.parametrize(("num_nodes", "num_edges"), [(5, 0), (1, 0), (1, 3)])
def test_corner_graphs(num_nodes, num_edges):
    """No edges, a single node, self-loops only: inverse and gradients still hold."""
    topology = random_topology(num_nodes, {"mesh": num_edges})
    proc = processor(8, 3, ("mesh",))
    nodes, edges = latents(num_nodes, topology, 8, torch.float64)
    (out_nodes, out_edges), rev_grads = gradients(proc, nodes, edges, topology)
    back_nodes, _ = proc.inverse(out_nodes, out_edges, topology)
    torch.testing.assert_close(back_nodes, nodes.detach(), rtol=0, atol=1e-10)
    proc.reversible = False
    assert_relative(rev_grads, gradients(proc, nodes, edges, topology)[1], 1e-8)


def test_gradcheck_reversible_function():
    topology = random_topology(6, {"mesh": 10, "world": 4})
    torch.manual_seed(0)
    proc = ReversibleProcessor(
        [ReversibleBlock(4, ("mesh", "world"), 2, True, 3, 3) for _ in range(2)]
    ).double()
    nodes, edges = latents(6, topology, 4, torch.float64)
    params = tuple(proc.parameters())

    def fn(nodes, mesh, world, *_params):  # parameters are perturbed in place by gradcheck
        out_nodes, out_edges = proc(nodes, {"mesh": mesh, "world": world}, topology)
        return out_nodes, out_edges["mesh"], out_edges["world"]

    assert torch.autograd.gradcheck(fn, (nodes, edges["mesh"], edges["world"], *params), fast_mode=True)


def test_batched_graphs_equal_separate_graphs():
    (s1, r1), (s2, r2) = mesh_graph(4, 3, seed=0), mesh_graph(5, 3, seed=1)
    proc = processor(8, 3, ("mesh",))
    n1, e1 = latents(12, {"mesh": (s1, r1)}, 8, torch.float64, seed=1)
    n2, e2 = latents(15, {"mesh": (s2, r2)}, 8, torch.float64, seed=2)
    out1, edges1 = proc(n1, e1, {"mesh": (s1, r1)})
    out2, edges2 = proc(n2, e2, {"mesh": (s2, r2)})
    batched = {"mesh": (torch.cat([s1, s2 + 12]), torch.cat([r1, r2 + 12]))}
    out, edges = proc(torch.cat([n1, n2]), {"mesh": torch.cat([e1["mesh"], e2["mesh"]])}, batched)
    torch.testing.assert_close(out, torch.cat([out1, out2]), rtol=0, atol=1e-12)
    torch.testing.assert_close(edges["mesh"], torch.cat([edges1["mesh"], edges2["mesh"]]), rtol=0, atol=1e-12)
    grad = torch.autograd.grad(out.square().sum(), n1)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(out1.square().sum(), n1)[0], rtol=1e-10, atol=1e-12)


def test_standard_and_checkpointed_processors_compute_the_same_function():
    topology = random_topology(10, {"mesh": 30, "world": 8})
    torch.manual_seed(0)
    blocks = [GraphNetBlock(8, ("mesh", "world")).double() for _ in range(3)]
    nodes, edges = latents(10, topology, 8, torch.float64)
    (std_nodes, std_edges), std_grads = gradients(Processor(blocks), nodes, edges, topology)
    (ckpt_nodes, ckpt_edges), ckpt_grads = gradients(CheckpointedProcessor(blocks), nodes, edges, topology)
    assert torch.equal(std_nodes, ckpt_nodes) and all(
        torch.equal(std_edges[k], ckpt_edges[k]) for k in topology
    )
    assert_relative(ckpt_grads, std_grads, 1e-12)


def test_no_grad_runs_forward_only():
    topology = random_topology(10, {"mesh": 30})
    proc = processor(8, 3, ("mesh",))
    nodes, edges = latents(10, topology, 8, torch.float64)
    with torch.no_grad():
        out_nodes, out_edges = proc(nodes, edges, topology)
    assert not out_nodes.requires_grad and out_nodes.grad_fn is None
    assert torch.equal(out_nodes, proc(nodes, edges, topology)[0])
    with torch.inference_mode():
        assert torch.equal(out_edges["mesh"], proc(nodes, edges, topology)[1]["mesh"])


def test_saved_memory_does_not_grow_with_depth():
    """Only the stack's output is saved for backward, whatever the depth; plain autograd saves per block."""
    topology = random_topology(50, {"mesh": 200})
    nodes, edges = latents(50, topology, 8, torch.float32)

    def saved_bytes(proc):
        sizes = []

        def pack(t):
            sizes.append(
                t.numel() * t.element_size()
                if t.is_floating_point() and not isinstance(t, torch.nn.Parameter)
                else 0
            )
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            proc(nodes, edges, topology)
        return sum(sizes)

    outputs = (50 + 200) * 8 * 4
    assert saved_bytes(processor(8, 2, ("mesh",), torch.float32)) == outputs
    assert saved_bytes(processor(8, 8, ("mesh",), torch.float32)) == outputs
    plain = processor(8, 8, ("mesh",), torch.float32)
    plain.reversible = False
    assert saved_bytes(plain) > 20 * outputs


@pytest.mark.parametrize("edge_sets", [("mesh",), ("mesh", "world")])
def test_parameters_and_flops_match_the_standard_block(edge_sets):
    """Parameters match to 0.5 %, and so do unfused FLOPs (each MLP runs once per edge or node).

    Fused, the first layer's node part runs per node: the half-width blocks do ~13 % less of it and ~8 % more
    per-edge work, ~10 % more in all on this small mesh.
    """
    standard = sum(p.numel() for p in GraphNetBlock(128, edge_sets).parameters())
    reversible = sum(p.numel() for p in ReversibleBlock(128, edge_sets).parameters())
    assert abs(reversible / standard - 1) < 0.005
    senders, receivers = mesh_graph(8, 6)  # a triangle mesh: ~6 directed edges per node
    topology = {k: (senders, receivers) for k in edge_sets}
    nodes, edges = latents(48, topology, 128, torch.float32)
    for fused, rtol in ((False, 0.006), (True, 0.12)):
        flops = []
        for proc in (
            Processor([GraphNetBlock(128, edge_sets, fused=fused)]),
            ReversibleProcessor.build(128, 1, edge_sets, 2, fused),
        ):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                proc(nodes, edges, topology)
            flops.append(counter.get_total_flops())
        assert abs(flops[1] / flops[0] - 1) < rtol


def test_cpu_bfloat16_autocast_keeps_a_float32_stream():
    """Under autocast the couplings run in bfloat16 in forward and backward; the stream stays float32."""
    topology = random_topology(20, {"mesh": 60})
    proc = processor(16, 3, ("mesh",), torch.float32)
    nodes, edges = latents(20, topology, 16, torch.float32)
    results = []
    for reversible in (True, False):
        proc.reversible = reversible
        with torch.autocast("cpu", dtype=torch.bfloat16):
            (out_nodes, out_edges), grads = gradients(proc, nodes, edges, topology)
        assert out_nodes.dtype == out_edges["mesh"].dtype == torch.float32
        results.append(grads)
    assert_relative(results[0], results[1], 1e-3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="even"):
        ReversibleProcessor.build(7, 2, ("mesh",))
    proc = processor(8, 2, ("mesh",))
    topology = random_topology(5, {"mesh": 6})
    nodes, edges = latents(5, topology, 8, torch.float64)
    with pytest.raises(ValueError, match=r"nodes \[N, 8\] expected"):
        proc(nodes[:, :6], edges, topology)
    with pytest.raises(ValueError, match="edge sets"):
        proc(nodes, {"world": edges["mesh"]}, topology)


def test_training_matches_plain_autograd_and_rollout_runs(tmp_path):
    split = write_synthetic_flow(tmp_path / "train.h5")
    cfg = ModelConfig(latent_size=16, num_blocks=3, processor="reversible")
    train_cfg = TrainConfig(steps=30, batch_size=2, lr=3e-3, warmup_steps=5, log_every=1, device="cpu")
    curves, sims = [], []
    for reversible in (True, False):
        torch.manual_seed(0)
        sim = FlowSimulator(cfg)
        assert isinstance(sim.model.processor, ReversibleProcessor)
        sim.model.processor.reversible = reversible
        run_dir = tmp_path / f"run_{reversible}"
        train(sim, FrameDataset(split, sim.window, sim.fields), train_cfg, run_dir, progress=False)
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        curves.append([json.loads(line)["loss"] for line in lines])
        sims.append(sim)
    assert len(curves[0]) == 30
    torch.testing.assert_close(torch.tensor(curves[0]), torch.tensor(curves[1]), rtol=1e-4, atol=0)
    assert sum(curves[0][-5:]) < 0.9 * sum(curves[0][5:10])  # it learns

    sim = sims[0].eval()  # rollouts run under torch.no_grad: the plain forward pass
    traj = trajectory_tensors(FrameDataset(split, sim.window, sim.fields).split, 0, sim.fields)
    rollout = sim.rollout(traj, num_steps=5)
    assert rollout["velocity"].shape == (6, *traj["velocity"].shape[1:])
    assert torch.isfinite(rollout["velocity"]).all()
    fixed = ~FlowSimulator.loss_mask(traj["node_type"])
    torch.testing.assert_close(rollout["velocity"][:, fixed], traj["velocity"][:6, fixed])
    with torch.no_grad():
        next_v, _ = sim.step(traj["mesh_pos"], traj["node_type"], traj["edge_index"], traj["velocity"][0])
    torch.testing.assert_close(rollout["velocity"][1][~fixed], next_v[~fixed])


def train_tiny_reversible(data_path, run_dir) -> None:
    """Train a seeded tiny reversible flow model without noise for 6 steps (2 warm-up), global batch 4."""
    torch.manual_seed(0)
    sim = FlowSimulator(ModelConfig(latent_size=16, num_blocks=2, processor="reversible"), noise_std=0.0)
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, device="cpu")
    train(sim, FrameDataset(data_path, sim.window, sim.fields), cfg, run_dir, progress=False)


def ddp_worker(rank: int, init_file: str, data_path, run_dir) -> None:
    """Join a 2-process gloo group and train."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        train_tiny_reversible(data_path, run_dir)
    finally:
        dist.destroy_process_group()


def test_ddp_averages_the_gradients_the_function_returns(tmp_path):
    """Two DistributedDataParallel processes (half the batch each) end with one process's weights."""
    data_path = write_synthetic_flow(tmp_path / "train.h5")
    mp.spawn(
        ddp_worker, args=(str(tmp_path / "rendezvous"), data_path, tmp_path / "two"), nprocs=2, join=True
    )
    train_tiny_reversible(data_path, tmp_path / "one")
    one, two = (load_checkpoint(tmp_path / name / "checkpoint.pt")["state_dict"] for name in ("one", "two"))
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)
    initial = FlowSimulator(ModelConfig(latent_size=16, num_blocks=2, processor="reversible")).state_dict()
    key = "model.processor.blocks.0.phi1.mesh.layers.0.weight"  # first coupling: the last gradient computed
    assert (one[key] - initial[key]).abs().max() > 1e-4
