"""Soft Floyd-Warshall and online subgoal selection on hand-built graphs."""

import numpy as np
import pytest
from scipy.sparse.csgraph import shortest_path

from gnnsim.planning.geodesic import Geodesic, GeodesicSteps
from gnnsim.planning.landmarks import cut_edges
from gnnsim.planning.maze import Maze
from gnnsim.planning.search import LandmarkGraph, SubgoalPlanner, soft_floyd_warshall


def _random_graph(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(1.0, 10.0, size=(n, n))
    w[rng.random((n, n)) < 0.6] = np.inf  # sparse, directed, possibly disconnected
    np.fill_diagonal(w, 0.0)
    return w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_floyd_warshall_tends_to_scipy_shortest_paths(seed):
    w = _random_graph(12, seed)
    exact = shortest_path(np.where(np.isfinite(w), w, 0.0), method="FW", directed=True)
    np.testing.assert_array_equal(soft_floyd_warshall(w, 0.0), exact)
    errors = []
    for tau in (1.0, 0.1, 0.01, 0.001):
        soft = soft_floyd_warshall(w, tau)
        assert np.array_equal(np.isinf(soft), np.isinf(exact))  # same reachability
        finite = np.isfinite(exact)
        assert (soft[finite] <= exact[finite] + 1e-9).all()  # a soft minimum never exceeds the minimum
        errors.append(np.abs(soft[finite] - exact[finite]).max())
    assert errors[-1] < 1e-2 and all(a >= b for a, b in zip(errors, errors[1:]))


class Euclid:
    """Straight-line distance as the planner's step distance."""

    def pairs(self, a, b):
        return np.linalg.norm(a - b, axis=-1)

    def matrix(self, a, b):
        return np.linalg.norm(a[:, None] - b[None], axis=-1)


# A chain L0 - L1 - L2 towards the goal at (10, 0), and a detour L0 - L3 - L2 over (3, 3).
CHAIN = np.array([[2.0, 0.0], [4.0, 0.0], [6.0, 0.0], [3.0, 3.0]])
GOAL = np.array([[10.0, 0.0]])


def _chain_planner(drop_01=False):
    w = np.full((4, 4), np.inf)
    for a, b in ((0, 1), (1, 2), (0, 3), (3, 2)):
        w[a, b] = w[b, a] = np.linalg.norm(CHAIN[a] - CHAIN[b])
    if drop_01:
        w[0, 1] = np.inf  # as if the imagined rollout L0 -> L1 had failed
    np.fill_diagonal(w, 0.0)
    graph = LandmarkGraph(CHAIN, w, soft_floyd_warshall(w, 0.0))
    planner = SubgoalPlanner(graph, Euclid(), cutoff=3.0, reach_radius=0.3)
    planner.reset(GOAL)
    return planner


def test_commitment_then_replanning_on_a_hand_built_graph():
    planner = _chain_planner()
    # From (0, 0) only L0 is within the cut-off: route L0 -> L1 -> L2 -> goal (2 + 4 + 4 = 10).
    np.testing.assert_array_equal(planner(np.array([[0.0, 0.0]])), CHAIN[[0]])
    assert planner.steps_left[0] == 1  # committed for ceil(2) steps, one used
    # Teleported near L1, the planner still holds L0 for the rest of its commitment ...
    np.testing.assert_array_equal(planner(np.array([[4.5, 0.0]])), CHAIN[[0]])
    # ... then re-plans: via L2 (1.5 + 0 + 4) beats L1 (0.5 + 2 + 4) and L0 (2.5 + 4 + 4).
    np.testing.assert_array_equal(planner(np.array([[4.5, 0.0]])), CHAIN[[2]])
    assert planner.steps_left[0] == 1
    # Within the cut-off of the goal: direct pursuit once the commitment has run out.
    np.testing.assert_array_equal(planner(np.array([[8.0, 0.0]])), CHAIN[[2]])
    np.testing.assert_array_equal(planner(np.array([[8.0, 0.0]])), GOAL)


def test_on_a_landmark_the_planner_follows_only_graph_edges():
    planner = _chain_planner()
    planner(np.array([[0.0, 0.0]]))
    # Reaching L0 re-plans at once and moves on: L1 (2 + 2 + 4) beats the detour L3 (3.2 + 3.2 + 4).
    np.testing.assert_array_equal(planner(np.array([[2.1, 0.0]])), CHAIN[[1]])
    assert planner.steps_left[0] == 1  # ceil(edge length 2) - 1
    # Without the edge L0 -> L1 the detour is taken, though L1 is only 1.9 away from the state.
    planner = _chain_planner(drop_01=True)
    planner(np.array([[0.0, 0.0]]))
    np.testing.assert_array_equal(planner(np.array([[2.1, 0.0]])), CHAIN[[3]])


WALL = """
#########
#.......#
#.......#
#.......#
#.#####.#
#.......#
#.......#
#########
"""


def _pursue(maze, target_fn, start, goal, steps):
    """Straight-line pursuit of whatever `target_fn` returns; True if the goal is reached."""
    x = start.copy()
    for _ in range(steps):
        d = target_fn(x) - x
        x = maze.step(x, d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9))
        if maze.reached(x, goal).all():
            return True
    return False


def test_exact_distance_planning_goes_around_a_wall_that_blocks_straight_pursuit():
    maze = Maze.from_text(WALL, max_step=0.5, success_radius=0.3)
    geo = Geodesic(maze)
    start, goal = np.array([[4.5, 1.5]]), np.array([[4.5, 5.5]])
    assert not _pursue(maze, lambda x: goal, start, goal, 200)  # stuck under the wall

    cells = np.argwhere(~maze.walls)[:, ::-1] + 0.5  # landmarks at free cell centres
    weights = cut_edges(GeodesicSteps(geo).matrix(cells, cells), cutoff=3.0)
    graph = LandmarkGraph(cells, weights, soft_floyd_warshall(weights, 0.0))
    planner = SubgoalPlanner(graph, GeodesicSteps(geo), cutoff=3.0, reach_radius=0.3)
    planner.reset(goal)
    assert _pursue(maze, planner, start, goal, 200)
