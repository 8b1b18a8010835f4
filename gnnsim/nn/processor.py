"""Processors: a stack of GraphNetBlocks, run plainly or with activation checkpointing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from gnnsim.nn.blocks import GraphNetBlock, Topology, run_blocks


class Processor(nn.Module):
    """Apply blocks in sequence; every intermediate activation is kept for the backward pass. Without autograd,
    fused blocks run in one call of the fused CPU kernel where it can (``run_blocks``)."""

    def __init__(self, blocks: Sequence[GraphNetBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, nodes: Tensor, edges: dict[str, Tensor], topology: Topology) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the latents after every block."""
        if (done := run_blocks(self.blocks, nodes, edges, topology)) is not None:
            return done
        for block in self.blocks:
            nodes, edges = block(nodes, edges, topology)
        return nodes, edges


class CheckpointedProcessor(Processor):
    """Recompute each block in the backward pass (torch.utils.checkpoint): only block inputs are kept."""

    def forward(self, nodes: Tensor, edges: dict[str, Tensor], topology: Topology) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the latents after every block, checkpointing each block while gradients are needed."""
        if (done := run_blocks(self.blocks, nodes, edges, topology)) is not None:
            return done
        for block in self.blocks:
            if torch.is_grad_enabled():
                nodes, edges = checkpoint(block, nodes, edges, topology, use_reentrant=False)
            else:
                nodes, edges = block(nodes, edges, topology)
        return nodes, edges
