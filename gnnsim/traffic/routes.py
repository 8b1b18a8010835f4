"""Routes of consecutive road segments: ETA labels, their HDF5 layout, travel time under time-varying speeds.

A route is a sequence of segment (node) ids that a vehicle drove. Its label is the measured traversal time:
``travel_time = exit time of the last segment - depart``, where ``depart`` is the time the vehicle entered
the first segment (the exit time of the segment before it). Times are seconds since the start of the day.

Labels of one day are stored as one trajectory of a gnnsim split file (``ROUTE_SCHEMA``, static fields only),
so ``gnnsim.data.format.Split`` checks the layout; ``read_routes`` adds the cross-field checks (offsets,
segment ids in range, times consistent) and names the file, trajectory and field on error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnnsim.data.format import FormatError, Split, static, write_split

ROUTE_SCHEMA = {
    "route_start": static("int64", "routes"),  # offset of each route's first segment in route_segments
    "route_length": static("int32", "routes"),  # number of segments
    "depart": static("float32", "routes"),  # s since day start, entry into the first segment
    "travel_time": static("float32", "routes"),  # s, entry into the first to exit from the last segment
    "route_segments": static("int32", "route_items"),  # segment (node) ids, routes concatenated
    "segment_exit": static("float32", "route_items"),  # s since day start, exit time of each segment
}


@dataclass(frozen=True)
class RouteSet:
    """ETA labels of one day: R routes stored as one flat (CSR-like) array of M segment ids."""

    route_start: np.ndarray  # [R] int64
    route_length: np.ndarray  # [R] int32
    depart: np.ndarray  # [R] float32
    travel_time: np.ndarray  # [R] float32
    route_segments: np.ndarray  # [M] int32
    segment_exit: np.ndarray  # [M] float32

    def __len__(self) -> int:
        return len(self.route_start)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ROUTE_SCHEMA}

    def padded(self) -> np.ndarray:
        """Return the segment ids as a `[R, K]` int64 array, K the longest route, padded with -1."""
        k = int(self.route_length.max()) if len(self) else 0
        out = np.full((len(self), k), -1, dtype=np.int64)
        col = np.arange(k)
        valid = col[None, :] < self.route_length[:, None]  # [R, K]
        idx = self.route_start[:, None] + np.minimum(
            col[None, :], np.maximum(self.route_length[:, None] - 1, 0)
        )
        out[valid] = self.route_segments[idx[valid]]
        return out

    def subset(self, keep: np.ndarray) -> RouteSet:
        """Return the routes selected by a boolean mask or index array, re-packed."""
        idx = np.arange(len(self))[keep]
        lengths = self.route_length[idx]
        starts = (np.cumsum(lengths, dtype=np.int64) - lengths).astype(np.int64)
        items = (
            np.concatenate([np.arange(s, s + n) for s, n in zip(self.route_start[idx], lengths)])
            if len(idx)
            else []
        )
        items = np.asarray(items, dtype=np.int64)
        return RouteSet(
            route_start=starts,
            route_length=lengths.astype(np.int32),
            depart=self.depart[idx],
            travel_time=self.travel_time[idx],
            route_segments=self.route_segments[items],
            segment_exit=self.segment_exit[items],
        )


def make_route_set(
    routes: Sequence[np.ndarray], exits: Sequence[np.ndarray], departs: Sequence[float]
) -> RouteSet:
    """Pack routes (segment ids), their per-segment exit times and entry times into a RouteSet.

    Args:
        routes: R arrays of segment ids.
        exits: R arrays of exit times (s), one per segment, non-decreasing.
        departs: R entry times into the first segment (s).
    """
    lengths = np.array([len(r) for r in routes], dtype=np.int32)
    starts = (np.cumsum(lengths, dtype=np.int64) - lengths).astype(np.int64)
    segs = np.concatenate(routes).astype(np.int32) if routes else np.zeros(0, np.int32)
    ex = np.concatenate(exits).astype(np.float32) if exits else np.zeros(0, np.float32)
    dep = np.asarray(departs, dtype=np.float32).reshape(-1)
    last = ex[starts + lengths - 1] if len(lengths) else np.zeros(0, np.float32)
    return RouteSet(starts, lengths, dep, (last - dep).astype(np.float32), segs, ex)


def sample_label_windows(
    rng: np.random.Generator,
    vehicle_routes: Sequence[np.ndarray],
    vehicle_exits: Sequence[np.ndarray],
    min_segments: int,
    max_segments: int,
) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """Cut one window of ``min_segments..max_segments`` whole segments out of each vehicle's route.

    The first and last segments of a trip are traversed only in part (the vehicle is inserted and leaves
    mid-segment), so a window lies inside ``route[1:-1]``; its entry time is the exit time of the segment
    before it. Vehicles whose route is too short give no label.

    Returns:
        (routes, exits, departs) of the kept windows, in vehicle order.
    """
    if not 1 <= min_segments <= max_segments:
        raise ValueError(f"need 1 <= min_segments <= max_segments, got {min_segments}, {max_segments}")
    routes, exits, departs = [], [], []
    for route, ex in zip(vehicle_routes, vehicle_exits):
        inner = len(route) - 2
        if inner < min_segments:
            continue
        m = int(rng.integers(min_segments, min(max_segments, inner) + 1))
        s = int(rng.integers(1, inner - m + 2))  # window = route[s : s + m], s + m <= len - 1
        routes.append(np.asarray(route[s : s + m]))
        exits.append(np.asarray(ex[s : s + m]))
        departs.append(float(ex[s - 1]))
    return routes, exits, departs


def walk_routes(
    routes: np.ndarray,
    depart: np.ndarray,
    lengths: np.ndarray,
    speeds: np.ndarray,
    t_start: np.ndarray,
    dt: float,
    field: np.ndarray | None = None,
    min_speed: float = 0.1,
) -> np.ndarray:
    """Return each route's travel time when driven under a time-varying speed field, in time order.

    A segment entered at time t is traversed at the speed of the interval that contains t (held for the
    whole segment): ``t <- t + length / speed[field, floor((t - t_start[field]) / dt), segment]``. Times
    before the first interval use the first, times after the last use the last. This is the one ETA
    read-out shared by the baselines and the learned model.

    Args:
        routes: `[R, K]` segment ids padded with -1 (see ``RouteSet.padded``).
        depart: `[R]` entry time into the first segment (s).
        lengths: `[N]` segment lengths (m).
        speeds: `[S, T, N]` speed fields (m/s, or any length unit per s matching ``lengths``); S fields,
            e.g. one forecast per prediction time, each with T intervals of ``dt`` seconds.
        t_start: `[S]` start time of interval 0 of each field (s).
        dt: interval length (s).
        field: `[R]` which field each route reads; ``None`` = field 0 for all.
        min_speed: speeds are clipped from below to this value (a forecast may be ~0 or negative).

    Returns:
        `[R]` float64 travel times (s).
    """
    routes = np.asarray(routes)
    speeds = np.asarray(speeds)
    if routes.ndim != 2:
        raise ValueError(f"routes: expected [R, K] padded segment ids, got shape {list(routes.shape)}")
    if speeds.ndim != 3 or speeds.shape[2] != len(lengths):
        raise ValueError(f"speeds: expected [S, T, N={len(lengths)}], got shape {list(speeds.shape)}")
    if not np.isfinite(speeds).all():
        raise ValueError("speeds: contains NaN or inf; fill missing values before walking routes")
    r = routes.shape[0]
    field = np.zeros(r, dtype=np.int64) if field is None else np.asarray(field, dtype=np.int64)
    t_start = np.asarray(t_start, dtype=np.float64).reshape(-1)
    if len(t_start) != speeds.shape[0] or field.shape != (r,) or (r and field.max() >= speeds.shape[0]):
        raise ValueError(
            f"t_start has {len(t_start)} entries and field indexes up to {field.max() if r else -1}; "
            f"both must match the {speeds.shape[0]} speed fields"
        )
    lengths = np.asarray(lengths, dtype=np.float64)
    t = np.asarray(depart, dtype=np.float64).copy()  # [R] clock of each vehicle
    t0 = t.copy()
    n_steps = speeds.shape[1]
    for k in range(routes.shape[1]):
        seg = routes[:, k]
        on = seg >= 0  # [R] routes still running at position k
        if not on.any():
            break
        i = np.clip(np.floor((t[on] - t_start[field[on]]) / dt).astype(np.int64), 0, n_steps - 1)
        v = np.maximum(speeds[field[on], i, seg[on]].astype(np.float64), min_speed)
        t[on] += lengths[seg[on]] / v
    return t - t0


def write_routes(path: str | os.PathLike, days: Sequence[RouteSet], *, config: dict, dt: float) -> Path:
    """Write the ETA labels of several days (one trajectory each) to ``path``, atomically."""
    return write_split(
        path,
        (d.as_dict() for d in days),
        ROUTE_SCHEMA,
        dt=dt,
        generator="gnnsim.traffic.routes",
        config=config,
    )


def read_routes(path: str | os.PathLike, num_segments: int | None = None) -> list[RouteSet]:
    """Read and check the ETA labels written by ``write_routes``; one RouteSet per day.

    Args:
        path: a routes file.
        num_segments: if given, every segment id must be below it (the node count of the speed data).

    Raises:
        FormatError: naming the file, trajectory and field that is inconsistent.
    """
    split = Split(path)
    missing = [k for k in ROUTE_SCHEMA if k not in split.schema]
    if missing:
        raise FormatError(f"{split.path}: not a routes file, missing field(s) {', '.join(missing)}")
    out = []
    for i in range(len(split)):
        rs = RouteSet(**{k: split.read(i, k) for k in ROUTE_SCHEMA})
        where = f"{split.path}: {split.names[i]}"
        m = len(rs.route_segments)
        if (rs.route_length < 1).any():
            raise FormatError(f"{where}: field 'route_length' has entries < 1")
        if (rs.route_start < 0).any() or (rs.route_start + rs.route_length > m).any():
            raise FormatError(f"{where}: field 'route_start' points outside route_segments ({m} items)")
        if m and (
            rs.route_segments.min() < 0
            or (num_segments is not None and rs.route_segments.max() >= num_segments)
        ):
            raise FormatError(
                f"{where}: field 'route_segments' has ids outside [0, {num_segments}) "
                f"(min {rs.route_segments.min()}, max {rs.route_segments.max()})"
            )
        if (rs.travel_time <= 0).any():
            raise FormatError(f"{where}: field 'travel_time' has non-positive entries")
        last = rs.segment_exit[rs.route_start + rs.route_length - 1] if len(rs) else np.zeros(0)
        if not np.allclose(last - rs.depart, rs.travel_time, atol=1e-3, rtol=1e-6):
            raise FormatError(f"{where}: field 'travel_time' differs from segment_exit[last] - depart")
        out.append(rs)
    split.close()
    return out
