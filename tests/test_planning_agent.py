"""Hindsight replay, imagined critic data through the world model, and one training iteration."""

import numpy as np
import torch

from gnnsim.planning.agent import AgentConfig, train_agent
from gnnsim.planning.dynamics import ExactDynamics
from gnnsim.planning.maze import Maze, u_layout
from gnnsim.planning.replay import EpisodeBuffer

TINY = AgentConfig(hidden=16, horizon=10, epochs=1, envs=3, updates_per_epoch=2, batch_size=8,
                   buffer_episodes=10, imagine_starts=4, imagine_steps=3)


class CountingModel(ExactDynamics):
    """The exact model, counting the transitions it is asked to imagine."""

    calls = 0

    def predict(self, states, actions):
        self.calls += len(states)
        return super().predict(states, actions)


def test_hindsight_goals_come_from_later_in_the_same_episode():
    buf = EpisodeBuffer(capacity=4, horizon=5)
    states = np.arange(3 * 6 * 2, dtype=float).reshape(3, 6, 2)  # every state value is unique
    buf.add(states, np.zeros((3, 5, 2)), np.full((3, 2), -1.0))
    batch = buf.sample(500, np.random.default_rng(0), future=1.0)
    for s, s2, g in zip(batch["states"], batch["next_states"], batch["goals"]):
        (e, t), (e2, t2), (eg, tg) = (np.argwhere((states == v).all(-1))[0] for v in (s, s2, g))
        assert e == e2 == eg and t2 == t + 1 and t + 1 <= tg <= 5
    assert (buf.sample(50, np.random.default_rng(0), future=0.0)["goals"] == -1.0).all()


def test_one_training_iteration_is_finite_and_uses_the_model():
    torch.manual_seed(0)
    maze = Maze.from_text(u_layout(5, 1))
    model = CountingModel(maze)
    agent, buffer, log = train_agent(maze, model, TINY, seed=0)
    assert buffer.size == 3 and len(log) == 1
    assert all(np.isfinite(v) for v in log[0].values())
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    # Imagination: imagine_starts rollouts of imagine_steps steps went through the model.
    assert model.calls == TINY.imagine_starts * TINY.imagine_steps
    rng = np.random.default_rng(1)
    d = agent.distance(maze.sample_free(20, rng), maze.sample_free(20, rng))
    assert np.isfinite(d).all() and (d >= 0).all() and (d <= TINY.horizon).all()

    off = CountingModel(maze)
    train_agent(maze, off, AgentConfig(**{**TINY.__dict__, "imagined_fraction": 0.0}), seed=0)
    assert off.calls == 0


def test_open_loop_rollout_matches_repeated_steps():
    maze = Maze.from_text(u_layout(5, 1))
    rng = np.random.default_rng(3)
    x0, acts = maze.sample_free(6, rng), rng.uniform(-1, 1, size=(6, 4, 2))
    xs = ExactDynamics(maze).rollout(x0, acts)
    x = x0
    for t in range(4):
        x = maze.step(x, acts[:, t])
        np.testing.assert_array_equal(xs[:, t + 1], x)
