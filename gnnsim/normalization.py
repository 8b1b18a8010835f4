"""Online feature normaliser with DeepMind MeshGraphNets semantics."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """Running mean/std of features, accumulated while training, frozen after ``max_accumulations`` calls.

    Matches deepmind-research/meshgraphnets/normalization.py: statistics are sums over every row seen,
    the std is floored at ``std_epsilon``, and accumulation stops after ``max_accumulations`` updates.
    Statistics are kept in float64 so that long accumulations do not lose precision.

    Args:
        size: number of features (last dim of the inputs).
        max_accumulations: number of ``forward`` calls that update the statistics.
        std_epsilon: lower bound on the std.
    """

    def __init__(self, size: int, max_accumulations: int = 10**6, std_epsilon: float = 1e-8):
        super().__init__()
        self.size = size
        self.max_accumulations = max_accumulations
        self.std_epsilon = std_epsilon
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("num_accumulations", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("sum_squared", torch.zeros(size, dtype=torch.float64))

    def forward(self, x: Tensor, accumulate: bool | None = None) -> Tensor:
        """Normalise ``x`` [..., size]; update the statistics first when accumulating (default: in training)."""
        if x.shape[-1] != self.size:
            raise ValueError(f"Normalizer: expected last dim {self.size}, got shape {list(x.shape)}")
        if self.training if accumulate is None else accumulate:
            self.accumulate(self.row_statistics(x))
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def row_statistics(self, x: Tensor) -> Tensor:
        """Return the sum, the sum of squares and the count of ``x``'s rows, as one float64 vector [2 size + 1]."""
        flat = x.detach().reshape(-1, self.size).double()
        return torch.cat([flat.sum(0), flat.square().sum(0), flat.new_full((1,), flat.shape[0])])

    def accumulate(self, stats: Tensor) -> None:
        """Add ``row_statistics`` (of one batch, or summed over ranks) unless ``max_accumulations`` calls already have.

        The cap is applied on the statistics' device (``torch.where``), never read back to the host: no GPU sync.
        """
        active = self.num_accumulations < self.max_accumulations  # 0-d bool tensor
        stats = torch.where(active, stats, 0.0)
        self.sum += stats[: self.size]
        self.sum_squared += stats[self.size : 2 * self.size]
        self.count += stats[-1]
        self.num_accumulations += active

    def inverse(self, x: Tensor) -> Tensor:
        """Map normalised values back to the data's units."""
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)

    @property
    def mean(self) -> Tensor:
        return self.sum / self.count.clamp(min=1.0)

    @property
    def std(self) -> Tensor:
        var = self.sum_squared / self.count.clamp(min=1.0) - self.mean.square()
        return var.clamp(min=0.0).sqrt().clamp(min=self.std_epsilon)
