"""The planning benchmark: success rate against shortest-path distance for HER, MPC, L3P and an oracle.

Per seed: fit the world model (the GNN `GraphDynamics` on random transitions, or take the exact simulator),
train one goal-conditioned agent (hindsight relabelling + critic data imagined in the world model), then
evaluate on start/goal pairs bucketed by exact shortest-path distance (steps):

- ``her``: the agent pursues the goal directly.
- ``mpc``: CEM shooting on the world model alone, Euclidean distance-to-goal cost (no critic, no graph).
- ``l3p``: latent landmarks + critic distances + model-checked edges + soft Floyd-Warshall + subgoals.
- ``oracle``: the same landmarks, model checks and planner, but every distance is the exact shortest path.

The three agent-based methods share the trained agent, so differences come from planning alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from gnnsim.planning.agent import AgentConfig, CriticSteps, GoalAgent, train_agent
from gnnsim.planning.dynamics import DynamicsModel, ExactDynamics
from gnnsim.planning.geodesic import Geodesic, GeodesicSteps
from gnnsim.planning.landmarks import (GoalEmbedding, LandmarkConfig, check_edges, cut_edges, fit_embedding,
                                       select_landmarks)
from gnnsim.planning.maze import LAYOUTS, Maze
from gnnsim.planning.mpc import CEMController, MPCConfig
from gnnsim.planning.report import write_report
from gnnsim.planning.search import LandmarkGraph, SubgoalPlanner, soft_floyd_warshall
from gnnsim.planning.world_model import WorldModelConfig, fit_world_model, world_model_errors

logger = logging.getLogger(__name__)

METHODS = ("her", "mpc", "l3p", "oracle")
DYNAMICS = ("learned", "exact")


@dataclass
class MazeConfig:
    """Which maze: `layout` in serpentine | u | four_rooms; `size` is the corridor length (serpentine, u)
    or the room side (four_rooms); `width` the corridor or door width; `corridors` is for serpentine."""

    layout: str = "serpentine"
    corridors: int = 5
    size: int = 10
    width: int = 2
    max_step: float = 0.5
    success_radius: float = 0.5


@dataclass
class EvalConfig:
    """Evaluation pairs and episode length."""

    buckets: int = 4  # equal-width bins of shortest-path steps, from 0 to the longest sampled pair
    pairs_per_bucket: int = 100
    candidates: int = 20_000  # random pairs drawn to fill the buckets
    horizon: int = 400  # steps per evaluation episode


@dataclass
class PlanningConfig:
    """Everything one benchmark run needs; `PlanningConfig.smoke()` runs in seconds."""

    maze: MazeConfig = field(default_factory=MazeConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    mpc: MPCConfig = field(default_factory=MPCConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dynamics: str = "learned"  # the world model: "learned" (GraphDynamics, fitted per seed) or "exact"
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    temperature: float = 0.1  # soft Floyd-Warshall temperature (steps)
    workers: int = 1  # seeds run in parallel processes, one torch thread each (results do not change)

    @staticmethod
    def smoke() -> PlanningConfig:
        """Return a tiny setting (a few seconds) that exercises every method."""
        return PlanningConfig(
            maze=MazeConfig(layout="u", size=6, width=2),
            agent=AgentConfig(hidden=32, horizon=20, epochs=3, envs=4, updates_per_epoch=5, batch_size=32,
                              buffer_episodes=50, imagine_starts=16, imagine_steps=3),
            landmarks=LandmarkConfig(count=8, latent_dim=4, hidden=16, embed_steps=5, embed_batch=32,
                                     candidates=200, kmeans_iters=2, cutoff=8.0),
            mpc=MPCConfig(horizon=4, samples=8, elites=2, iters=1),
            eval=EvalConfig(buckets=2, pairs_per_bucket=4, candidates=400, horizon=30),
            world_model=WorldModelConfig(samples=500, latent_size=8, num_blocks=1, steps=30, batch_size=32),
            seeds=[0],
        )


def make_maze(cfg: MazeConfig) -> Maze:
    """Build the maze named by `cfg.layout`."""
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"maze layout must be one of {sorted(LAYOUTS)}, got {cfg.layout!r}")
    if cfg.layout == "serpentine":
        text = LAYOUTS["serpentine"](cfg.corridors, cfg.size, cfg.width)
    elif cfg.layout == "u":
        text = LAYOUTS["u"](cfg.size, cfg.width)
    else:
        text = LAYOUTS["four_rooms"](cfg.size, cfg.width)
    return Maze.from_text(text, max_step=cfg.max_step, success_radius=cfg.success_radius)


def bucket_pairs(maze: Maze, geodesic: Geodesic, cfg: EvalConfig, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw start/goal pairs and keep up to `pairs_per_bucket` per shortest-path distance bucket.

    Returns:
        starts `[N, 2]`, goals `[N, 2]`, bucket index `[N]`, and bucket edges `[buckets + 1]` in steps.
    """
    starts, goals = maze.sample_free(cfg.candidates, rng), maze.sample_free(cfg.candidates, rng)
    steps = geodesic.pairs(starts, goals) / maze.max_step
    edges = np.linspace(0.0, steps.max(), cfg.buckets + 1)
    which = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, cfg.buckets - 1)
    counts = np.bincount(which, minlength=cfg.buckets)
    if counts.min() == 0:
        raise ValueError(f"pairs per distance bucket {counts.tolist()}: one is empty; raise eval.candidates")
    keep = np.concatenate([np.flatnonzero(which == b)[:cfg.pairs_per_bucket] for b in range(cfg.buckets)])
    return starts[keep], goals[keep], which[keep], edges


class Controller(Protocol):
    """A closed-loop controller for a batch of episodes."""

    def reset(self, goals: np.ndarray) -> None:
        """Start episodes towards `goals [B, 2]`."""
        ...

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Return actions `[B, 2]` for `states [B, 2]`."""
        ...


class DirectController:
    """The agent pursuing the goal itself (HER alone)."""

    def __init__(self, agent: GoalAgent):
        self.agent = agent

    def reset(self, goals: np.ndarray) -> None:
        """Start episodes towards `goals [B, 2]`."""
        self.goals = goals

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Return the agent's actions `[B, 2]` towards the goals."""
        return self.agent.act(states, self.goals)


class PlannedController:
    """The agent pursuing the subgoals a `SubgoalPlanner` picks; the targets are recorded."""

    def __init__(self, agent: GoalAgent, planner: SubgoalPlanner):
        self.agent, self.planner = agent, planner
        self.targets: list[np.ndarray] = []

    def reset(self, goals: np.ndarray) -> None:
        """Start episodes towards `goals [B, 2]` and clear the recorded targets."""
        self.planner.reset(goals)
        self.targets = []

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Return the agent's actions `[B, 2]` towards the planner's current targets."""
        self.targets.append(self.planner(states))
        return self.agent.act(states, self.targets[-1])


def evaluate(maze: Maze, controller: Controller, starts: np.ndarray, goals: np.ndarray, horizon: int,
             bar: tqdm | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run one episode per pair (stopping each at its goal) and report success.

    Args:
        maze: the environment.
        controller: the policy under test.
        starts: `[B, 2]`.
        goals: `[B, 2]`.
        horizon: step limit.
        bar: optional progress bar, advanced once per step.

    Returns:
        success `[B]` bool and the visited states `[B, horizon + 1, 2]`.
    """
    controller.reset(goals)
    x = starts.copy()
    done = maze.reached(x, goals)
    path = [x.copy()]
    for _ in range(horizon):
        x = np.where(done[:, None], x, maze.step(x, controller(x)))
        done |= maze.reached(x, goals)
        path.append(x.copy())
        if bar is not None:
            bar.update()
    return done, np.stack(path, axis=1)


def landmark_graph(landmarks: np.ndarray, weights: np.ndarray, model: DynamicsModel, agent: GoalAgent,
                   cfg: PlanningConfig) -> LandmarkGraph:
    """Check the short edges through the world model, cut the long ones, and solve all shortest paths."""
    lc = cfg.landmarks
    weights = check_edges(model, agent.act, landmarks, weights, lc.cutoff, cfg.maze.success_radius,
                          lc.check_slack, penalty=float(cfg.agent.horizon))
    weights = cut_edges(weights, lc.cutoff)
    return LandmarkGraph(landmarks, weights, soft_floyd_warshall(weights, cfg.temperature))


def l3p_landmarks(agent: GoalAgent, episodes: np.ndarray, maze_shape: tuple[int, int], cfg: PlanningConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Fit the latent embedding to the critic and return `[L, 2]` landmark goals."""
    lc = cfg.landmarks
    embedding = GoalEmbedding(maze_shape, lc.latent_dim, lc.hidden)
    fit_embedding(embedding, episodes, agent.distance, cfg.agent.horizon, lc, rng)
    states = episodes.reshape(-1, 2)
    candidates = states[rng.choice(len(states), size=min(lc.candidates, len(states)), replace=False)]
    return select_landmarks(embedding, candidates, lc)


def world_model(maze: Maze, cfg: PlanningConfig, seed: int) -> tuple[DynamicsModel, dict[str, float]]:
    """Return the world model `cfg.dynamics` names, with its fit seconds and errors (learned) or `{}`."""
    if cfg.dynamics == "exact":
        return ExactDynamics(maze), {}
    t0 = time.perf_counter()
    model, _ = fit_world_model(maze, cfg.world_model, seed)
    info = {"fit_seconds": time.perf_counter() - t0}
    info.update(world_model_errors(model, maze, np.random.default_rng(20_000 + seed)))
    return model, info


def run_seed(cfg: PlanningConfig, seed: int, position: int | None = None) -> dict:
    """Fit the world model, then train and evaluate every configured method for one seed.

    With a `position`, a progress bar on that terminal line counts agent epochs, then evaluation steps.

    Returns:
        `{"success": {method: [N] bool}, "bucket": [N], "edges": [...], "seconds": {...},
        "world_model": {...}, ...}` plus the graphs, pairs and one L3P episode for the pictures.
    """
    maze = make_maze(cfg.maze)
    geodesic = Geodesic(maze)
    rng = np.random.default_rng(seed)
    # One evaluation set for every seed, so buckets and pairs are shared.
    starts, goals, bucket, edges = bucket_pairs(maze, geodesic, cfg.eval, np.random.default_rng(10_000))
    seconds, success, extra = {}, {}, {}
    bar = tqdm(total=cfg.agent.epochs + len(cfg.methods) * cfg.eval.horizon, desc=f"seed {seed}", unit="step",
               position=position, disable=position is None, leave=False, dynamic_ncols=True)
    bar.set_postfix_str("world model")
    model, model_info = world_model(maze, cfg, seed)
    t0 = time.perf_counter()
    bar.set_postfix_str("agent")
    agent, buffer, log = train_agent(maze, model, cfg.agent, seed, bar)
    seconds["train"] = time.perf_counter() - t0
    episodes = buffer.states[:buffer.size]
    landmarks = None
    for method in cfg.methods:
        t0 = time.perf_counter()
        bar.set_postfix_str(method)
        if method == "her":
            controller = DirectController(agent)
        elif method == "mpc":
            controller = CEMController(model, cfg.mpc, rng)
        elif method in ("l3p", "oracle"):
            if landmarks is None:
                landmarks = l3p_landmarks(agent, episodes, maze.shape, cfg, rng)
            distance = CriticSteps(agent) if method == "l3p" else GeodesicSteps(geodesic)
            graph = landmark_graph(landmarks, distance.matrix(landmarks, landmarks), model, agent, cfg)
            extra[f"{method}_graph"] = graph
            controller = PlannedController(agent, SubgoalPlanner(graph, distance, cfg.landmarks.cutoff,
                                                                 maze.success_radius))
        else:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        ok, path = evaluate(maze, controller, starts, goals, cfg.eval.horizon, bar)
        success[method] = ok
        if method == "l3p":
            extra["l3p_episode"] = _farthest_episode(ok, bucket, path, controller)
        seconds[method] = time.perf_counter() - t0
    bar.close()
    return {"seed": seed, "success": success, "bucket": bucket, "edges": edges, "seconds": seconds,
            "world_model": model_info, "train_log": log, "maze": maze, "starts": starts, "goals": goals,
            **extra}


def _farthest_episode(ok: np.ndarray, bucket: np.ndarray, path: np.ndarray, controller: PlannedController
                      ) -> dict[str, np.ndarray]:
    """Pick a farthest-bucket episode (a success if there is one) with its states and distinct subgoals."""
    far = np.flatnonzero(bucket == bucket.max())
    i = far[np.argmax(ok[far])]
    targets = np.stack(controller.targets, axis=1)[i]  # [T, 2]
    change = np.concatenate([[True], np.any(targets[1:] != targets[:-1], axis=1)])
    return {"index": i, "states": path[i], "subgoals": targets[change], "success": bool(ok[i])}


def bucket_labels(edges: np.ndarray) -> list[str]:
    """Return one label per bucket, e.g. "0-25" (shortest-path steps)."""
    return [f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(edges[:-1], edges[1:])]


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Return `{method: {bucket label: success rate}}`, pooled over seeds (equal pairs per seed)."""
    labels = bucket_labels(runs[0]["edges"])
    table = {}
    for method in runs[0]["success"]:
        table[method] = {}
        for b, label in enumerate(labels):
            rates = [r["success"][method][r["bucket"] == b].mean() for r in runs]
            table[method][label] = float(np.mean(rates))
    return table


def _run_seed_one_thread(cfg: PlanningConfig, seed: int, position: int | None) -> dict:
    """``run_seed`` in a worker process, with one torch thread so parallel seeds do not oversubscribe cores."""
    import torch

    torch.set_num_threads(1)
    return run_seed(cfg, seed, position)


def _logged(run: dict) -> dict:
    """Log one seed's summary line and return its results."""
    logger.info("seed %d: success %s, world model %s", run["seed"], summarize([run]), run["world_model"])
    return run


def run_benchmark(cfg: PlanningConfig, out_dir: Path | str | None = None, progress: bool = False
                  ) -> dict[str, dict[str, float]]:
    """Run every seed and method; optionally write report.json, results.json, table.md and two pictures to
    `out_dir`.

    Args:
        cfg: benchmark configuration.
        out_dir: output folder (created), or None to write nothing.
        progress: show a progress bar per seed (one terminal line each).

    Returns:
        `{method: {bucket label: success rate}}`, averaged over seeds, buckets ordered near to far.
    """
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if cfg.dynamics not in DYNAMICS:
        raise ValueError(f"dynamics: expected one of {DYNAMICS}, got {cfg.dynamics!r}")
    if not cfg.seeds:
        raise ValueError("seeds is empty; give at least one seed")
    if cfg.workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {cfg.workers}")
    if cfg.workers == 1:
        runs = [_logged(run_seed(cfg, seed, 0 if progress else None)) for seed in cfg.seeds]
    else:  # spawned, not forked: a forked child would inherit torch's thread pool state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(cfg.workers, len(cfg.seeds)), mp_context=context) as pool:
            positions = range(len(cfg.seeds)) if progress else [None] * len(cfg.seeds)
            runs = [_logged(run) for run in pool.map(_run_seed_one_thread, [cfg] * len(cfg.seeds), cfg.seeds,
                                                     positions)]
    table = summarize(runs)
    if out_dir is not None:
        write_report(Path(out_dir), cfg, runs, table)
    return table

