"""Encode-process-decode: the physics-free learned core shared by every domain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from gnnsim.graph import Graph
from gnnsim.nn.blocks import GraphNetBlock, fused_mlp
from gnnsim.nn.mlp import MLP
from gnnsim.nn.processor import CheckpointedProcessor, Processor

PROCESSORS = ("standard", "checkpointed", "reversible")


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the learned core (stored in checkpoints to rebuild the model).

    Attributes:
        latent_size: width of every latent (MeshGraphNets: 128).
        num_blocks: message-passing steps (MeshGraphNets: 15).
        hidden_layers: hidden layers per MLP (MeshGraphNets: 2).
        processor: ``standard``, ``checkpointed`` (per-block recomputation) or ``reversible``.
        fused: project node latents before the edge gather (same function, faster).
    """

    latent_size: int = 128
    num_blocks: int = 15
    hidden_layers: int = 2
    processor: str = "standard"
    fused: bool = True

    def __post_init__(self):
        if self.processor not in PROCESSORS:
            raise ValueError(f"model.processor: expected one of {PROCESSORS}, got {self.processor!r}")
        if self.latent_size < 1 or self.num_blocks < 0 or self.hidden_layers < 0:
            raise ValueError(f"model: latent_size >= 1, num_blocks >= 0, hidden_layers >= 0 expected, got {self}")


def make_processor(cfg: ModelConfig, edge_sets: tuple[str, ...]) -> nn.Module:
    """Build the processor that ``cfg.processor`` names, with ``cfg.num_blocks`` blocks over ``edge_sets``."""
    if cfg.processor == "reversible":
        from gnnsim.nn.reversible import ReversibleProcessor

        return ReversibleProcessor.build(cfg.latent_size, cfg.num_blocks, edge_sets, cfg.hidden_layers, cfg.fused)
    blocks = [GraphNetBlock(cfg.latent_size, edge_sets, cfg.hidden_layers, cfg.fused) for _ in range(cfg.num_blocks)]
    return CheckpointedProcessor(blocks) if cfg.processor == "checkpointed" else Processor(blocks)


class EncodeProcessDecode(nn.Module):
    """MeshGraphNets' model (Pfaff et al., ICLR 2021, https://arxiv.org/abs/2010.03409).

    Encoders map node and edge features to latents, the processor passes messages, the decoder maps node
    latents to per-node outputs. It knows nothing about the physics: the domain simulator builds the
    (normalised) features and interprets the (normalised) outputs.

    Args:
        node_encoder: MLP [F_node] -> [L], with LayerNorm.
        edge_encoders: one MLP [F_edge_k] -> [L] per edge set, with LayerNorm.
        processor: maps (nodes, edges, topology) to updated latents.
        decoder: MLP [L] -> [F_out], without LayerNorm.
        fused: run the encoders as ``fused_mlp`` (on CPU the fused kernel where it runs; the same function).
    """

    def __init__(
        self,
        node_encoder: MLP,
        edge_encoders: nn.ModuleDict,
        processor: nn.Module,
        decoder: MLP,
        fused: bool = False,
    ):
        super().__init__()
        self.node_encoder = node_encoder
        self.edge_encoders = edge_encoders
        self.processor = processor
        self.decoder = decoder
        self.fused = fused

    @classmethod
    def build(cls, node_size: int, edge_sizes: Mapping[str, int], out_size: int, cfg: ModelConfig) -> EncodeProcessDecode:
        """Build the model for the given feature sizes.

        Args:
            node_size: node input features.
            edge_sizes: input features per edge set, e.g. ``{"mesh": 3}``.
            out_size: per-node outputs.
            cfg: hyperparameters.
        """
        latent, layers = cfg.latent_size, cfg.hidden_layers
        return cls(
            node_encoder=MLP(node_size, latent, latent, layers),
            edge_encoders=nn.ModuleDict({k: MLP(size, latent, latent, layers) for k, size in edge_sizes.items()}),
            processor=make_processor(cfg, tuple(edge_sizes)),
            decoder=MLP(latent, latent, out_size, layers, layer_norm=False),
            fused=cfg.fused,
        )

    def forward(self, graph: Graph) -> Tensor:
        """Return per-node outputs [N, F_out] for a graph with normalised features."""
        if set(graph.edge_sets) != set(self.edge_encoders):
            raise ValueError(f"graph edge sets {sorted(graph.edge_sets)} != model's {sorted(self.edge_encoders)}")
        nodes = self.encode(self.node_encoder, graph.node_features)  # [N, L]
        edges = {k: self.encode(self.edge_encoders[k], es.features) for k, es in graph.edge_sets.items()}  # [E_k, L]
        topology = {k: (es.senders, es.receivers) for k, es in graph.edge_sets.items()}
        nodes, _ = self.processor(nodes, edges, topology)
        return self.decoder(nodes).to(graph.node_features.dtype)  # autocast's Linear dtype back to the features'

    def encode(self, mlp: MLP, features: Tensor) -> Tensor:
        """Apply an encoder: ``mlp(features)``, as one fused MLP with ``fused``."""
        return fused_mlp(mlp, [features], [mlp.first.weight])[0] if self.fused else mlp(features)
