"""The MeshGraphNets MLP: Linear-ReLU-...-Linear, optionally followed by LayerNorm."""

from __future__ import annotations

from itertools import islice

import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in its parameters' dtype (float32), under autocast too.

    CUDA's autocast runs LayerNorm in float32 by itself; CPU's would run it in bfloat16 on a bfloat16 Linear
    output. Either way the normalised output, and with it the latent stream (residual sums, sums over edges),
    stays in full precision while the Linears run in the autocast dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.to(self.weight.dtype), self.normalized_shape, self.weight, self.bias, self.eps)


class MLP(nn.Module):
    """``hidden_layers`` hidden Linear+ReLU layers of width ``hidden_size``, an output Linear, optional LayerNorm.

    Args:
        in_size: input features.
        hidden_size: width of the hidden layers.
        out_size: output features.
        hidden_layers: number of hidden layers (MeshGraphNets uses 2).
        layer_norm: append a LayerNorm (encoders and processor: yes; decoder: no).
    """

    def __init__(self, in_size: int, hidden_size: int, out_size: int, hidden_layers: int = 2, layer_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        size = in_size
        for _ in range(hidden_layers):
            layers += [nn.Linear(size, hidden_size), nn.ReLU()]
            size = hidden_size
        layers.append(nn.Linear(size, out_size))
        if layer_norm:
            layers.append(LayerNorm(out_size))
        self.layers = nn.Sequential(*layers)
        self.in_size, self.out_size = in_size, out_size

    @property
    def first(self) -> nn.Linear:
        """The first Linear layer (split by callers that fuse it with a gather)."""
        return self.layers[0]

    @property
    def linears(self) -> list[nn.Linear]:
        """The Linear layers in order; a ReLU follows every one but the last."""
        return [layer for layer in self.layers if isinstance(layer, nn.Linear)]

    @property
    def norm(self) -> LayerNorm | None:
        """The final LayerNorm, or None."""
        last = self.layers[-1]
        return last if isinstance(last, LayerNorm) else None

    def forward(self, x: Tensor) -> Tensor:
        """Map [..., in_size] to [..., out_size]."""
        return self.layers(x)

    def forward_after_first(self, h: Tensor) -> Tensor:
        """Apply every layer after the first Linear to its output ``h`` (pre-activation)."""
        for layer in islice(self.layers, 1, None):
            h = layer(h)
        return h
