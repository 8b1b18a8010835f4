"""Model-predictive control on the world model alone: cross-entropy-method shooting with a distance cost.

No value function and no graph: each step samples action sequences, imagines them through the
`DynamicsModel`, scores each by the mean Euclidean distance of its imagined states to the goal, refits a
Gaussian to the best, and executes the first action of the final mean (the plan is warm-started by a shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnnsim.planning.dynamics import DynamicsModel


@dataclass
class MPCConfig:
    """Cross-entropy method settings."""

    horizon: int = 10  # imagined steps per plan
    samples: int = 32  # action sequences per iteration (each is a batch of GNN world-model calls)
    elites: int = 8
    iters: int = 3
    init_std: float = 0.7


class CEMController:
    """Batched CEM model-predictive controller.

    Args:
        model: the world model.
        cfg: CEM settings.
        rng: random generator.
    """

    def __init__(self, model: DynamicsModel, cfg: MPCConfig, rng: np.random.Generator):
        if not 1 <= cfg.elites <= cfg.samples:
            raise ValueError(f"elites must be in [1, samples={cfg.samples}], got {cfg.elites}")
        self.model, self.cfg, self.rng = model, cfg, rng

    def reset(self, goals: np.ndarray) -> None:
        """Start new episodes towards `goals [B, 2]`."""
        self.goals = goals
        self.mean = np.zeros((len(goals), self.cfg.horizon, 2))

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Return actions `[B, 2]` for `states [B, 2]`."""
        c = self.cfg
        b = len(states)
        mean, std = self.mean, np.full_like(self.mean, c.init_std)
        start = np.repeat(states, c.samples, axis=0)  # [B * S, 2]
        goal = np.repeat(self.goals, c.samples, axis=0)[:, None]  # [B * S, 1, 2]
        for _ in range(c.iters):
            noise = self.rng.standard_normal((b, c.samples, c.horizon, 2))
            acts = np.clip(mean[:, None] + std[:, None] * noise, -1.0, 1.0)  # [B, S, T, 2]
            xs = self.model.rollout(start, acts.reshape(b * c.samples, c.horizon, 2))  # [B * S, T + 1, 2]
            cost = np.linalg.norm(xs[:, 1:] - goal, axis=-1).mean(1).reshape(b, c.samples)
            elite = np.argsort(cost, axis=1)[:, :c.elites]  # [B, E]
            chosen = np.take_along_axis(acts, elite[:, :, None, None], axis=1)  # [B, E, T, 2]
            mean, std = chosen.mean(1), chosen.std(1) + 1e-3
        self.mean = np.concatenate([mean[:, 1:], np.zeros((b, 1, 2))], axis=1)
        return mean[:, 0]
