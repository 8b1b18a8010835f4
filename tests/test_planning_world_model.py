"""The learned world model: contact graphs against brute force, invariances, a fit that beats the walls-off
baseline."""

import numpy as np
import pytest
import torch

from gnnsim.planning.benchmark import MazeConfig, make_maze
from gnnsim.planning.dynamics import DynamicsModel, ExactDynamics, random_transitions
from gnnsim.planning.maze import Maze, u_layout
from gnnsim.planning.world_model import (GraphDynamics, WallFreeDynamics, WorldModelConfig, contact_graphs,
                                         fit_world_model, pushed_transitions, training_transitions,
                                         world_model_errors)

TINY = WorldModelConfig(samples=2000, noise=0.01, latent_size=16, num_blocks=1, steps=300, batch_size=128,
                        lr=1e-2)
LAYOUT = """
#######
#.....#
#.#...#
#...#.#
#######
"""


def _brute_force(walls: np.ndarray, radius: float, point: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Return {(row, col): closest wall point - point} for every wall cell within `radius` (L-inf)."""
    out = {}
    for r, c in np.argwhere(walls):
        closest = np.array([min(max(point[0], c), c + 1), min(max(point[1], r), r + 1)])
        if np.abs(closest - point).max() <= radius:
            out[(int(r), int(c))] = closest - point
    return out


@pytest.mark.parametrize("radius", [0.5, 1.3])
def test_contact_graph_holds_exactly_the_wall_cells_in_range(radius):
    maze = Maze.from_text(LAYOUT)
    states = np.array([[1.5, 1.5], [1.2, 2.9], [3.5, 2.5], [5.9, 3.1], [4.5, 1.05], [1.0001, 3.9999]])
    actions = np.random.default_rng(0).uniform(-1, 1, size=states.shape)
    g = contact_graphs(maze.walls, radius, states, actions)
    b, w = len(states), len(g.wall_cells)
    assert g.node_features.shape == (b + w, 4) and g.edge_features.shape == (2 * w, 5)
    np.testing.assert_array_equal(g.node_features[:b, 2:], actions)
    assert (g.node_features[b:, 2:] == 0).all() and (g.node_features[:, :2].sum(1) == 1).all()
    # The first W edges run wall -> agent, the next W agent -> wall.
    agent_of_wall = g.receivers[:w]
    np.testing.assert_array_equal(g.senders[w:], agent_of_wall)
    np.testing.assert_array_equal(g.receivers[w:], g.senders[:w])
    for i, p in enumerate(states):
        expected = _brute_force(maze.walls, radius, p)
        mine = np.flatnonzero(agent_of_wall == i)
        assert {tuple(g.wall_cells[k]) for k in mine} == set(expected)
        for k in mine:
            r, c = g.wall_cells[k]
            d = expected[(r, c)]
            np.testing.assert_allclose(g.edge_features[k], [*d, np.hypot(*d), c + 0.5 - p[0], r + 0.5 - p[1]])
            back = [*-d, np.hypot(*d), p[0] - c - 0.5, p[1] - r - 0.5]
            np.testing.assert_allclose(g.edge_features[w + k], back)


def test_a_state_far_from_walls_is_a_lone_agent_node():
    maze = Maze.from_text("#" * 7 + "\n" + ("#" + "." * 5 + "#\n") * 5 + "#" * 7)
    g = contact_graphs(maze.walls, 0.5, np.array([[3.5, 3.5]]), np.array([[0.3, -0.2]]))
    assert g.node_features.shape == (1, 4) and len(g.senders) == 0


@pytest.fixture(scope="module")
def fitted():
    maze = Maze.from_text(u_layout(5, 2))
    model, losses = fit_world_model(maze, TINY, seed=0)
    return maze, model, losses


def test_fitted_model_is_a_dynamics_model_that_learned(fitted):
    maze, model, losses = fitted
    assert isinstance(model, DynamicsModel) and not model.training
    assert losses[-1] < 0.2 * losses[0]
    x = maze.sample_free(5, np.random.default_rng(1))
    u = np.random.default_rng(2).uniform(-1, 1, size=(5, 3, 2))
    xs = model.rollout(x, u)
    assert xs.shape == (5, 4, 2) and xs.dtype == np.float64
    np.testing.assert_array_equal(xs[:, 0], x)


def test_a_batch_predicts_as_its_states_one_by_one(fitted):
    maze, model, _ = fitted
    rng = np.random.default_rng(3)
    x, u = maze.sample_free(8, rng), rng.uniform(-1, 1, size=(8, 2))
    single = np.concatenate([model.predict(x[i:i + 1], u[i:i + 1]) for i in range(8)])
    np.testing.assert_allclose(model.predict(x, u), single, atol=1e-6)


def test_prediction_is_translation_invariant(fitted):
    maze, model, _ = fitted
    h, w = maze.shape
    shifted_walls = np.ones((h + 3, w + 2), dtype=bool)  # the same maze, 2 columns right and 3 rows up
    shifted_walls[3:, 2:] = maze.walls
    shifted = GraphDynamics(Maze(shifted_walls, maze.max_step), TINY)
    shifted.load_state_dict(model.state_dict())
    shifted.eval()
    rng = np.random.default_rng(4)
    x, u = maze.sample_free(64, rng), rng.uniform(-1, 1, size=(64, 2))
    move = np.array([2.0, 3.0])
    np.testing.assert_allclose(shifted.predict(x + move, u) - (x + move), model.predict(x, u) - x, atol=1e-5)


def test_fitted_model_beats_ignoring_walls_next_to_walls(fitted):
    maze, model, _ = fitted
    cfg = WorldModelConfig(samples=1000, near_wall=1.0, pinned=0.0)
    data = training_transitions(maze, cfg, np.random.default_rng(5))  # all in contact range: held out
    truth = data["next_states"]
    err = np.linalg.norm(model.predict(data["states"], data["actions"]) - truth, axis=1)
    base = np.linalg.norm(WallFreeDynamics(maze).predict(data["states"], data["actions"]) - truth, axis=1)
    blocked = base > 0.05
    assert blocked.mean() > 0.1  # the baseline really is wrong on many of them
    # Seed 0 gives 0.038 vs 0.101 overall and 0.073 vs 0.220 where a wall blocks (seed 1: 0.033, 0.060).
    assert np.sqrt((err ** 2).mean()) < 0.8 * np.sqrt((base ** 2).mean())
    assert np.sqrt((err[blocked] ** 2).mean()) < 0.6 * np.sqrt((base[blocked] ** 2).mean())


def test_errors_are_zero_for_the_exact_model_and_positive_for_the_baseline():
    maze = Maze.from_text(u_layout(5, 2))
    e = world_model_errors(ExactDynamics(maze), maze, np.random.default_rng(0), samples=200, starts=50,
                           steps=20)
    assert e["one_step"] == 0.0 and e["rollout"] == 0.0 and e["push_miss"] == 0.0 and e["rollout_steps"] == 20
    assert e["baseline_one_step"] > 0.01 and e["baseline_rollout"] > 0.1
    # 20 full-strength pushes move 10 cells; ignoring walls, nearly every one ends inside or beyond a wall.
    assert e["baseline_push_miss"] > 0.9


def _touching(maze: Maze, states: np.ndarray) -> np.ndarray:
    """Return `[B]` bool: the state lies on a wall face (the true step stops 1e-6 short of it)."""
    g = contact_graphs(maze.walls, 1e-5, states, np.zeros_like(states))
    return np.isin(np.arange(len(states)), g.receivers)


def test_pushed_states_are_pinned_to_walls_where_uniform_ones_never_are():
    maze = Maze.from_text(LAYOUT)
    rng = np.random.default_rng(0)
    pushed, uniform = pushed_transitions(maze, 2000, rng), random_transitions(maze, 2000, rng)
    np.testing.assert_array_equal(pushed["next_states"], maze.step(pushed["states"], pushed["actions"]))
    assert maze.is_free(pushed["states"]).all()
    assert _touching(maze, uniform["states"]).mean() == 0.0
    # 3 to 5 free cells per row and column, pushes of 0.5 to 5 cells: most runs end on a face.
    assert _touching(maze, pushed["states"]).mean() > 0.5


def test_training_transitions_take_their_shares_in_order():
    maze = Maze.from_text(LAYOUT)
    cfg = WorldModelConfig(samples=800, near_wall=0.25, pinned=0.5)
    data = training_transitions(maze, cfg, np.random.default_rng(1))
    assert all(len(v) == 800 for v in data.values())
    touching = _touching(maze, data["states"])
    assert touching[:400].mean() == 0.0 and touching[400:].mean() > 0.5  # 200 uniform, 200 near a wall, 400 pinned


def test_shares_summing_over_one_name_both_fields():
    with pytest.raises(ValueError, match="near_wall \\+ world_model.pinned"):
        WorldModelConfig(near_wall=0.6, pinned=0.5)


@pytest.mark.parametrize("field, value", [("near_wall", 1.5), ("pinned", -0.1), ("contact_radius", 0.5),
                                          ("noise", -0.1), ("steps", 0)])
def test_bad_world_model_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        WorldModelConfig(**{field: value})


def test_fit_is_seeded():
    maze = Maze.from_text(u_layout(5, 1))
    cfg = WorldModelConfig(samples=200, latent_size=8, num_blocks=1, steps=5, batch_size=16)
    a, _ = fit_world_model(maze, cfg, seed=7)
    b, _ = fit_world_model(maze, cfg, seed=7)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k


def test_the_default_model_holds_a_push_into_walls_and_corners():
    # The planning benchmark's model and maze. Pushing one action for 40 steps presses the agent into walls and
    # corners; seed 0 misses by over half a cell on 0.6 % of pushes, and on 84 % when trained without pushed
    # states (`pinned=0`, `near_wall=0.5`): it crept through one-cell walls and taught the critic shortcuts.
    maze = make_maze(MazeConfig())
    model, _ = fit_world_model(maze, WorldModelConfig(), seed=0)
    e = world_model_errors(model, maze, np.random.default_rng(0), samples=500, starts=500, steps=40)
    assert e["push_miss"] < 0.05 and e["baseline_push_miss"] > 0.95
    assert e["one_step"] < 0.25 * e["baseline_one_step"]
