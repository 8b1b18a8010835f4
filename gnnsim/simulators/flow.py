"""Incompressible flow on a fixed Eulerian mesh (MeshGraphNets' cylinder_flow domain)."""

from __future__ import annotations

import torch
from torch import Tensor

from gnnsim.data.dataset import Batch
from gnnsim.graph import EdgeSet, Graph, NodeType
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.normalization import Normalizer
from gnnsim.simulators.base import Simulator, masked_mse, node_type_one_hot


class FlowSimulator(Simulator):
    """First-order flow domain: predicts the velocity change and the next pressure at every node.

    Node features: velocity (2) and one-hot node type (9). Mesh-edge features: relative mesh position (2)
    and its norm (1). Outputs: velocity change (2) and pressure (1). Loss on NORMAL and OUTFLOW nodes;
    INFLOW and WALL_BOUNDARY velocities come from ground truth in rollouts.

    Args:
        model_cfg: the learned core's hyperparameters.
        noise_std: std of the Gaussian noise added to NORMAL nodes' input velocity while training
            (MeshGraphNets cylinder_flow: 0.02); the target is corrected to remove it.
    """

    domain = "flow"
    window = 2
    fields = ("mesh_pos", "node_type", "velocity", "pressure")
    state_fields = ("velocity", "pressure")
    metric_field = "velocity"

    def __init__(self, model_cfg: ModelConfig, noise_std: float = 0.02):
        super().__init__(model_cfg)
        self.noise_std = noise_std
        self.model = self.build_model(2 + int(NodeType.SIZE), {"mesh": 3}, 3)
        self.node_normalizer = Normalizer(2 + int(NodeType.SIZE))
        self.edge_normalizer = Normalizer(3)
        self.output_normalizer = Normalizer(3)

    def params(self) -> dict:
        return {"noise_std": self.noise_std}

    def graph(self, mesh_pos: Tensor, node_type: Tensor, edge_index: Tensor, velocity: Tensor) -> Graph:
        """Build the normalised input graph from node positions [N, 2], types [N], edges [2, E], velocity [N, 2]."""
        senders, receivers = edge_index
        rel = mesh_pos[senders] - mesh_pos[receivers]  # [E, 2]
        edge_features = torch.cat([rel, rel.norm(dim=-1, keepdim=True)], dim=-1)  # [E, 3]
        node_features = torch.cat([velocity, node_type_one_hot(node_type).to(velocity)], dim=-1)  # [N, 11]
        return Graph(
            self.node_normalizer(node_features),
            {"mesh": EdgeSet(self.edge_normalizer(edge_features), senders, receivers)},
        )

    @staticmethod
    def loss_mask(node_type: Tensor) -> Tensor:
        """Return the nodes whose outputs are learned and integrated: NORMAL and OUTFLOW."""
        return (node_type == NodeType.NORMAL) | (node_type == NodeType.OUTFLOW)

    def loss(self, batch: Batch) -> Tensor:
        """Return the masked MSE between normalised targets and outputs for frames t -> t+1."""
        node_type = batch["node_type"]
        velocity, next_velocity = batch["velocity"][0], batch["velocity"][1]  # [N, 2] each
        noise = torch.randn_like(velocity) * self.noise_std
        velocity = velocity + noise * (node_type == NodeType.NORMAL).unsqueeze(-1)
        target = torch.cat([next_velocity - velocity, batch["pressure"][1]], dim=-1)  # [N, 3]
        out = self.model(self.graph(batch["mesh_pos"], node_type, batch["edge_index"], velocity))
        return masked_mse(out, self.output_normalizer(target), self.loss_mask(node_type))

    def step(self, mesh_pos: Tensor, node_type: Tensor, edge_index: Tensor, velocity: Tensor) -> tuple[Tensor, Tensor]:
        """Predict (next velocity [N, 2], next pressure [N, 1]) from the current velocity, without masking."""
        out = self.output_normalizer.inverse(self.model(self.graph(mesh_pos, node_type, edge_index, velocity)))
        return velocity + out[:, :2], out[:, 2:]

    @torch.no_grad()
    def rollout(self, traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Roll out from frame 0; boundary velocities (INFLOW, walls) are taken from ground truth."""
        gt_v = traj["velocity"]  # [T, N, 2]
        steps = gt_v.shape[0] - 1 if num_steps is None else num_steps
        mask = self.loss_mask(traj["node_type"]).unsqueeze(-1)  # [N, 1]
        velocity, pressures, velocities = gt_v[0], [traj["pressure"][0]], [gt_v[0]]
        for t in range(steps):
            next_v, next_p = self.step(traj["mesh_pos"], traj["node_type"], traj["edge_index"], velocity)
            velocity = torch.where(mask, next_v, gt_v[t + 1])
            velocities.append(velocity)
            pressures.append(next_p)
        return {"velocity": torch.stack(velocities), "pressure": torch.stack(pressures)}

    @staticmethod
    def baseline(traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Baseline: every future state equals the first one (boundary nodes from ground truth)."""
        gt_v = traj["velocity"]
        steps = gt_v.shape[0] - 1 if num_steps is None else num_steps
        mask = FlowSimulator.loss_mask(traj["node_type"]).unsqueeze(-1)
        v = torch.where(mask, gt_v[0], gt_v[: steps + 1])
        return {"velocity": v, "pressure": traj["pressure"][:1].expand(steps + 1, -1, -1)}
