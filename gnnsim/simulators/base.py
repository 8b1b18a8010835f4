"""What every domain simulator provides: features, targets, loss, and the autoregressive step."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gnnsim.data.dataset import Batch
from gnnsim.graph import NodeType
from gnnsim.nn.encode_process_decode import EncodeProcessDecode, ModelConfig


def node_type_one_hot(node_type: Tensor) -> Tensor:
    """One-hot encode node types [N] into [N, NodeType.SIZE] floats.

    A comparison with every type, not ``F.one_hot``, which reads the values back to the host to range-check them
    (a GPU sync per step); the data loader rejects types outside ``[0, NodeType.SIZE)`` instead.
    """
    types = torch.arange(int(NodeType.SIZE), device=node_type.device)
    return (node_type.reshape(-1, 1).long() == types).float()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked rows of the squared error summed over features (DeepMind's MeshGraphNets loss).

    Computed without reading ``mask`` back to the host (no GPU sync); unmasked rows never enter, NaN or not, in
    the value or the gradient (they are zeroed before squaring). An empty mask gives 0 (no gradient), not NaN,
    which would reach the weights before any check could see it.
    """
    err = torch.where(mask.unsqueeze(-1), pred - target, 0.0)
    return err.square().sum() / mask.sum().clamp(min=1)


class Simulator(nn.Module):
    """A domain: owns the learned core, the normalisers, the features, the targets and the integrator.

    Subclasses set ``domain``, ``window`` (frames per training sample), ``fields`` (data fields needed) and
    ``state_fields`` (dynamic fields the rollout predicts), ``metric_field`` (the field rollout errors are
    reported on), ``baseline_name``, and implement ``loss``, ``rollout`` and ``baseline`` (reported next to the model).
    """

    domain: ClassVar[str]
    window: ClassVar[int]
    fields: ClassVar[tuple[str, ...]]
    state_fields: ClassVar[tuple[str, ...]]
    metric_field: ClassVar[str]
    metric_mask: ClassVar[str | None] = None  # bool field [T, N, 1]: the entries rollout errors count (None: all)
    baseline_name: ClassVar[str] = "persistence"

    def __init__(self, model_cfg: ModelConfig):
        super().__init__()
        self.model_cfg = model_cfg

    def spec(self) -> dict[str, Any]:
        """Return what rebuilds this simulator: domain, model config and domain parameters (JSON-able)."""
        return {"domain": self.domain, "model": asdict(self.model_cfg), "params": self.params()}

    def params(self) -> dict[str, Any]:
        """Return the domain's constructor arguments other than the model config."""
        return {}

    def build_model(self, node_size: int, edge_sizes: dict[str, int], out_size: int) -> EncodeProcessDecode:
        """Build the learned core for this domain's feature sizes."""
        return EncodeProcessDecode.build(node_size, edge_sizes, out_size, self.model_cfg)

    def loss(self, batch: Batch) -> Tensor:
        """Return the training loss of a batch (normalised space, noise injected)."""
        raise NotImplementedError

    @torch.no_grad()
    def rollout(self, traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Roll one trajectory out from its first frame(s); return predicted ``state_fields`` [T, N, F]."""
        raise NotImplementedError

    @staticmethod
    def baseline(traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Return the domain's simple baseline rollout (same keys and shapes as ``rollout``)."""
        raise NotImplementedError
