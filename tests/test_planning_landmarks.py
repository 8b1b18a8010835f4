"""Farthest-point sampling, clustering, edge cutting and model-checked edges."""

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components

from gnnsim.planning.dynamics import ExactDynamics
from gnnsim.planning.landmarks import (GoalEmbedding, LandmarkConfig, check_edges, cut_edges,
                                       farthest_point_sampling, fit_embedding, select_landmarks,
                                       soft_kmeans)
from gnnsim.planning.maze import Maze


def _grid(n):
    return np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="xy"), -1).reshape(-1, 2).astype(float)


def test_fps_picks_the_corners_of_a_square_grid_first():
    pts = _grid(5)
    first4 = pts[farthest_point_sampling(pts, 4)]
    assert {tuple(p) for p in first4} == {(0, 0), (0, 4), (4, 0), (4, 4)}


def test_fps_covering_radius_is_at_most_the_pick_spacing():
    rng = np.random.default_rng(0)
    pts = rng.uniform(size=(400, 2))
    for k in (5, 20, 60):
        idx = farthest_point_sampling(pts, k)
        d = np.linalg.norm(pts[:, None] - pts[idx][None], axis=-1)
        cover = d.min(1).max()
        spacing = np.linalg.norm(pts[idx][:, None] - pts[idx][None], axis=-1)[~np.eye(k, dtype=bool)].min()
        assert cover <= spacing + 1e-12  # hence cover <= 2 * optimal k-center radius
        assert len(set(idx.tolist())) == k


def test_soft_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = np.concatenate([c + 0.3 * rng.standard_normal((100, 2)) for c in centres])
    found = soft_kmeans(pts, pts[farthest_point_sampling(pts, 3)], temperature=1.0, iters=10)
    err = np.linalg.norm(found[:, None] - centres[None], axis=-1).min(1)
    assert (err < 0.15).all()


def test_cut_edges_keeps_short_edges_and_stays_connected():
    rng = np.random.default_rng(2)
    pts = np.concatenate([rng.uniform(0, 1, (15, 2)), rng.uniform(5, 6, (15, 2))])  # two far clusters
    w = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    for cutoff in (0.0, 0.3, 2.0):
        out = cut_edges(w, cutoff)
        short = (w <= cutoff)
        assert np.array_equal(out[short], w[short])  # every short edge stays, with its length
        n_comp, _ = connected_components(np.isfinite(out) & (out > 0), directed=True, connection="strong")
        assert n_comp == 1
        assert np.isfinite(out[~short]).sum() <= 2 * (len(pts) - 1)  # extras come from one spanning tree


TONGUE = """
#######
#.....#
#.....#
#.###.#
#.###.#
#.....#
#######
"""


def test_model_check_penalises_an_edge_through_a_wall():
    maze = Maze.from_text(TONGUE, max_step=0.5, success_radius=0.3)
    lm = np.array([[3.5, 1.5], [3.5, 5.5], [1.5, 1.5]])  # below, above the block; left of the first
    straight = lambda s, g: (g - s) / np.maximum(np.linalg.norm(g - s, axis=1, keepdims=True), 1e-9)  # noqa
    fooled = np.linalg.norm(lm[:, None] - lm[None], axis=-1) / maze.max_step  # blind to the block: 0 <-> 1 is 8
    out = check_edges(ExactDynamics(maze), straight, lm, fooled, cutoff=10.0, radius=0.3, slack=1.5,
                      penalty=99.0)
    assert out[0, 1] == out[1, 0] == 99.0  # straight pursuit through the block fails in the model
    assert out[0, 2] == fooled[0, 2] and out[2, 0] == fooled[2, 0]  # a clear edge keeps its length


def test_embedding_distances_fit_a_known_metric():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # Episodes on a line; the "critic" is |x_a - x_b| / 0.5 steps, saturated at 20.
    xs = np.cumsum(rng.uniform(0, 0.5, size=(64, 21)), axis=1)
    episodes = np.stack([xs, np.zeros_like(xs)], -1) + np.array([1.0, 3.0])
    dist = lambda a, b: np.minimum(np.abs(a[:, 0] - b[:, 0]) / 0.5, 20.0)  # noqa: E731
    cfg = LandmarkConfig(latent_dim=4, hidden=64, embed_steps=400, embed_batch=128, embed_lr=3e-3)
    emb = GoalEmbedding((6, 12), cfg.latent_dim, cfg.hidden)
    losses = fit_embedding(emb, episodes, dist, 20.0, cfg, rng)
    assert np.mean(losses[-20:]) < 0.05 * np.mean(losses[:20])
    cfg.count = 4
    lm = select_landmarks(emb, episodes.reshape(-1, 2), cfg)
    assert len(lm) == 4 and np.ptp(lm[:, 0]) > 0.6 * np.ptp(episodes[..., 0])  # spread along the line
