"""Cloth on a Lagrangian mesh moving in 3D (MeshGraphNets' flag domain), with world edges."""

from __future__ import annotations

import torch
from torch import Tensor

from gnnsim.data.dataset import Batch
from gnnsim.graph import EdgeSet, Graph, NodeType
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.normalization import Normalizer
from gnnsim.simulators.base import Simulator, masked_mse, node_type_one_hot


def world_edges(world_pos: Tensor, mesh_edges: Tensor, radius: float, graph_id: Tensor | None = None) -> Tensor:
    """Return directed edges [2, E_w] between nodes closer than ``radius`` in world space.

    Self pairs, mesh neighbours (``mesh_edges`` [2, E]) and pairs from different graphs of a batch
    (``graph_id`` [N]) are excluded. Both directions of each pair are returned, sorted by (sender, receiver).
    """
    n = world_pos.shape[0]
    ids = torch.zeros(n, dtype=torch.long, device=world_pos.device) if graph_id is None else graph_id
    pairs = []
    for g in torch.unique(ids):
        nodes = torch.nonzero(ids == g).squeeze(1)
        close = torch.cdist(world_pos[nodes], world_pos[nodes]) < radius  # [n_g, n_g]
        close.fill_diagonal_(False)
        s, r = torch.nonzero(close, as_tuple=True)
        pairs.append(torch.stack([nodes[s], nodes[r]]))
    edges = torch.cat(pairs, dim=1)
    mesh_keys = mesh_edges[0] * n + mesh_edges[1]
    edges = edges[:, ~torch.isin(edges[0] * n + edges[1], mesh_keys)]
    return edges[:, torch.argsort(edges[0] * n + edges[1])]


class ClothSimulator(Simulator):
    """Second-order cloth domain: predicts per-node acceleration, integrates ``x+ = 2x - x- + a``.

    Node features: velocity ``x_t - x_{t-1}`` (3), with ``wind_input`` the wind velocity at the node (3, the
    data's ``wind`` field: the external forcing, given to the model as MeshGraphNets gives inflow velocities
    to flow models), and one-hot node type (9). Mesh edges: relative world
    position (3) and its norm, relative rest (mesh) position (2) and its norm (7 features). World edges (a
    second edge set with its own encoder and its own update in every block): nodes within
    ``world_edge_radius`` in world space that are not mesh neighbours; relative world position and norm (4).
    Loss on NORMAL nodes; HANDLE (and any other non-NORMAL) nodes follow ground truth in rollouts.

    Args:
        model_cfg: the learned core's hyperparameters.
        noise_std: std of the noise added to NORMAL nodes' current world position while training
            (MeshGraphNets flag_simple: 0.003).
        noise_gamma: share of the noise kept in the next position (MeshGraphNets: 0.1); the target
            position is shifted by ``(1 - gamma) * noise`` so the model learns to undo most of it.
        world_edge_radius: world-edge radius in data units.
        wind_input: read the data's per-node ``wind`` [T, N, 3] as a node feature. Without it the wind is
            unobserved and must be inferred from one velocity frame (DeepMind's flag data has no wind field).
    """

    domain = "cloth"
    window = 3
    fields = ("mesh_pos", "node_type", "world_pos")
    state_fields = ("world_pos",)
    metric_field = "world_pos"
    baseline_name = "constant_velocity"

    def __init__(self, model_cfg: ModelConfig, noise_std: float = 0.003, noise_gamma: float = 0.1,
                 world_edge_radius: float = 0.05, wind_input: bool = False):
        super().__init__(model_cfg)
        if world_edge_radius < 0:
            raise ValueError(f"simulator.params.world_edge_radius: expected >= 0, got {world_edge_radius}")
        self.noise_std, self.noise_gamma, self.world_edge_radius = noise_std, noise_gamma, world_edge_radius
        self.wind_input = bool(wind_input)
        self.fields = ClothSimulator.fields + (("wind",) if self.wind_input else ())
        node_size = 3 * (1 + self.wind_input) + int(NodeType.SIZE)
        self.model = self.build_model(node_size, {"mesh": 7, "world": 4}, 3)
        self.node_normalizer = Normalizer(node_size)
        self.mesh_edge_normalizer = Normalizer(7)
        self.world_edge_normalizer = Normalizer(4)
        self.output_normalizer = Normalizer(3)

    def params(self) -> dict:
        return {"noise_std": self.noise_std, "noise_gamma": self.noise_gamma,
                "world_edge_radius": self.world_edge_radius, "wind_input": self.wind_input}

    def graph(self, mesh_pos: Tensor, node_type: Tensor, edge_index: Tensor, world_pos: Tensor, prev_pos: Tensor,
              wind: Tensor | None = None, graph_id: Tensor | None = None) -> Graph:
        """Build the normalised input graph from rest positions [N, 2], types [N], mesh edges [2, E], the
        current and previous world positions [N, 3] and, with ``wind_input``, the current wind [N, 3]."""
        s, r = edge_index
        rel_world = world_pos[s] - world_pos[r]  # [E, 3]
        rel_mesh = mesh_pos[s] - mesh_pos[r]  # [E, 2]
        mesh_features = torch.cat(
            [rel_world, rel_world.norm(dim=-1, keepdim=True), rel_mesh, rel_mesh.norm(dim=-1, keepdim=True)], dim=-1
        )
        ws, wr = world_edges(world_pos, edge_index, self.world_edge_radius, graph_id)
        rel = world_pos[ws] - world_pos[wr]  # [E_w, 3]
        world_features = torch.cat([rel, rel.norm(dim=-1, keepdim=True)], dim=-1)
        dynamic = [world_pos - prev_pos]
        if self.wind_input:
            if wind is None:
                raise ValueError("simulator.params.wind_input is true but the data has no 'wind' field; "
                                 "set it to false for data without wind (e.g. DeepMind's flag_simple)")
            dynamic.append(wind)
        nodes = torch.cat([*dynamic, node_type_one_hot(node_type).to(world_pos)], dim=-1)  # [N, 12 or 15]
        return Graph(
            self.node_normalizer(nodes),
            {
                "mesh": EdgeSet(self.mesh_edge_normalizer(mesh_features), s, r),
                "world": EdgeSet(self.world_edge_normalizer(world_features), ws, wr),
            },
        )

    def loss(self, batch: Batch) -> Tensor:
        """Return the masked MSE of normalised accelerations for frames (t-1, t) -> t+1, with noise."""
        prev, cur, target = batch["world_pos"][0], batch["world_pos"][1], batch["world_pos"][2]  # [N, 3]
        normal = (batch["node_type"] == NodeType.NORMAL).unsqueeze(-1)
        noise = torch.randn_like(cur) * self.noise_std * normal
        cur = cur + noise
        target = target + (1.0 - self.noise_gamma) * noise
        accel = target - 2 * cur + prev  # [N, 3]
        wind = batch["wind"][1] if self.wind_input else None
        graph = self.graph(batch["mesh_pos"], batch["node_type"], batch["edge_index"], cur, prev, wind, batch.get("batch"))
        out = self.model(graph)
        return masked_mse(out, self.output_normalizer(accel), normal.squeeze(-1))

    def step(self, mesh_pos: Tensor, node_type: Tensor, edge_index: Tensor, world_pos: Tensor, prev_pos: Tensor,
             wind: Tensor | None = None) -> Tensor:
        """Predict the next world positions [N, 3] of every node (no masking)."""
        graph = self.graph(mesh_pos, node_type, edge_index, world_pos, prev_pos, wind)
        accel = self.output_normalizer.inverse(self.model(graph))
        return 2 * world_pos - prev_pos + accel

    @torch.no_grad()
    def rollout(self, traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Roll out from frames 0 and 1; returns frames 1..num_steps+1 (index 0 = the last given frame).

        The wind, an external forcing, comes from the data at every step (sampled there at the true positions).
        """
        return self._integrate(traj, num_steps, self.step)

    @staticmethod
    def baseline(traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Constant velocity, ``x+ = 2x - x-``, rolled out with handles from ground truth."""
        return ClothSimulator._integrate(traj, num_steps, lambda m, t, e, x, prev, wind: 2 * x - prev)

    @staticmethod
    def _integrate(traj: Batch, num_steps: int | None, step) -> dict[str, Tensor]:
        gt = traj["world_pos"]  # [T, N, 3]
        steps = gt.shape[0] - 2 if num_steps is None else num_steps
        free = (traj["node_type"] == NodeType.NORMAL).unsqueeze(-1)  # [N, 1]
        prev, cur = gt[0], gt[1]
        out = [cur]
        for t in range(steps):
            wind = traj["wind"][t + 1] if "wind" in traj else None  # at the current frame
            nxt = torch.where(free, step(traj["mesh_pos"], traj["node_type"], traj["edge_index"], cur, prev, wind), gt[t + 2])
            prev, cur = cur, nxt
            out.append(cur)
        return {"world_pos": torch.stack(out)}
