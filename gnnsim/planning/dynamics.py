"""The world-model seam: a dynamics protocol, the exact simulator behind it, and imagined rollouts.

The planner never calls the maze directly for imagination: it goes through a `DynamicsModel`, so the learned
GNN simulator can replace `ExactDynamics` without touching the agent or the landmark graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from gnnsim.planning.maze import Maze

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (states [B, 2], goals [B, 2]) -> actions [B, 2]


@runtime_checkable
class DynamicsModel(Protocol):
    """A one-step model of the point agent, batched; arrays are float64 numpy."""

    def predict(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Return `[B, 2]` next states for `[B, 2]` states and `[B, 2]` actions in `[-1, 1]`."""
        ...

    def rollout(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Return `[B, T + 1, 2]` states (the first is `states`) for open-loop actions `[B, T, 2]`."""
        ...


class OneStepModel:
    """Base of the one-step models: ``rollout`` steps the subclass's ``predict`` forward."""

    def predict(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Return `[B, 2]` next states for `[B, 2]` states and `[B, 2]` actions in `[-1, 1]`."""
        raise NotImplementedError

    def rollout(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Roll the one-step model forward under fixed actions.

        Args:
            states: `[B, 2]` initial states.
            actions: `[B, T, 2]` actions.

        Returns:
            `[B, T + 1, 2]` states, starting with `states`.
        """
        if actions.ndim != 3 or actions.shape[0] != len(states):
            raise ValueError(f"actions: expected [B={len(states)}, T, 2], got {actions.shape}")
        out = [np.asarray(states, dtype=np.float64)]
        for t in range(actions.shape[1]):
            out.append(self.predict(out[-1], actions[:, t]))
        return np.stack(out, axis=1)


class ExactDynamics(OneStepModel):
    """The true maze motion behind the `DynamicsModel` protocol.

    Args:
        maze: the maze whose wall-clipped motion is the model.
    """

    def __init__(self, maze: Maze):
        self.maze = maze

    def predict(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Return `[B, 2]` next states: the maze's own wall-clipped step."""
        return self.maze.step(states, actions)


def policy_rollout(model: DynamicsModel, states: np.ndarray, goals: np.ndarray, policy: Policy,
                   steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Imagine a closed-loop rollout of a goal-conditioned policy through the model.

    Args:
        model: the dynamics model.
        states: `[B, 2]` initial states.
        goals: `[B, 2]` goals given to the policy.
        policy: maps (states `[B, 2]`, goals `[B, 2]`) to actions `[B, 2]`.
        steps: number of steps T.

    Returns:
        states `[B, T + 1, 2]` and actions `[B, T, 2]`.
    """
    xs, us = [np.asarray(states, dtype=np.float64)], []
    for _ in range(steps):
        us.append(policy(xs[-1], goals))
        xs.append(model.predict(xs[-1], us[-1]))
    return np.stack(xs, axis=1), np.stack(us, axis=1).reshape(len(states), steps, 2)


def random_transitions(maze: Maze, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sample transitions for fitting a learned model: uniform free states, uniform actions.

    Args:
        maze: the maze.
        n: number of transitions.
        rng: random generator.

    Returns:
        `{"states": [n, 2], "actions": [n, 2], "next_states": [n, 2]}`.
    """
    states = maze.sample_free(n, rng)
    actions = rng.uniform(-1.0, 1.0, size=(n, 2))
    return {"states": states, "actions": actions, "next_states": maze.step(states, actions)}
