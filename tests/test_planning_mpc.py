"""CEM model-predictive control on the exact model: greedy in the open, stuck behind a wall."""

import numpy as np
import pytest

from gnnsim.planning.benchmark import evaluate
from gnnsim.planning.dynamics import ExactDynamics
from gnnsim.planning.maze import Maze
from gnnsim.planning.mpc import CEMController, MPCConfig

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


def test_cem_reaches_a_visible_goal_but_not_one_behind_a_wall():
    maze = Maze.from_text(WALL, max_step=0.5, success_radius=0.3)
    mpc = CEMController(ExactDynamics(maze), MPCConfig(horizon=5, samples=32, elites=4, iters=2),
                        np.random.default_rng(0))
    starts = np.array([[1.5, 1.5], [4.5, 1.5]])
    goals = np.array([[7.5, 2.5], [4.5, 5.5]])  # in the open; straight above, across the wall
    ok, path = evaluate(maze, mpc, starts, goals, horizon=40)
    assert ok.tolist() == [True, False]
    assert path[1, -1, 1] < 3.0  # pinned under the wall, where the distance cost is lowest


def test_cem_rejects_more_elites_than_samples():
    with pytest.raises(ValueError, match="elites"):
        CEMController(None, MPCConfig(samples=4, elites=5), np.random.default_rng(0))
