"""Rollout error metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

HORIZONS = (1, 10, 50)


class RolloutErrors:
    """Accumulates squared errors per rollout step over trajectories, to report RMSE at horizons.

    RMSE at horizon h is the root of the mean squared error over steps 1..h, all nodes and features
    (step 0 is the given initial state), as in the MeshGraphNets evaluation.
    """

    def __init__(self):
        self.sse = np.zeros(0)  # [T] sum of squared errors per step
        self.count = np.zeros(0)  # [T] number of values per step

    def add(self, pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one trajectory's prediction and truth, both [T, N, F]; ``mask`` (bool, broadcastable to them,
        e.g. [T, N, 1]) keeps only the observed entries."""
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
        sq = np.square(pred.astype(np.float64) - truth.astype(np.float64))
        keep = np.ones(sq.shape, bool) if mask is None else np.broadcast_to(mask.astype(bool), sq.shape)
        sq = np.where(keep, sq, 0.0).reshape(pred.shape[0], -1)
        t = sq.shape[0]
        if t > len(self.sse):
            self.sse = np.pad(self.sse, (0, t - len(self.sse)))
            self.count = np.pad(self.count, (0, t - len(self.count)))
        self.sse[:t] += sq.sum(1)
        self.count[:t] += keep.reshape(t, -1).sum(1)

    def per_step(self) -> list[float]:
        """Return the RMSE of each step (step 0 included)."""
        return [math.sqrt(s / c) if c else float("nan") for s, c in zip(self.sse, self.count)]

    def at_horizons(self, horizons: Sequence[int] = HORIZONS) -> dict[str, float]:
        """Return ``{"1": rmse, "10": ..., "all": ...}`` over steps 1..h (horizons beyond the rollout skipped)."""
        last = len(self.sse) - 1
        out = {str(h): self._upto(h) for h in horizons if h <= last}
        out["all"] = self._upto(last)
        return out

    def _upto(self, h: int) -> float:
        c = self.count[1 : h + 1].sum()
        return math.sqrt(self.sse[1 : h + 1].sum() / c) if c else float("nan")
