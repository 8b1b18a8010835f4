"""Episode replay with hindsight goal relabelling, and a transition buffer for imagined data."""

from __future__ import annotations

import numpy as np


class EpisodeBuffer:
    """A ring buffer of fixed-length episodes that samples transitions with hindsight goals.

    Args:
        capacity: number of episodes kept.
        horizon: steps per episode T.
    """

    def __init__(self, capacity: int, horizon: int):
        self.states = np.zeros((capacity, horizon + 1, 2))
        self.actions = np.zeros((capacity, horizon, 2))
        self.goals = np.zeros((capacity, 2))
        self.capacity, self.horizon = capacity, horizon
        self.size = self._next = 0

    def add(self, states: np.ndarray, actions: np.ndarray, goals: np.ndarray) -> None:
        """Store episodes: states `[E, T + 1, 2]`, actions `[E, T, 2]`, goals `[E, 2]`."""
        if states.shape[1:] != (self.horizon + 1, 2) or actions.shape[1:] != (self.horizon, 2):
            raise ValueError(f"episodes: expected states [E, {self.horizon + 1}, 2] and actions "
                             f"[E, {self.horizon}, 2], got {states.shape} and {actions.shape}")
        idx = (self._next + np.arange(len(states))) % self.capacity
        self.states[idx], self.actions[idx], self.goals[idx] = states, actions, goals
        self._next = int(idx[-1] + 1) % self.capacity
        self.size = min(self.capacity, self.size + len(states))

    def sample(self, n: int, rng: np.random.Generator, future: float) -> dict[str, np.ndarray]:
        """Sample transitions, relabelling a `future` share of goals with states reached later.

        Args:
            n: batch size.
            rng: random generator.
            future: probability of replacing the episode goal by a state from later in the episode.

        Returns:
            `{"states", "actions", "next_states", "goals"}`, each `[n, 2]`.
        """
        if self.size == 0:
            raise ValueError("cannot sample an empty buffer; add episodes first")
        ep = rng.integers(self.size, size=n)
        t = rng.integers(self.horizon, size=n)
        later = t + 1 + (rng.random(n) * (self.horizon - t)).astype(int)  # uniform over t + 1 .. T
        goals = np.where((rng.random(n) < future)[:, None], self.states[ep, later], self.goals[ep])
        return {"states": self.states[ep, t], "actions": self.actions[ep, t],
                "next_states": self.states[ep, t + 1], "goals": goals}

    def all_states(self) -> np.ndarray:
        """Return every stored state, `[size * (T + 1), 2]`."""
        return self.states[:self.size].reshape(-1, 2)


class TransitionBuffer:
    """A ring buffer of goal-labelled transitions (used for model-imagined data).

    Args:
        capacity: number of transitions kept.
    """

    def __init__(self, capacity: int):
        self.data = {k: np.zeros((capacity, 2)) for k in ("states", "actions", "next_states", "goals")}
        self.capacity = capacity
        self.size = self._next = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Store transitions: a dict of `[N, 2]` arrays with the keys of `EpisodeBuffer.sample`."""
        n = len(batch["states"])
        idx = (self._next + np.arange(n)) % self.capacity
        for k, v in self.data.items():
            v[idx] = batch[k]
        self._next = int(idx[-1] + 1) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Return `n` stored transitions drawn uniformly, a dict of `[n, 2]` arrays."""
        if self.size == 0:
            raise ValueError("cannot sample an empty buffer; add transitions first")
        idx = rng.integers(self.size, size=n)
        return {k: v[idx] for k, v in self.data.items()}
