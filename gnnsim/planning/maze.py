"""Continuous 2D point mazes: layouts on a wall grid, batched wall-clipped motion, goal sampling.

Coordinates are in cell units: cell ``(row, col)`` covers ``x in [col, col + 1)``, ``y in [row, row + 1)``,
with row 0 at the bottom (the last line of a text layout). An action in ``[-1, 1]^2`` moves the point by
``action * max_step``; each axis is clipped against wall cells, so the agent slides along walls and never
enters one. Exact shortest-path distances live in `gnnsim.planning.geodesic`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

WALL, FREE = "#", "."
_EPS = 1e-6  # how far a blocked point stops short of the wall face


@dataclass(frozen=True, eq=False)
class Maze:
    """A walled maze with a continuous point agent.

    Attributes:
        walls: `[H, W]` bool, True for wall cells, row 0 at the bottom; the border is all walls.
        max_step: displacement per unit action along each axis, in cells.
        success_radius: a goal counts as reached within this Euclidean distance, in cells.
    """

    walls: np.ndarray
    max_step: float = 0.5
    success_radius: float = 0.5

    def __post_init__(self):
        """Validate the grid and the motion settings."""
        w = self.walls
        if w.ndim != 2 or w.dtype != bool or min(w.shape) < 3:
            raise ValueError(f"walls: expected a bool [H, W] grid with H, W >= 3, got {w.dtype} {w.shape}")
        if not (w[0].all() and w[-1].all() and w[:, 0].all() and w[:, -1].all()):
            raise ValueError("walls: the border must be all walls; pad the layout with '#'")
        # Two walls touching only at a corner leave a zero-width gap the motion model cannot pass.
        diag = (w[:-1, :-1] & w[1:, 1:] & ~w[:-1, 1:] & ~w[1:, :-1]) | (
            w[:-1, 1:] & w[1:, :-1] & ~w[:-1, :-1] & ~w[1:, 1:]
        )
        if diag.any():
            r, c = np.argwhere(diag)[0]
            raise ValueError(f"walls: diagonal pinch at grid vertex ({c + 1}, {r + 1}); fill one side")
        if not 0 < self.max_step <= 4:
            raise ValueError(f"max_step must be in (0, 4] cells, got {self.max_step}")
        free = np.argwhere(~w)
        if len(free) == 0:
            raise ValueError("walls: the layout has no free cell")
        if _connected_count(~w, tuple(free[0])) != len(free):
            raise ValueError("walls: the free cells are not connected")

    @staticmethod
    def from_text(text: str, max_step: float = 0.5, success_radius: float = 0.5) -> Maze:
        """Build a maze from lines of '#' (wall) and '.' (free); the first line is the top row."""
        lines = [ln.strip() for ln in text.strip().splitlines()]
        widths = {len(ln) for ln in lines}
        if len(widths) != 1:
            raise ValueError(f"layout rows must have equal length, got lengths {sorted(widths)}")
        if set("".join(lines)) - {WALL, FREE}:
            raise ValueError(f"layout may only hold {WALL!r} and {FREE!r}, got {set(''.join(lines))}")
        walls = np.array([[ch == WALL for ch in ln] for ln in reversed(lines)], dtype=bool)
        return Maze(walls, max_step=max_step, success_radius=success_radius)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in cells."""
        return self.walls.shape

    def is_free(self, points: np.ndarray) -> np.ndarray:
        """Return whether each point lies in a free cell (outside points are not free).

        Args:
            points: `[N, 2]` (x, y).

        Returns:
            `[N]` bool.
        """
        col = np.floor(points[:, 0]).astype(int)
        row = np.floor(points[:, 1]).astype(int)
        h, w = self.walls.shape
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        out = np.zeros(len(points), dtype=bool)
        out[inside] = ~self.walls[row[inside], col[inside]]
        return out

    def sample_free(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Return `[n, 2]` points uniform over the free area."""
        cells = np.argwhere(~self.walls)  # [F, 2] (row, col)
        pick = cells[rng.integers(len(cells), size=n)]
        return (pick[:, ::-1] + rng.uniform(0.0, 1.0, size=(n, 2))).astype(np.float64)

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Move each point by its clipped action, sliding along walls.

        Args:
            states: `[B, 2]` free positions.
            actions: `[B, 2]`, clipped to `[-1, 1]`.

        Returns:
            `[B, 2]` next positions, all free.
        """
        if states.shape != actions.shape or states.ndim != 2 or states.shape[1] != 2:
            raise ValueError(f"states and actions must both be [B, 2], got {states.shape}, {actions.shape}")
        delta = np.clip(actions, -1.0, 1.0) * self.max_step
        # Substeps of at most half a cell cross at most one cell face per axis.
        n_sub = max(1, math.ceil(self.max_step / 0.5))
        pos = np.asarray(states, dtype=np.float64).copy()
        for _ in range(n_sub):
            pos = self._move_axis(pos, delta[:, 0] / n_sub, axis=0)
            pos = self._move_axis(pos, delta[:, 1] / n_sub, axis=1)
        return pos

    def _move_axis(self, pos: np.ndarray, delta: np.ndarray, axis: int) -> np.ndarray:
        """Move along one axis by at most half a cell; stop just before a wall face."""
        new = pos.copy()
        new[:, axis] += delta
        old_cell = np.floor(pos[:, axis])
        new_cell = np.floor(new[:, axis])
        other = np.floor(pos[:, 1 - axis]).astype(int)
        row, col = (other, new_cell.astype(int)) if axis == 0 else (new_cell.astype(int), other)
        blocked = (new_cell != old_cell) & self.walls[row, col]
        face = np.where(delta > 0, old_cell + 1.0 - _EPS, old_cell + _EPS)
        new[blocked, axis] = face[blocked]
        return new

    def reached(self, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Return `[B]` bool: whether each state is within `success_radius` of its goal."""
        return np.linalg.norm(states - goals, axis=-1) <= self.success_radius


def _connected_count(free: np.ndarray, start: tuple[int, int]) -> int:
    """Count the free cells 4-connected to `start`."""
    seen = np.zeros_like(free)
    seen[start] = True
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if free[nr, nc] and not seen[nr, nc]:
                seen[nr, nc] = True
                queue.append((nr, nc))
    return int(seen.sum())


def serpentine_layout(corridors: int = 5, length: int = 10, width: int = 2) -> str:
    """Return a text layout of `corridors` parallel corridors joined at alternating ends.

    Args:
        corridors: number of horizontal corridors (2 gives a U-maze).
        length: corridor length in cells.
        width: corridor width in cells, also the width of each turn.
    """
    if corridors < 1 or width < 1 or length < width + 1:
        raise ValueError(f"serpentine needs corridors >= 1, width >= 1, length > width; got "
                         f"{corridors}, {width}, {length}")
    rows = [[WALL] * (length + 2) for _ in range(corridors * (width + 1) + 1)]
    for c in range(corridors):
        top = 1 + c * (width + 1)
        for r in range(top, top + width):
            rows[r][1:length + 1] = [FREE] * length
        if c + 1 < corridors:  # the turn into the next corridor, right then left then right ...
            gap = range(length - width + 1, length + 1) if c % 2 == 0 else range(1, width + 1)
            for col in gap:
                rows[top + width][col] = FREE
    return "\n".join("".join(r) for r in rows)


def u_layout(length: int = 8, width: int = 2) -> str:
    """Return a text U-maze: two corridors of `length` cells joined at one end."""
    return serpentine_layout(corridors=2, length=length, width=width)


def four_rooms_layout(room: int = 5, door: int = 1) -> str:
    """Return a text layout of four `room` x `room` rooms, each joined to two others by a door."""
    if room < door + 2 or door < 1:
        raise ValueError(f"four rooms needs room >= door + 2 >= 3, got room={room}, door={door}")
    n = 2 * room + 3
    rows = [[WALL] * n for _ in range(n)]
    for r in range(1, n - 1):
        for c in range(1, n - 1):
            if r != room + 1 and c != room + 1:
                rows[r][c] = FREE
    mid = room + 1
    lo = 1 + (room - door) // 2  # door offsets inside a room
    for k in range(door):
        rows[mid][lo + k] = FREE  # left rooms
        rows[mid][mid + lo + k] = FREE  # right rooms
        rows[lo + k][mid] = FREE  # top rooms
        rows[mid + lo + k][mid] = FREE  # bottom rooms
    return "\n".join("".join(r) for r in rows)


LAYOUTS = {"serpentine": serpentine_layout, "u": u_layout, "four_rooms": four_rooms_layout}
