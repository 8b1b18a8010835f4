"""The MeshGraphNets GraphNetBlock: edge update, sum aggregation, node update, residuals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gnnsim.nn.mlp import MLP

Topology = dict[str, tuple[Tensor, Tensor]]  # edge set name -> (senders [E], receivers [E])


def sum_incoming(messages: Tensor, receivers: Tensor, num_nodes: int) -> Tensor:
    """Sum edge messages [E, F] into their receivers; return [num_nodes, F]."""
    out = messages.new_zeros(num_nodes, messages.shape[1])
    return out.index_add_(0, receivers, messages)


def edge_mlp_forward(mlp: MLP, nodes: Tensor, edges: Tensor, senders: Tensor, receivers: Tensor, fused: bool) -> Tensor:
    """Apply an edge MLP to ``[x_sender; x_receiver; e]`` for every edge; return [E, F_out].

    With ``fused``, the first layer is split as ``W [x_s; x_r; e] = W_s x_s + W_r x_r + W_e e``: node latents
    are projected once per node before the gather, and no [E, 3F] concatenation is built. Both paths use the
    same parameters and compute the same function.
    """
    if not fused:
        return mlp(torch.cat([nodes[senders], nodes[receivers], edges], dim=-1))
    first = mlp.first
    f = nodes.shape[1]
    w_s, w_r, w_e = first.weight[:, :f], first.weight[:, f : 2 * f], first.weight[:, 2 * f :]
    proj = nodes @ torch.cat([w_s, w_r], dim=0).T  # [N, 2H]
    p_s, p_r = proj.split(first.out_features, dim=1)  # [N, H] each
    h = torch.addmm(first.bias, edges, w_e.T) + p_s[senders] + p_r[receivers]  # [E, H]
    return mlp.forward_after_first(h)


class GraphNetBlock(nn.Module):
    """One message-passing step of MeshGraphNets (Pfaff et al., ICLR 2021, https://arxiv.org/abs/2010.03409).

    For each edge set k: ``e'_k = MLP_k([v_s; v_r; e_k])``; then ``v' = MLP_v([v; sum_{k} sum_{in} e'_k])``;
    outputs ``v + v'`` and ``e_k + e'_k``.

    Args:
        latent_size: width of node and edge latents.
        edge_sets: names of the edge sets (e.g. ``("mesh",)`` or ``("mesh", "world")``).
        hidden_layers: hidden layers per MLP.
        fused: project node latents before the edge gather (same function, less work).
    """

    def __init__(self, latent_size: int, edge_sets: Sequence[str], hidden_layers: int = 2, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.edge_mlps = nn.ModuleDict(
            {name: MLP(3 * latent_size, latent_size, latent_size, hidden_layers) for name in edge_sets}
        )
        self.node_mlp = MLP((1 + len(edge_sets)) * latent_size, latent_size, latent_size, hidden_layers)

    def forward(self, nodes: Tensor, edges: dict[str, Tensor], topology: Topology) -> tuple[Tensor, dict[str, Tensor]]:
        """Update node latents [N, L] and each edge set's latents [E_k, L]; return both."""
        new_edges, inputs = {}, [nodes]
        for name, mlp in self.edge_mlps.items():
            senders, receivers = topology[name]
            new_edges[name] = edge_mlp_forward(mlp, nodes, edges[name], senders, receivers, self.fused)
            inputs.append(sum_incoming(new_edges[name], receivers, nodes.shape[0]))
        nodes = nodes + self.node_mlp(torch.cat(inputs, dim=-1))
        return nodes, {name: edges[name] + e for name, e in new_edges.items()}
