"""The learned world model: the point agent and the wall cells it can touch as a graph simulator.

Per state, one small graph: an AGENT node and a WALL node for every wall cell whose box lies within the
contact radius (L-inf, in cells) of the agent, joined by contact edges both ways. An edge carries the
offset from its receiver to its sender through the closest point of the wall box, that offset's length, and
the offset through the box centre (which tells a state that drifted into a wall from one outside it):
nothing depends on absolute position. Node features are the node-type one-hot and the action (zeros on
walls). The project's encode-process-decode core maps the graph to the agent's normalised contact
correction: next = state + action * max_step (the wall-free move) + correction, so free space is the easy
case and the network's precision goes to the walls, where a persistent error would tunnel. A batch of B
states is one disjoint graph with the B agents first. Contact edges play the part of MeshGraphNets' world
edges (Pfaff et al., ICLR 2021, https://arxiv.org/abs/2010.03409); training uses its input noise with
corrected targets, on random transitions of the exploration kind, half of them from states pushed against walls
and into corners: trained on uniform states only, a model pressed into a concave corner by a goal-seeking policy
crept through the one-cell wall (87 % of 40-step constant-action pushes ended over half a cell from the truth,
1 % with pushed states), and the critic learned the imagined shortcuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gnnsim.graph import EdgeSet, Graph
from gnnsim.nn.encode_process_decode import EncodeProcessDecode, ModelConfig
from gnnsim.normalization import Normalizer
from gnnsim.planning.dynamics import DynamicsModel, ExactDynamics, OneStepModel, random_transitions
from gnnsim.planning.maze import Maze

AGENT, WALL = 0, 1
NODE_SIZE, EDGE_SIZE = 4, 5  # [agent, wall, action x, action y]; [dx, dy, |d|, centre dx, centre dy]
EDGE_SET = "contact"


@dataclass
class WorldModelConfig:
    """Size and training schedule of the learned dynamics."""

    samples: int = 20_000  # random training transitions
    near_wall: float = 0.25  # share of training states drawn among those with a wall in contact range
    pinned: float = 0.5  # share reached by pushing with one constant action: against walls, in corners
    noise: float = 0.05  # std of the input-state noise (cells); the target still ends at the clean next state
    contact_radius: float = 1.0  # wall cells within this many max_steps (L-inf) of the agent become nodes
    latent_size: int = 32
    num_blocks: int = 2
    hidden_layers: int = 1
    steps: int = 3000  # Adam steps
    batch_size: int = 256
    lr: float = 3e-3  # decays by 10x over the steps

    def __post_init__(self):
        """Validate the shares and sizes."""
        for name in ("near_wall", "pinned"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"world_model.{name}: expected a share in [0, 1], got {getattr(self, name)}")
        if self.near_wall + self.pinned > 1.0:
            raise ValueError(f"world_model.near_wall + world_model.pinned: expected shares summing to <= 1, got "
                             f"{self.near_wall} + {self.pinned}")
        if self.contact_radius < 1.0:
            raise ValueError(f"world_model.contact_radius: expected >= 1 (one move), got "
                             f"{self.contact_radius}")
        if self.noise < 0:
            raise ValueError(f"world_model.noise: expected a std >= 0, got {self.noise}")
        if min(self.samples, self.steps, self.batch_size) < 1:
            raise ValueError(f"world_model: samples, steps and batch_size must be >= 1, got {self}")


@dataclass
class ContactGraphs:
    """A batch of agent-wall graphs as numpy arrays; agents are nodes `0..B-1`, walls follow.

    Attributes:
        node_features: `[B + W, 4]` type one-hot and action.
        edge_features: `[2W, 5]` receiver-to-sender offset via the closest wall point, its length, and the
            offset via the wall centre.
        senders: `[2W]`.
        receivers: `[2W]`.
        wall_cells: `[W, 2]` (row, col) of each wall node, in node order.
    """

    node_features: np.ndarray
    edge_features: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    wall_cells: np.ndarray


def contact_graphs(walls: np.ndarray, radius: float, states: np.ndarray, actions: np.ndarray
                   ) -> ContactGraphs:
    """Build one agent-wall contact graph per state, vectorised over the batch.

    Args:
        walls: `[H, W]` bool wall grid, row 0 at the bottom.
        radius: contact radius in cells (L-inf distance from the agent to a wall box).
        states: `[B, 2]` agent positions (x, y).
        actions: `[B, 2]` actions.

    Returns:
        The disjoint batch graph.
    """
    b = len(states)
    k = math.ceil(radius)
    dr, dc = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
    cell = np.floor(states).astype(np.int64)  # [B, 2] (col, row)
    rows = cell[:, 1:2] + dr.reshape(1, -1)  # [B, K]
    cols = cell[:, 0:1] + dc.reshape(1, -1)
    h, w = walls.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    agent, slot = np.nonzero(inside & walls[rows.clip(0, h - 1), cols.clip(0, w - 1)])  # wall candidates
    row, col = rows[agent, slot], cols[agent, slot]
    lo = np.stack([col, row], axis=-1).astype(np.float64)  # [C, 2] box corner (x, y)
    pos = states[agent]  # [C, 2]
    d = np.clip(pos, lo, lo + 1.0) - pos  # [C, 2] agent -> closest wall point
    near = np.abs(d).max(axis=-1) <= radius
    agent, row, col, d = agent[near], row[near], col[near], d[near]  # [W], ordered by agent
    centre = lo[near] + 0.5 - pos[near]  # [W, 2]
    wall_node = b + np.arange(len(agent))
    nodes = np.zeros((b + len(agent), NODE_SIZE))
    nodes[:b, AGENT] = 1.0
    nodes[:b, 2:] = actions
    nodes[b:, WALL] = 1.0
    # Sender minus receiver: wall -> agent carries +d, agent -> wall carries -d.
    rel, rel_centre = np.concatenate([d, -d]), np.concatenate([centre, -centre])
    edges = np.concatenate([rel, np.linalg.norm(rel, axis=-1, keepdims=True), rel_centre], axis=1)
    return ContactGraphs(nodes, edges, np.concatenate([wall_node, agent]), np.concatenate([agent, wall_node]),
                         np.stack([row, col], axis=1))


class GraphDynamics(OneStepModel, nn.Module):
    """A `DynamicsModel` whose one-step motion is the project's encode-process-decode GNN.

    Args:
        maze: the maze whose walls make the graphs (the network itself never sees absolute positions).
        cfg: model sizes and contact radius.
    """

    def __init__(self, maze: Maze, cfg: WorldModelConfig):
        super().__init__()
        self.maze, self.radius = maze, cfg.contact_radius * maze.max_step
        model_cfg = ModelConfig(latent_size=cfg.latent_size, num_blocks=cfg.num_blocks,
                                hidden_layers=cfg.hidden_layers)
        self.net = EncodeProcessDecode.build(NODE_SIZE, {EDGE_SET: EDGE_SIZE}, 2, model_cfg)
        self.node_norm, self.edge_norm = Normalizer(NODE_SIZE), Normalizer(EDGE_SIZE)
        self.target_norm = Normalizer(2)

    def graphs(self, states: np.ndarray, actions: np.ndarray) -> ContactGraphs:
        """Return the contact graphs of `states [B, 2]` under `actions [B, 2]` in this maze."""
        return contact_graphs(self.maze.walls, self.radius, states, np.clip(actions, -1.0, 1.0))

    def forward(self, graphs: ContactGraphs) -> Tensor:
        """Return the normalised contact correction `[B, 2]` of each graph's agent."""
        g = Graph(self.node_norm(_t(graphs.node_features), accumulate=False),
                  {EDGE_SET: EdgeSet(self.edge_norm(_t(graphs.edge_features), accumulate=False),
                                     torch.as_tensor(graphs.senders), torch.as_tensor(graphs.receivers))})
        b = len(graphs.node_features) - len(graphs.wall_cells)
        return self.net(g)[:b]  # [B, 2]

    @torch.inference_mode()
    def predict(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Return `[B, 2]` next states for `[B, 2]` states and `[B, 2]` actions in `[-1, 1]`."""
        if states.shape != actions.shape or states.ndim != 2 or states.shape[1] != 2:
            raise ValueError(f"states and actions must both be [B, 2], got {states.shape}, {actions.shape}")
        contact = self.target_norm.inverse(self(self.graphs(states, actions))).double().numpy()  # [B, 2]
        return WallFreeDynamics(self.maze).predict(states, actions) + contact


class WallFreeDynamics(OneStepModel):
    """The baseline that ignores walls: next = state + action * max_step.

    Args:
        maze: gives the step size only.
    """

    def __init__(self, maze: Maze):
        self.maze = maze

    def predict(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Return `[B, 2]` next states, walls ignored."""
        return states + np.clip(actions, -1.0, 1.0) * self.maze.max_step


def pushed_transitions(maze: Maze, n: int, rng: np.random.Generator, max_push: int = 10
                       ) -> dict[str, np.ndarray]:
    """Return transitions from states reached by pushing with one constant action for 1 to `max_push` steps.

    Many such states lie on a wall face or in a corner (uniform sampling never lands exactly there, yet a
    goal-directed policy spends much of its time pressed against walls). Half of the transitions keep pushing
    with the same action, half take a fresh uniform one.
    """
    states = maze.sample_free(n, rng)
    push = rng.uniform(-1.0, 1.0, size=(n, 2))
    steps = rng.integers(1, max_push + 1, size=n)
    for t in range(max_push):
        moving = t < steps
        states[moving] = maze.step(states[moving], push[moving])
    actions = np.where(rng.random(n)[:, None] < 0.5, push, rng.uniform(-1.0, 1.0, size=(n, 2)))
    return {"states": states, "actions": actions, "next_states": maze.step(states, actions)}


def training_transitions(maze: Maze, cfg: WorldModelConfig, rng: np.random.Generator
                         ) -> dict[str, np.ndarray]:
    """Return random transitions: a `near_wall` share from states with a wall in contact range, a `pinned`
    share from `pushed_transitions`, the rest from uniform free states."""
    n_near = int(round(cfg.near_wall * cfg.samples))
    n_pinned = min(int(round(cfg.pinned * cfg.samples)), cfg.samples - n_near)
    data = random_transitions(maze, cfg.samples - n_near - n_pinned, rng)
    pool = random_transitions(maze, 4 * n_near, rng)
    radius = cfg.contact_radius * maze.max_step
    touching = np.unique(contact_graphs(maze.walls, radius, pool["states"], pool["actions"]).receivers)
    touching = touching[touching < len(pool["states"])]  # agents receiving a contact edge
    if len(touching) < n_near:
        raise ValueError(f"world_model.near_wall: only {len(touching)} of {4 * n_near} random states touch a "
                         f"wall; lower it")
    pick = rng.choice(touching, size=n_near, replace=False)
    pinned = pushed_transitions(maze, n_pinned, rng)
    return {k: np.concatenate([data[k], pool[k][pick], pinned[k]]) for k in data}


def fit_world_model(maze: Maze, cfg: WorldModelConfig, seed: int) -> tuple[GraphDynamics, list[float]]:
    """Fit a `GraphDynamics` to random transitions of `maze` with Adam (MSE on the normalised correction).

    As in MeshGraphNets, input states get Gaussian noise and the target correction still ends at the clean
    next state, so the model learns to undo its own drift (out of walls, too). Normalisers take their
    statistics from the whole (noisy) training set once, before the first step.

    Args:
        maze: the environment that generates the transitions.
        cfg: model and schedule.
        seed: seeds the data and the initial weights.

    Returns:
        The fitted model (in eval mode) and the loss every 100 steps.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = GraphDynamics(maze, cfg)
    data = training_transitions(maze, cfg, rng)
    states = data["states"] + cfg.noise * rng.standard_normal(data["states"].shape)  # [N, 2]
    full = model.graphs(states, data["actions"])
    model.node_norm(_t(full.node_features), accumulate=True)
    model.edge_norm(_t(full.edge_features), accumulate=True)
    correction = data["next_states"] - WallFreeDynamics(maze).predict(states, data["actions"])  # [N, 2]
    targets = model.target_norm(_t(correction), accumulate=True)
    opt = torch.optim.Adam(model.net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1.0 / cfg.steps))
    losses = []
    model.train()
    for step in range(cfg.steps):
        idx = rng.integers(cfg.samples, size=cfg.batch_size)
        loss = (model(model.graphs(states[idx], data["actions"][idx])) - targets[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            losses.append(loss.item())
    return model.eval(), losses


def world_model_errors(model: DynamicsModel, maze: Maze, rng: np.random.Generator, samples: int = 4000,
                       starts: int = 500, steps: int = 20) -> dict[str, float]:
    """Return one-step and `steps`-step open-loop errors (cells) of `model` and of `WallFreeDynamics`.

    One-step errors are over fresh random transitions (held out from training); open-loop errors compare the
    position after `steps` uniform random actions from random free starts with `ExactDynamics.rollout`. Pushes
    hold one random full-strength action for `steps` steps, pressing into walls and corners as a goal-seeking
    policy does: `push_miss` is the share that ends over half a cell from the truth (through a wall, mostly).

    Args:
        model: the `DynamicsModel` under test.
        maze: the environment.
        rng: random generator for the held-out data.
        samples: one-step transitions.
        starts: open-loop rollouts and pushes.
        steps: open-loop and push length.

    Returns:
        `{"one_step", "rollout", "push_miss"}`, the same with a `baseline_` prefix, and `"rollout_steps"`.
    """
    data = random_transitions(maze, samples, rng)
    x0 = maze.sample_free(starts, rng)
    acts = rng.uniform(-1.0, 1.0, size=(starts, steps, 2))
    push = rng.uniform(-1.0, 1.0, size=(starts, 1, 2))
    push = np.repeat(push / np.abs(push).max(axis=-1, keepdims=True), steps, axis=1)  # [S, T, 2], one |a| = 1
    exact = ExactDynamics(maze)
    truth, push_truth = exact.rollout(x0, acts)[:, -1], exact.rollout(x0, push)[:, -1]
    out: dict[str, float] = {"rollout_steps": steps}
    for name, m in (("", model), ("baseline_", WallFreeDynamics(maze))):
        out[name + "one_step"] = _rmse(m.predict(data["states"], data["actions"]), data["next_states"])
        out[name + "rollout"] = _rmse(m.rollout(x0, acts)[:, -1], truth)
        miss = np.linalg.norm(m.rollout(x0, push)[:, -1] - push_truth, axis=-1) > 0.5
        out[name + "push_miss"] = float(miss.mean())
    return out


def _rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Return the root mean squared Euclidean distance between `[N, 2]` point sets."""
    return float(np.sqrt(np.mean(np.sum((pred - truth) ** 2, axis=-1))))


def _t(x: np.ndarray) -> Tensor:
    """Return a float32 tensor of a numpy array."""
    return torch.as_tensor(x, dtype=torch.float32)
