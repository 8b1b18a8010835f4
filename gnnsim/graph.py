"""Mesh graph basics: node types, edges from cells, and the graph container the model consumes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import Tensor


class NodeType(enum.IntEnum):
    """Node types, with the same integer values as DeepMind's MeshGraphNets data sets."""

    NORMAL = 0
    OBSTACLE = 1
    AIRFOIL = 2
    HANDLE = 3
    INFLOW = 4
    OUTFLOW = 5
    WALL_BOUNDARY = 6
    SIZE = 9


def cells_to_edges(cells: Tensor) -> Tensor:
    """Return the unique two-way edges of triangle or quad cells.

    Args:
        cells: `[C, K]` integer node indices, K = 3 (triangles) or 4 (quads, edges along the cycle).

    Returns:
        `[2, E]` long tensor (senders, receivers), each undirected edge in both directions,
        sorted by (sender, receiver).
    """
    if cells.ndim != 2 or cells.shape[1] not in (3, 4):
        raise ValueError(f"cells: expected shape [C, 3] or [C, 4], got {list(cells.shape)}")
    cells = cells.long()
    a = cells.reshape(-1)
    b = cells.roll(-1, dims=1).reshape(-1)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    n = int(hi.max()) + 1 if hi.numel() else 1
    # Deduplicate undirected pairs through one integer key per pair.
    key = torch.unique(lo * n + hi)
    lo, hi = key // n, key % n
    senders = torch.cat([lo, hi])
    receivers = torch.cat([hi, lo])
    order = torch.argsort(senders * n + receivers)
    return torch.stack([senders[order], receivers[order]])


@dataclass
class EdgeSet:
    """Directed edges with features: messages flow from `senders` to `receivers`."""

    features: Tensor  # [E, Fe]
    senders: Tensor  # [E] long
    receivers: Tensor  # [E] long


@dataclass
class Graph:
    """Input to the learned core: node features and one or more named edge sets."""

    node_features: Tensor  # [N, F]
    edge_sets: dict[str, EdgeSet] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.node_features.shape[0]
