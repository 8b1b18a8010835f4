"""Graph search over landmarks: soft Floyd-Warshall and online subgoal choice with commitment.

Soft Floyd-Warshall relaxes ``d_ij <- softmin_tau(d_ij, d_ik + d_kj)`` with
``softmin_tau(a, b) = -tau log(exp(-a / tau) + exp(-b / tau))``; it is the exact all-pairs shortest path
as ``tau -> 0``. The planner picks, for each environment, the landmark that starts the shortest route to the
goal, commits to it for its estimated step count, and re-plans when the commitment runs out or the landmark
is reached. A goal within the cut-off is pursued directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class StepDistance(Protocol):
    """Estimated (or exact) number of steps between points."""

    def pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N]` steps from `a[i]` to `b[i]` for `[N, 2]` arrays."""
        ...

    def matrix(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N, M]` steps from each of `a [N, 2]` to each of `b [M, 2]`."""
        ...


def soft_floyd_warshall(weights: np.ndarray, temperature: float) -> np.ndarray:
    """Return soft all-pairs shortest path lengths.

    Args:
        weights: `[L, L]` edge lengths, inf where there is no edge.
        temperature: log-sum-exp temperature tau >= 0; 0 is the hard minimum.

    Returns:
        `[L, L]` path lengths (inf between disconnected nodes), zero diagonal.
    """
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights: expected a square matrix, got shape {weights.shape}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    d = weights.astype(np.float64).copy()
    np.fill_diagonal(d, 0.0)
    for k in range(len(d)):
        through_k = d[:, k, None] + d[None, k, :]  # [L, L]
        if temperature == 0:
            d = np.minimum(d, through_k)
        else:
            d = -temperature * np.logaddexp(-d / temperature, -through_k / temperature)
        np.fill_diagonal(d, 0.0)
    return d


@dataclass
class LandmarkGraph:
    """Landmark goals `[L, 2]`, one-hop edge lengths `[L, L]` (inf = cut), shortest paths `[L, L]`; in steps."""

    landmarks: np.ndarray
    weights: np.ndarray
    paths: np.ndarray

    def __post_init__(self):
        """Check that the three arrays agree on L."""
        n = len(self.landmarks)
        if self.landmarks.shape != (n, 2) or self.weights.shape != (n, n) or self.paths.shape != (n, n):
            raise ValueError(f"graph: expected landmarks [L, 2], weights and paths [L, L]; got "
                             f"{self.landmarks.shape}, {self.weights.shape}, {self.paths.shape}")


class SubgoalPlanner:
    """Online subgoal selection over a landmark graph for a batch of environments.

    Away from landmarks, the planner scores every landmark i within `cutoff` of the state by
    ``d(s, l_i) + min_j (paths_ij + d(l_j, g))``; on a landmark (within `reach_radius`) it only follows the
    graph's own (model-checked) edges. It commits to the chosen landmark for its estimated step count and
    re-plans when that runs out or the landmark is reached.

    Args:
        graph: the landmark graph.
        distance: step distances (critic estimates, or exact for the oracle).
        cutoff: steps; a goal this close is pursued directly, and state-to-landmark and landmark-to-goal
            hops longer than this are dropped (except the nearest).
        reach_radius: a landmark within this Euclidean distance counts as reached.
    """

    def __init__(self, graph: LandmarkGraph, distance: StepDistance, cutoff: float, reach_radius: float):
        self.graph, self.landmarks, self.distance = graph, graph.landmarks, distance
        self.cutoff, self.reach_radius = cutoff, reach_radius

    def reset(self, goals: np.ndarray) -> None:
        """Start new episodes towards `goals [B, 2]`; the first call plans from scratch."""
        self.goals = goals
        self.subgoal = np.full(len(goals), -1)  # landmark index, -1 for the goal itself
        self.steps_left = np.zeros(len(goals), dtype=int)
        self.to_goal = self._hops(goals, into_points=True)  # [B, L]

    def _hops(self, points: np.ndarray, into_points: bool) -> np.ndarray:
        """Return `[B, L]` hops landmark -> point (or point -> landmark); long ones cut, the nearest kept."""
        d = self.distance.matrix(self.landmarks, points).T if into_points else \
            self.distance.matrix(points, self.landmarks)  # [B, L]
        nearest = d.argmin(1)
        cut = d > self.cutoff
        cut[np.arange(len(points)), nearest] = False
        return np.where(cut, np.inf, d)

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Return the current target `[B, 2]` (a landmark or the goal) for `states [B, 2]`."""
        on_landmark = self.subgoal >= 0
        reached = np.zeros(len(states), dtype=bool)
        reached[on_landmark] = np.linalg.norm(
            states[on_landmark] - self.landmarks[self.subgoal[on_landmark]], axis=1) <= self.reach_radius
        replan = np.flatnonzero((self.steps_left <= 0) | reached)
        if len(replan):
            self._plan(replan, states[replan])
        self.steps_left -= 1
        return np.where((self.subgoal >= 0)[:, None], self.landmarks[self.subgoal], self.goals)

    def _plan(self, envs: np.ndarray, states: np.ndarray) -> None:
        """Choose new subgoals and commitments for the environments `envs` at `states`."""
        rows = np.arange(len(envs))
        direct = self.distance.pairs(states, self.goals[envs])  # [n]
        gap = np.linalg.norm(states[:, None] - self.landmarks[None], axis=-1)  # [n, L]
        here = gap <= self.reach_radius
        # On a landmark, follow its graph edges; elsewhere, hop to any landmark within the cut-off.
        hop = self._hops(states, into_points=False)  # [n, L]
        on = here.any(1)
        hop[on] = self.graph.weights[gap[on].argmin(1)]
        hop[here] = np.inf  # a reached landmark is no subgoal: move on along the route
        to_goal = (self.graph.paths[None] + self.to_goal[envs][:, None, :]).min(axis=2)  # [n, L]
        total = hop + to_goal
        best = total.argmin(1)
        go_direct = (direct <= self.cutoff) | ~np.isfinite(total[rows, best])
        self.subgoal[envs] = np.where(go_direct, -1, best)
        commit = np.where(go_direct, direct, hop[rows, best])
        self.steps_left[envs] = np.maximum(1, np.ceil(commit)).astype(int)
