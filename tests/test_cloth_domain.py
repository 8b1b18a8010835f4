"""The cloth domain: world edges, second-order integration, handles, invariance."""

import itertools

import numpy as np
import pytest
import torch

from conftest import grid_mesh
from gnnsim.graph import NodeType, cells_to_edges
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators.cloth import ClothSimulator, world_edges

CFG = ModelConfig(latent_size=16, num_blocks=2)


def folded_sheet(nx=7, ny=5, steps=6, seed=0):
    """A sheet folded over itself (so world edges exist), moving with a smooth nonlinear motion."""
    pos, cells, _ = grid_mesh(nx, ny, jitter=0.2, seed=seed)
    x, y = pos[:, 0].astype(np.float64), pos[:, 1].astype(np.float64)
    theta = np.pi * x  # fold along x: the two ends come close in 3D
    base = np.stack([0.3 * np.cos(theta), y, 0.3 * np.sin(theta) * 0.2], -1)
    t = np.arange(steps)[:, None, None]
    world = base[None] + 0.01 * np.sin(0.5 * t + 3 * base[None])
    node_type = np.where(x == 0, NodeType.HANDLE, NodeType.NORMAL)
    return {
        "mesh_pos": torch.from_numpy(pos).double(),
        "node_type": torch.from_numpy(node_type),
        "edge_index": cells_to_edges(torch.from_numpy(cells)),
        "world_pos": torch.from_numpy(world),
    }


def test_world_edges_match_brute_force_and_exclude_mesh_neighbours():
    traj = folded_sheet()
    pos, mesh = traj["world_pos"][0], traj["edge_index"]
    radius = 0.12
    got = set(map(tuple, world_edges(pos, mesh, radius).T.tolist()))
    mesh_pairs = set(map(tuple, mesh.T.tolist()))
    n = pos.shape[0]
    want = {(i, j) for i, j in itertools.product(range(n), range(n))
            if i != j and (i, j) not in mesh_pairs and torch.linalg.norm(pos[i] - pos[j]) < radius}
    assert want and got == want
    assert not got & mesh_pairs


def test_world_edges_never_cross_graphs_of_a_batch():
    pos = torch.zeros(4, 3)  # all nodes on top of each other
    ids = torch.tensor([0, 0, 1, 1])
    edges = world_edges(pos, torch.zeros(2, 0, dtype=torch.long), 1.0, ids)
    assert set(map(tuple, edges.T.tolist())) == {(0, 1), (1, 0), (2, 3), (3, 2)}


def test_zero_acceleration_gives_constant_velocity_in_closed_form():
    traj = folded_sheet()
    out = ClothSimulator.baseline(traj)["world_pos"]  # [T-1, N, 3], index 0 = frame 1
    x0, x1 = traj["world_pos"][0], traj["world_pos"][1]
    free = traj["node_type"] == NodeType.NORMAL
    for k in range(out.shape[0]):
        expected = x1 + k * (x1 - x0)  # x_{1+k} = x_1 + k v
        torch.testing.assert_close(out[k][free], expected[free], rtol=1e-12, atol=1e-12)


def test_rollout_keeps_handles_on_ground_truth():
    torch.manual_seed(0)
    sim = ClothSimulator(CFG, world_edge_radius=0.12).double().eval()
    traj = folded_sheet()
    out = sim.rollout(traj)["world_pos"]
    handles = traj["node_type"] == NodeType.HANDLE
    torch.testing.assert_close(out[:, handles], traj["world_pos"][1:, handles], rtol=0, atol=0)
    assert torch.isfinite(out).all() and out.shape == (traj["world_pos"].shape[0] - 1, *traj["world_pos"].shape[1:])


def test_prediction_is_translation_invariant():
    torch.manual_seed(0)
    sim = ClothSimulator(CFG, world_edge_radius=0.12).double()
    traj = folded_sheet()
    args = (traj["mesh_pos"], traj["node_type"], traj["edge_index"])
    sim.train()
    sim.graph(*args, traj["world_pos"][1], traj["world_pos"][0])  # some normaliser statistics, then freeze
    sim.eval()
    shift = torch.tensor([1.5, -2.0, 0.75], dtype=torch.float64)
    a = sim.step(*args, traj["world_pos"][1], traj["world_pos"][0])
    b = sim.step(traj["mesh_pos"] + shift[:2], traj["node_type"], traj["edge_index"],
                 traj["world_pos"][1] + shift, traj["world_pos"][0] + shift)
    torch.testing.assert_close(b - shift, a, rtol=1e-9, atol=1e-9)


def test_wind_input_reads_the_current_frames_wind_in_rollouts():
    torch.manual_seed(0)
    sim = ClothSimulator(CFG, world_edge_radius=0.12, wind_input=True).double()
    traj = folded_sheet()
    traj["wind"] = torch.randn(traj["world_pos"].shape, dtype=torch.float64)  # [T, N, 3]
    sim.loss({**traj, "world_pos": traj["world_pos"][:3], "wind": traj["wind"][:3]})  # fit the normalisers
    sim.eval()
    assert sim.fields == ("mesh_pos", "node_type", "world_pos", "wind")
    out = sim.rollout(traj, num_steps=2)["world_pos"]
    x0, x1 = traj["world_pos"][0], traj["world_pos"][1]
    args = (traj["mesh_pos"], traj["node_type"], traj["edge_index"], x1, x0)
    free = traj["node_type"] == NodeType.NORMAL
    torch.testing.assert_close(out[1][free], sim.step(*args, traj["wind"][1])[free], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out[1][free], sim.step(*args, traj["wind"][0])[free])
    with pytest.raises(ValueError, match="wind_input is true but the data has no 'wind' field"):
        sim.step(*args)


def test_loss_target_is_noise_corrected_acceleration():
    torch.manual_seed(0)
    sim = ClothSimulator(CFG, noise_std=0.0, world_edge_radius=0.12).double()
    traj = folded_sheet()
    batch = {**traj, "world_pos": traj["world_pos"][:3]}
    loss = sim.loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0
    with pytest.raises(ValueError, match="world_edge_radius"):
        ClothSimulator(CFG, world_edge_radius=-1.0)
