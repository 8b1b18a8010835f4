"""Goal-conditioned DDPG with hindsight relabelling whose critic predicts the step distance to the goal.

Reward is -1 per step and an episode of a relabelled goal ends on reaching it, so with no discount
``Q(s, a, g) = -(steps to reach g)``, clipped to ``[-horizon, 0]``; ``distance(s, g) = -Q(s, pi(s, g), g)``.
Model-imagined transitions (closed-loop rollouts of the exploring policy through a `DynamicsModel`) are
appended to every update batch, so the critic's TD targets (and the actor) also see imagined data.
DDPG: Lillicrap et al. 2016, https://arxiv.org/abs/1509.02971; hindsight relabelling: Andrychowicz et al.
2017, https://arxiv.org/abs/1707.01495.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from gnnsim.planning.dynamics import DynamicsModel, ExactDynamics, policy_rollout
from gnnsim.planning.maze import Maze
from gnnsim.planning.replay import EpisodeBuffer, TransitionBuffer


@dataclass
class AgentConfig:
    """Goal-conditioned agent and its training schedule."""

    hidden: int = 256  # width of the two hidden layers of actor and critic
    fourier: int = 5  # sin/cos octaves of the state and goal coordinates added to the inputs (0: none)
    horizon: int = 50  # training episode length, and the largest distance the critic represents (steps)
    epochs: int = 800
    envs: int = 16  # episodes collected per epoch, in parallel
    updates_per_epoch: int = 40
    batch_size: int = 256  # real transitions per update (imagined ones come on top)
    buffer_episodes: int = 4000
    her_future: float = 0.8  # share of relabelled goals
    lr_actor: float = 1e-3
    lr_critic: float = 1e-3
    polyak: float = 0.95  # target network averaging
    action_l2: float = 1.0
    noise: float = 0.2  # Gaussian exploration noise on actions
    random_eps: float = 0.2  # share of uniformly random exploration actions
    imagined_fraction: float = 0.5  # imagined / real transitions per update batch (0 turns imagination off)
    imagine_starts: int = 256  # imagined rollouts started per epoch
    imagine_steps: int = 5  # length of each imagined rollout
    imagined_capacity: int = 100_000


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Return a two-hidden-layer ReLU MLP."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class GoalAgent(nn.Module):
    """Actor pi(s, g) and critic Q(s, a, g) for one maze; inputs are scaled to about [-1, 1].

    Args:
        maze_shape: (height, width) of the maze in cells, for input scaling.
        cfg: agent configuration.
    """

    def __init__(self, maze_shape: tuple[int, int], cfg: AgentConfig):
        super().__init__()
        self.cfg = cfg
        h, w = maze_shape
        self.register_buffer("center", torch.tensor([w / 2, h / 2], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(max(h, w) / 2, dtype=torch.float32))
        self.register_buffer("freqs", torch.pi * 2.0 ** torch.arange(cfg.fourier, dtype=torch.float32))
        n_in = 6 + 8 * cfg.fourier
        self.actor = _mlp(n_in, cfg.hidden, 2)
        self.critic = _mlp(n_in + 2, cfg.hidden, 1)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_critic)

    def _features(self, s: Tensor, g: Tensor) -> Tensor:
        """Return network inputs `[B, 6 + 8 F]` for states and goals `[B, 2]`."""
        pos = torch.cat([s - self.center, g - self.center], dim=-1) / self.scale  # [B, 4]
        angles = (pos[:, :, None] * self.freqs).flatten(1)  # [B, 4 F]
        # Octave features let a small MLP resolve walls a fraction of a cell thick.
        return torch.cat([pos, (g - s) / self.scale, angles.sin(), angles.cos()], dim=-1)  # [B, 6 + 8 F]

    def pi(self, s: Tensor, g: Tensor, target: bool = False) -> Tensor:
        """Return actions `[B, 2]` in [-1, 1] for states and goals `[B, 2]`."""
        net = self.actor_target if target else self.actor
        return torch.tanh(net(self._features(s, g)))

    def q(self, s: Tensor, a: Tensor, g: Tensor, target: bool = False) -> Tensor:
        """Return Q values `[B]` (minus the step distance) for states, actions and goals `[B, 2]`."""
        net = self.critic_target if target else self.critic
        return net(torch.cat([self._features(s, g), a], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def act(self, states: np.ndarray, goals: np.ndarray, rng: np.random.Generator | None = None
            ) -> np.ndarray:
        """Return actions `[B, 2]` for states and goals `[B, 2]`; explore when `rng` is given."""
        a = self.pi(_t(states), _t(goals)).numpy().astype(np.float64)
        if rng is None:
            return a
        a = np.clip(a + self.cfg.noise * rng.standard_normal(a.shape), -1.0, 1.0)
        rand = rng.random(len(a)) < self.cfg.random_eps
        a[rand] = rng.uniform(-1.0, 1.0, size=(int(rand.sum()), 2))
        return a

    @torch.no_grad()
    def distance(self, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Return the critic's step distance from `states[i]` to `goals[i]`.

        Args:
            states: `[N, 2]`.
            goals: `[N, 2]`.

        Returns:
            `[N]` distances in steps, in `[0, horizon]`.
        """
        s, g = _t(states), _t(goals)
        return (-self.q(s, self.pi(s, g), g)).clamp(0.0, self.cfg.horizon).numpy().astype(np.float64)

    def pairwise_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N, M]` critic step distances from each of `a [N, 2]` to each of `b [M, 2]`."""
        n, m = len(a), len(b)
        return self.distance(np.repeat(a, m, axis=0), np.tile(b, (n, 1))).reshape(n, m)

    def update(self, batch: dict[str, np.ndarray], reached: np.ndarray) -> dict[str, float]:
        """Take one critic and one actor step, then move the target networks.

        Args:
            batch: `{"states", "actions", "next_states", "goals"}`, each `[B, 2]`.
            reached: `[B]` bool, whether `next_states` reaches `goals` (the episode ends there).

        Returns:
            `{"critic_loss", "actor_loss", "q_mean"}`.
        """
        s, a, s2, g = (_t(batch[k]) for k in ("states", "actions", "next_states", "goals"))
        done = torch.as_tensor(reached, dtype=torch.float32)
        with torch.no_grad():
            q_next = self.q(s2, self.pi(s2, g, target=True), g, target=True)
            y = (-1.0 + (1.0 - done) * q_next).clamp(-float(self.cfg.horizon), 0.0)
        q = self.q(s, a, g)
        critic_loss = (q - y).pow(2).mean()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        pi = self.pi(s, g)
        actor_loss = -self.q(s, pi, g).mean() + self.cfg.action_l2 * pi.pow(2).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, pt in zip(net.parameters(), tgt.parameters()):
                    pt.lerp_(p, 1.0 - self.cfg.polyak)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "q_mean": q.mean().item()}


class CriticSteps:
    """The critic's step distance as a `StepDistance` for the planner."""

    def __init__(self, agent: GoalAgent):
        self.agent = agent

    def pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N]` critic steps from `a[i]` to `b[i]`."""
        return self.agent.distance(a, b)

    def matrix(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N, M]` critic steps from each of `a` to each of `b`."""
        return self.agent.pairwise_distance(a, b)


def _t(x: np.ndarray) -> Tensor:
    """Return a float32 tensor view of a numpy array."""
    return torch.as_tensor(x, dtype=torch.float32)


def train_agent(maze: Maze, model: DynamicsModel, cfg: AgentConfig, seed: int, bar: tqdm | None = None
                ) -> tuple[GoalAgent, EpisodeBuffer, list[dict[str, float]]]:
    """Train a goal-conditioned agent with hindsight relabelling and model-imagined critic data.

    Each epoch: (1) collect `envs` episodes from uniform free starts towards uniform free goals;
    (2) imagine short closed-loop rollouts through `model` from replayed states and relabelled goals;
    (3) take `updates_per_epoch` updates on real batches plus imagined transitions; (4) log.

    Args:
        maze: the environment (true dynamics for collection).
        model: the world model used for imagination.
        cfg: agent configuration.
        seed: seeds numpy and torch.
        bar: optional progress bar, advanced once per epoch.

    Returns:
        The agent, its replay buffer, and one log dict per epoch.
    """
    if not 0.0 <= cfg.imagined_fraction <= 4.0:
        raise ValueError(f"imagined_fraction must be in [0, 4], got {cfg.imagined_fraction}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    agent = GoalAgent(maze.shape, cfg)
    buffer = EpisodeBuffer(cfg.buffer_episodes, cfg.horizon)
    imagined = TransitionBuffer(cfg.imagined_capacity)
    n_imagined = int(round(cfg.imagined_fraction * cfg.batch_size))
    real = ExactDynamics(maze)  # collection steps the environment itself
    log = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        # 1. Collect real episodes.
        starts, goals = maze.sample_free(cfg.envs, rng), maze.sample_free(cfg.envs, rng)
        xs, us = policy_rollout(real, starts, goals, lambda s, g: agent.act(s, g, rng), cfg.horizon)
        buffer.add(xs, us, goals)
        success = maze.reached(xs, goals[:, None]).any(axis=1).mean()

        # 2. Imagine through the world model from replayed states towards hindsight goals.
        if n_imagined:
            seed_batch = buffer.sample(cfg.imagine_starts, rng, cfg.her_future)
            g = seed_batch["goals"]
            ix, iu = policy_rollout(model, seed_batch["states"], g, lambda s, gg: agent.act(s, gg, rng),
                                    cfg.imagine_steps)
            imagined.add({"states": ix[:, :-1].reshape(-1, 2), "actions": iu.reshape(-1, 2),
                          "next_states": ix[:, 1:].reshape(-1, 2),
                          "goals": np.repeat(g, cfg.imagine_steps, axis=0)})

        # 3. Update on real + imagined transitions.
        stats = []
        for _ in range(cfg.updates_per_epoch):
            batch = buffer.sample(cfg.batch_size, rng, cfg.her_future)
            if n_imagined:
                extra = imagined.sample(n_imagined, rng)
                batch = {k: np.concatenate([batch[k], extra[k]]) for k in batch}
            stats.append(agent.update(batch, maze.reached(batch["next_states"], batch["goals"])))

        # 4. Log.
        entry = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
        entry.update(epoch=epoch, train_success=float(success), seconds=time.perf_counter() - t0)
        log.append(entry)
        if bar is not None:
            bar.update()
    return agent, buffer, log

