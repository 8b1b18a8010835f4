"""Exact shortest-path distances in a maze through its visibility graph.

Free space is a union of grid cells, so a shortest path is a polyline that bends only at convex wall corners
(grid vertices with exactly one wall cell among the four around them). Distances between those corners are
computed once (visibility + Dijkstra); a query joins each endpoint to the corners it sees.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import shortest_path

from gnnsim.planning.maze import Maze

_SHRINK = 1e-7  # walls are open sets: grazing a face or a corner is allowed
_CHUNK = 1 << 20  # segment x rectangle tests per block


class Geodesic:
    """Exact shortest-path distances (in cells) between free points of one maze.

    Args:
        maze: the maze.
    """

    def __init__(self, maze: Maze):
        self.maze = maze
        self.rects = _wall_rectangles(maze.walls)  # [R, 4] x0, y0, x1, y1
        self.corners = _convex_corners(maze.walls)  # [K, 2]
        k = len(self.corners)
        a = np.repeat(np.arange(k), k)
        b = np.tile(np.arange(k), k)
        see = self.visible(self.corners[a], self.corners[b]).reshape(k, k)
        length = np.linalg.norm(self.corners[:, None] - self.corners[None], axis=-1)
        # Dense input: 0 means "no edge"; two distinct corners never coincide, so no true 0 weight is lost.
        self.corner_dist = shortest_path(np.where(see, length, 0.0), method="D", directed=False)  # [K, K]

    def visible(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Return whether each segment `p[i] -> q[i]` avoids the interior of every wall cell.

        Args:
            p: `[P, 2]` segment starts.
            q: `[P, 2]` segment ends.

        Returns:
            `[P]` bool.
        """
        out = np.empty(len(p), dtype=bool)
        step = max(1, _CHUNK // len(self.rects))
        for s in range(0, len(p), step):
            out[s:s + step] = ~_segments_hit_rects(p[s:s + step], q[s:s + step], self.rects).any(axis=1)
        return out

    def _to_corners(self, points: np.ndarray) -> np.ndarray:
        """Return `[N, K]`: straight length from each point to each corner it sees, else inf."""
        n, k = len(points), len(self.corners)
        a = np.repeat(points, k, axis=0)
        c = np.tile(self.corners, (n, 1))
        see = self.visible(a, c).reshape(n, k)
        return np.where(see, np.linalg.norm(a - c, axis=-1).reshape(n, k), np.inf)

    def _via_corners(self, points: np.ndarray) -> np.ndarray:
        """Return `[N, K]`: shortest length from each point to each corner through corners."""
        to_c = self._to_corners(points)
        out = np.empty_like(to_c)
        step = max(1, _CHUNK // max(1, len(self.corners) ** 2))
        for s in range(0, len(points), step):
            out[s:s + step] = (to_c[s:s + step, :, None] + self.corner_dist[None]).min(axis=1)
        return out

    def pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return the shortest-path distance between `a[i]` and `b[i]`.

        Args:
            a: `[N, 2]` free points.
            b: `[N, 2]` free points.

        Returns:
            `[N]` distances in cells.
        """
        self._check(a, "a")
        self._check(b, "b")
        direct = np.where(self.visible(a, b), np.linalg.norm(a - b, axis=-1), np.inf)
        if len(self.corners) == 0:
            return direct
        via = (self._via_corners(a) + self._to_corners(b)).min(axis=1)
        return np.minimum(direct, via)

    def matrix(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return all shortest-path distances from the points `a` to the points `b`.

        Args:
            a: `[N, 2]` free points.
            b: `[M, 2]` free points.

        Returns:
            `[N, M]` distances in cells.
        """
        n, m = len(a), len(b)
        self._check(a, "a")
        self._check(b, "b")
        aa, bb = np.repeat(a, m, axis=0), np.tile(b, (n, 1))
        see = self.visible(aa, bb).reshape(n, m)
        out = np.where(see, np.linalg.norm(aa - bb, axis=-1).reshape(n, m), np.inf)
        if len(self.corners) == 0:
            return out
        via_a, to_b = self._via_corners(a), self._to_corners(b)  # [N, K], [M, K]
        step = max(1, _CHUNK // max(1, m * len(self.corners)))
        for s in range(0, n, step):
            via = (via_a[s:s + step, None, :] + to_b[None]).min(axis=2)
            out[s:s + step] = np.minimum(out[s:s + step], via)
        return out

    def _check(self, points: np.ndarray, name: str) -> None:
        """Fail unless `points` is `[N, 2]` and every point is free."""
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"{name}: expected [N, 2] points, got shape {points.shape}")
        if not self.maze.is_free(points).all():
            raise ValueError(f"{name}: {int((~self.maze.is_free(points)).sum())} points lie in walls")


class GeodesicSteps:
    """Exact shortest-path distances in steps of `maze.max_step`, as a `StepDistance` for the planner."""

    def __init__(self, geodesic: Geodesic):
        self.geodesic, self.step = geodesic, geodesic.maze.max_step

    def pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N]` exact steps from `a[i]` to `b[i]`."""
        return self.geodesic.pairs(a, b) / self.step

    def matrix(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return `[N, M]` exact steps from each of `a` to each of `b`."""
        return self.geodesic.matrix(a, b) / self.step


def _wall_rectangles(walls: np.ndarray) -> np.ndarray:
    """Merge each row's runs of wall cells into rectangles `[R, 4]` (x0, y0, x1, y1)."""
    rects = []
    for r, row in enumerate(walls):
        padded = np.concatenate([[False], row, [False]]).astype(np.int8)
        starts = np.flatnonzero(np.diff(padded) == 1)
        ends = np.flatnonzero(np.diff(padded) == -1)
        rects += [(s, r, e, r + 1) for s, e in zip(starts, ends)]
    return np.asarray(rects, dtype=np.float64)


def _convex_corners(walls: np.ndarray) -> np.ndarray:
    """Return `[K, 2]` grid vertices (x, y) with exactly one wall among the four cells around them."""
    # around[r, c] counts the walls among the four cells that meet at grid vertex (x, y) = (c + 1, r + 1).
    around = walls[:-1, :-1].astype(int) + walls[1:, 1:] + walls[:-1, 1:] + walls[1:, :-1]
    rc = np.argwhere(around == 1) + 1
    return rc[:, ::-1].astype(np.float64)


def _segments_hit_rects(p: np.ndarray, q: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Return `[P, R]` bool: whether segment i passes through the open interior of rectangle j (slab test)."""
    lo, hi = rects[None, :, :2] + _SHRINK, rects[None, :, 2:] - _SHRINK  # [1, R, 2]
    o, d = p[:, None, :], (q - p)[:, None, :]  # [P, 1, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d  # [P, R, 2]
    parallel = d == 0
    inside = (o > lo) & (o < hi)
    t_near = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    t_far = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    enter, leave = t_near.max(axis=2), t_far.min(axis=2)
    return (enter < leave) & (leave > 0.0) & (enter < 1.0)
