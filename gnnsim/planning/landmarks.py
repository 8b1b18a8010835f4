"""Latent landmarks: a distance-preserving auto-encoder, farthest-point sampling, clustering, and the graph.

Following L3P (Zhang, Yang, Stadie, ICML 2021, https://arxiv.org/abs/2011.12491): goals are embedded so that
latent Euclidean distance matches the critic's symmetric step distance; landmarks are latent centroids,
initialised by farthest-point sampling and refined by soft k-means. The landmark graph weights each edge by
the critic distance, penalises edges whose short imagined rollout (through the world model) misses its end,
and cuts edges longer than a cut-off while keeping a minimum spanning tree, so the graph stays connected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from torch import nn

from gnnsim.planning.dynamics import DynamicsModel, Policy, policy_rollout

Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (a [N, 2], b [N, 2]) -> steps [N]


@dataclass
class LandmarkConfig:
    """Landmark selection and graph construction."""

    count: int = 40  # number of landmarks
    latent_dim: int = 16
    hidden: int = 128
    embed_steps: int = 1500
    embed_batch: int = 256
    embed_lr: float = 1e-3
    recon_weight: float = 1.0  # weight of the reconstruction term (keeps the encoder injective)
    candidates: int = 4000  # replayed states clustered into landmarks
    kmeans_iters: int = 10
    kmeans_temperature: float = 1.0  # soft assignment temperature, in latent steps
    cutoff: float = 15.0  # edges longer than this many steps are cut
    check_slack: float = 1.5  # an edge's imagined rollout gets slack * distance + 2 steps


class GoalEmbedding(nn.Module):
    """Auto-encoder of 2D goals whose latent distances approximate step distances.

    Args:
        maze_shape: (height, width) in cells, for input scaling.
        latent_dim: latent size Z.
        hidden: hidden width of encoder and decoder.
    """

    def __init__(self, maze_shape: tuple[int, int], latent_dim: int, hidden: int):
        super().__init__()
        h, w = maze_shape
        self.register_buffer("center", torch.tensor([w / 2, h / 2], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(max(h, w) / 2, dtype=torch.float32))
        self.encoder = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, 2))

    def encode(self, goals: torch.Tensor) -> torch.Tensor:
        """Return latents `[N, Z]` for goals `[N, 2]`."""
        return self.encoder((goals - self.center) / self.scale)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Return goals `[N, 2]` for latents `[N, Z]`."""
        return self.decoder(latents) * self.scale + self.center


def fit_embedding(embedding: GoalEmbedding, episodes: np.ndarray, distance: Distance, horizon: float,
                  cfg: LandmarkConfig, rng: np.random.Generator) -> list[float]:
    """Fit latent distances to the critic's symmetric distances, plus a reconstruction term.

    Pairs are half from one episode (within reach) and half from two random episodes. Pairs the critic
    saturates (at least 95% of `horizon`) only push their latents at least that far apart (a hinge).

    Args:
        embedding: the auto-encoder, trained in place.
        episodes: `[E, T + 1, 2]` replayed state sequences.
        distance: critic step distance between paired points.
        horizon: the critic's largest distance.
        cfg: landmark configuration (steps, batch, learning rate, reconstruction weight).
        rng: random generator.

    Returns:
        The loss of every step.
    """
    opt = torch.optim.Adam(embedding.parameters(), lr=cfg.embed_lr)
    e, t1 = episodes.shape[:2]
    losses = []
    for _ in range(cfg.embed_steps):
        n = cfg.embed_batch
        ep, t = rng.integers(e, size=n), rng.integers(t1, size=n)
        same = rng.random(n) < 0.5
        ep2 = np.where(same, ep, rng.integers(e, size=n))
        a, b = episodes[ep, t], episodes[ep2, rng.integers(t1, size=n)]
        d = torch.as_tensor(0.5 * (distance(a, b) + distance(b, a)), dtype=torch.float32)  # [n]
        ga, gb = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
        za, zb = embedding.encode(ga), embedding.encode(gb)
        dz = (za - zb).norm(dim=-1)
        saturated = d >= 0.95 * horizon
        fit = torch.where(saturated, torch.relu(d - dz), dz - d).pow(2).mean()
        recon = (embedding.decode(za) - ga).pow(2).sum(-1).mean()
        loss = fit + cfg.recon_weight * recon
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def farthest_point_sampling(points: np.ndarray, k: int) -> np.ndarray:
    """Pick `k` points greedily, each the farthest from those already picked.

    The first pick is the point farthest from the mean. After `k` picks every point lies within the
    k-th pick's distance of a pick, and picks are pairwise at least that far apart (a 2-approximation of
    the k-center covering radius).

    Args:
        points: `[N, D]`.
        k: number of picks, `1 <= k <= N`.

    Returns:
        `[k]` indices into `points`, in pick order.
    """
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be in [1, {len(points)}] (the number of points), got {k}")
    picks = [int(np.argmax(np.linalg.norm(points - points.mean(0), axis=1)))]
    nearest = np.linalg.norm(points - points[picks[0]], axis=1)  # [N] distance to the closest pick
    for _ in range(k - 1):
        picks.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[picks[-1]], axis=1))
    return np.asarray(picks)


def soft_kmeans(points: np.ndarray, centroids: np.ndarray, temperature: float, iters: int) -> np.ndarray:
    """Refine centroids by soft k-means (assignments softmax(-squared distance / temperature)).

    Args:
        points: `[N, D]`.
        centroids: `[K, D]` initial centroids.
        temperature: assignment temperature in squared distance units; > 0.
        iters: refinement iterations.

    Returns:
        `[K, D]` refined centroids.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    c = centroids.copy()
    for _ in range(iters):
        d2 = ((points[:, None] - c[None]) ** 2).sum(-1)  # [N, K]
        logits = -(d2 - d2.min(1, keepdims=True)) / temperature
        w = np.exp(logits)
        w /= w.sum(1, keepdims=True)  # [N, K] soft assignments
        c = (w.T @ points) / np.maximum(w.sum(0)[:, None], 1e-12)
    return c


def select_landmarks(embedding: GoalEmbedding, candidates: np.ndarray, cfg: LandmarkConfig) -> np.ndarray:
    """Cluster candidate goals in latent space and return one reachable goal per cluster.

    Centroids start at a farthest-point sample of the latents and are refined by soft k-means; each
    centroid is then replaced by the candidate with the nearest latent (a state the agent has visited).

    Args:
        embedding: a fitted goal embedding.
        candidates: `[N, 2]` visited states.
        cfg: landmark configuration (count, clustering).

    Returns:
        `[L, 2]` landmark goals, `L <= cfg.count` (duplicates merged).
    """
    with torch.no_grad():
        z = embedding.encode(torch.as_tensor(candidates, dtype=torch.float32)).numpy()  # [N, Z]
    init = z[farthest_point_sampling(z, cfg.count)]
    centroids = soft_kmeans(z, init, cfg.kmeans_temperature, cfg.kmeans_iters)
    nearest = ((z[:, None] - centroids[None]) ** 2).sum(-1).argmin(0)  # [K]
    return candidates[np.unique(nearest)]


def cut_edges(weights: np.ndarray, cutoff: float) -> np.ndarray:
    """Remove edges longer than `cutoff`, but keep a minimum spanning tree so the graph stays connected.

    The spanning tree is taken over the symmetrised weights min(w_ij, w_ji); it holds each node's nearest
    neighbour, so no node is left isolated and the graph keeps one component.

    Args:
        weights: `[L, L]` directed edge lengths (finite, >= 0).
        cutoff: longest edge kept outside the spanning tree.

    Returns:
        `[L, L]` weights with cut edges set to inf and a zero diagonal.
    """
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1] or not np.isfinite(weights).all():
        raise ValueError(f"weights: expected a finite square matrix, got shape {weights.shape}")
    off_diagonal = ~np.eye(len(weights), dtype=bool)
    # scipy reads 0 as "no edge": nudge zero-length edges up so they stay in the tree.
    sym = np.where(off_diagonal, np.maximum(np.minimum(weights, weights.T), 1e-12), 0.0)
    tree = minimum_spanning_tree(sym).toarray() > 0
    keep = (weights <= cutoff) | tree | tree.T
    out = np.where(keep, weights, np.inf)
    np.fill_diagonal(out, 0.0)
    return out


def check_edges(model: DynamicsModel, policy: Policy, landmarks: np.ndarray, weights: np.ndarray,
                cutoff: float, radius: float, slack: float, penalty: float) -> np.ndarray:
    """Imagine each short edge through the world model and penalise the edges whose rollout misses.

    The edge i -> j (length at most `cutoff`) is rolled out by `policy` from landmark i towards landmark j
    for `ceil(slack * w_ij) + 2` steps; it passes if some imagined state comes within `radius` of j.

    Args:
        model: the world model.
        policy: goal-conditioned policy.
        landmarks: `[L, 2]`.
        weights: `[L, L]` directed edge lengths in steps.
        cutoff: only edges up to this length are checked (longer ones are cut anyway).
        radius: reach radius.
        slack: step budget factor.
        penalty: length given to a failed edge (at least `cutoff` excludes it from the short edges).

    Returns:
        `[L, L]` weights with failed edges set to `penalty`.
    """
    i, j = np.nonzero((weights <= cutoff) & ~np.eye(len(weights), dtype=bool))
    out = weights.copy()
    if len(i) == 0:
        return out
    steps = math.ceil(slack * weights[i, j].max()) + 2
    xs, _ = policy_rollout(model, landmarks[i], landmarks[j], policy, steps)  # [E, steps + 1, 2]
    budget = np.ceil(slack * weights[i, j]).astype(int) + 2  # [E]
    close = np.linalg.norm(xs - landmarks[j][:, None], axis=-1) <= radius  # [E, steps + 1]
    hit = (close & (np.arange(steps + 1)[None] <= budget[:, None])).any(axis=1)
    out[i[~hit], j[~hit]] = penalty
    return out
