"""Shared fixtures: tiny meshes and a synthetic flow split in the real gnnsim format."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from gnnsim.data.format import dynamic, static, write_split
from gnnsim.graph import NodeType, cells_to_edges

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

FLOW_TEST_SCHEMA = {
    "mesh_pos": static("float32", "nodes", 2),
    "cells": static("int32", "cells", 3),
    "node_type": static("int32", "nodes"),
    "velocity": dynamic("float32", "nodes", 2),
    "pressure": dynamic("float32", "nodes", 1),
}


def grid_mesh(nx: int, ny: int, jitter: float = 0.0, seed: int = 0):
    """Return (mesh_pos [N,2], cells [C,3], node_type [N]) of a triangulated [0,1]x[0,0.5] channel."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(0, 1, nx), np.linspace(0, 0.5, ny), indexing="ij")
    pos = np.stack([xs.ravel(), ys.ravel()], -1)
    interior = (xs.ravel() > 0) & (xs.ravel() < 1) & (ys.ravel() > 0) & (ys.ravel() < 0.5)
    pos[interior] += jitter * rng.uniform(-1, 1, (interior.sum(), 2)) / max(nx, ny)
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)])
    node_type = np.full(nx * ny, NodeType.NORMAL)
    node_type[pos[:, 0] == 1] = NodeType.OUTFLOW
    node_type[pos[:, 0] == 0] = NodeType.INFLOW
    node_type[(ys.ravel() == 0) | (ys.ravel() == 0.5)] = NodeType.WALL_BOUNDARY
    return pos.astype(np.float32), cells.astype(np.int32), node_type.astype(np.int32)


def synthetic_flow_trajectory(steps: int, nx: int = 9, ny: int = 5, seed: int = 0):
    """A travelling wave u(x - c t): a local, learnable update rule on a small mesh."""
    pos, cells, node_type = grid_mesh(nx, ny, jitter=0.2, seed=seed)
    rng = np.random.default_rng(seed)
    k, c, phase = rng.uniform(4, 8), rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
    t = np.arange(steps)[:, None] * 0.02
    arg = k * (pos[None, :, 0] - c * t) + phase
    u = 1 + 0.3 * np.sin(arg)
    v = 0.2 * np.cos(arg) * np.sin(np.pi * pos[None, :, 1] / 0.5)
    vel = np.stack([u, v], -1).astype(np.float32)
    vel[:, node_type == NodeType.WALL_BOUNDARY] = 0
    p = (0.5 * np.sin(arg))[..., None].astype(np.float32)
    return {"mesh_pos": pos, "cells": cells, "node_type": node_type, "velocity": vel, "pressure": p}


def synthetic_flow_batch(steps: int = 3, **kw) -> dict[str, torch.Tensor]:
    """A synthetic flow trajectory as the tensors a simulator takes (edges from the cells)."""
    traj = synthetic_flow_trajectory(steps, **kw)
    batch = {k: torch.from_numpy(v) for k, v in traj.items() if k != "cells"}
    batch["edge_index"] = cells_to_edges(torch.from_numpy(traj["cells"]))
    return batch


def write_synthetic_flow(path, num_trajectories: int = 2, steps: int = 12, **kw):
    """Write a synthetic flow split; return its path."""
    trajs = [synthetic_flow_trajectory(steps, seed=s, **kw) for s in range(num_trajectories)]
    return write_split(path, trajs, FLOW_TEST_SCHEMA, dt=0.02, generator="synthetic-wave", config={"steps": steps})


@pytest.fixture
def flow_split(tmp_path):
    """Path of a 2-trajectory, 12-step synthetic flow split."""
    return write_synthetic_flow(tmp_path / "train.h5")
