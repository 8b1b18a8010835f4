"""Speed forecasters without learning: free-flow, real-time snapshot, historical average (and an oracle).

Every forecaster has the signature of ``Forecaster``: given one day of observations and forecast origins
``k0`` (interval indices), it returns the speed of intervals ``k0 .. k0 + steps - 1`` using only what is
known at the origin, i.e. intervals ``< k0`` of that day and the training days. An ETA reads these
forecasts along the route (``gnnsim.traffic.routes.walk_routes``); a learned model plugs in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np


@dataclass(frozen=True)
class Day:
    """One day (trajectory) of speed observations."""

    speed: np.ndarray  # [T, N], 0 where missing
    mask: np.ndarray  # [T, N] bool, True where observed
    day_of_week: int  # 0 = Monday
    t_start: float  # s since midnight at the start of interval 0
    dt: float  # interval length (s)
    # optional target field, e.g. SUMO's entry_speed: what the ETA walk should read (may be non-causal)
    target_speed: np.ndarray | None = None  # [T, N]
    target_mask: np.ndarray | None = None  # [T, N] bool

    def __post_init__(self):
        if self.speed.ndim != 2 or self.mask.shape != self.speed.shape:
            raise ValueError(
                f"Day: speed must be [T, N] with a mask of the same shape, got {list(self.speed.shape)} "
                f"and {list(self.mask.shape)}"
            )

    @property
    def num_steps(self) -> int:
        return self.speed.shape[0]


class Forecaster(Protocol):
    def __call__(self, day: Day, origins: np.ndarray, steps: int) -> np.ndarray:
        """Return `[S, steps, N]` forecasts of intervals ``origins[s] + i`` from those ``< origins[s]``."""
        ...


def _check_origins(day: Day, origins) -> np.ndarray:
    origins = np.asarray(origins, dtype=np.int64).reshape(-1)
    if len(origins) and (origins.min() < 0 or origins.max() > day.num_steps):
        raise ValueError(f"origins must lie in [0, {day.num_steps}], got [{origins.min()}, {origins.max()}]")
    return origins


class FreeFlow:
    """Every segment at its free-flow speed (the speed limit), whatever the time."""

    def __init__(self, free_speed: np.ndarray):
        """Args: free_speed: `[N]` free-flow speed per segment."""
        self.free_speed = np.asarray(free_speed, dtype=np.float32)

    def __call__(self, day: Day, origins: np.ndarray, steps: int) -> np.ndarray:
        origins = _check_origins(day, origins)
        return np.broadcast_to(self.free_speed, (len(origins), steps, len(self.free_speed))).copy()


class RealtimeSnapshot:
    """The speeds observed in the last completed interval, held constant into the future.

    A segment not observed in that interval takes its last observation at most ``max_age`` intervals older
    (``None``: any earlier one of the day), else ``fill``.
    """

    def __init__(self, fill: np.ndarray, max_age: int | None = 0):
        """Args: fill: `[N]` speed without a recent observation; max_age: intervals (>= 0) or None."""
        if max_age is not None and max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.fill = np.asarray(fill, dtype=np.float32)
        self.max_age = max_age

    def __call__(self, day: Day, origins: np.ndarray, steps: int) -> np.ndarray:
        origins = _check_origins(day, origins)
        t, n = day.speed.shape
        # last observed interval index at or before each interval, -1 if none
        last = np.maximum.accumulate(np.where(day.mask, np.arange(t)[:, None], -1), axis=0)  # [T, N]
        now = origins - 1  # last completed interval
        j = np.where(now[:, None] >= 0, last[np.maximum(now, 0)], -1)  # [S, N]
        fresh = (j >= 0) & (now[:, None] - j <= (t if self.max_age is None else self.max_age))
        snap = np.where(fresh, day.speed[np.maximum(j, 0), np.arange(n)[None, :]], self.fill[None, :])
        return np.repeat(snap[:, None, :], steps, axis=1).astype(np.float32)


class HistoricalAverage:
    """Mean observed speed of the training days by interval of the day and day group.

    ``by`` picks the day groups: ``"day_of_week"`` (7 groups), ``"day_type"`` (weekday / weekend) or
    ``"time_of_day"`` (all days pooled). A (group, interval, segment) cell without an observation falls back
    to the pooled mean of that interval, then to ``fill``. All days must share ``t_start``, ``dt`` and length.
    """

    GROUPS: ClassVar[dict[str, int]] = {"day_of_week": 7, "day_type": 2, "time_of_day": 1}

    def __init__(self, train_days: Sequence[Day], fill: np.ndarray, by: str = "day_of_week"):
        if by not in self.GROUPS:
            raise ValueError(f"by must be one of {', '.join(self.GROUPS)}, got {by!r}")
        if not train_days:
            raise ValueError("HistoricalAverage needs at least one training day")
        d0 = train_days[0]
        for d in train_days:
            if d.speed.shape != d0.speed.shape or d.t_start != d0.t_start or d.dt != d0.dt:
                raise ValueError("HistoricalAverage: training days differ in shape, t_start or dt")
        self.by = by
        self.t_start, self.dt = d0.t_start, d0.dt
        fill = np.asarray(fill, dtype=np.float64)
        g = self.GROUPS[by]
        t, n = d0.speed.shape
        total = np.zeros((g, t, n))
        count = np.zeros((g, t, n))
        for d in train_days:
            k = self.group(d.day_of_week)
            total[k] += np.where(d.mask, d.speed, 0.0)
            count[k] += d.mask
        pooled = np.where(count.sum(0) > 0, total.sum(0) / np.maximum(count.sum(0), 1), fill[None, :])
        self.table = np.where(count > 0, total / np.maximum(count, 1), pooled[None]).astype(
            np.float32
        )  # [G, T, N]
        self.count = count

    def group(self, day_of_week: int) -> int:
        if self.by == "day_of_week":
            return int(day_of_week) % 7
        if self.by == "day_type":
            return int(int(day_of_week) % 7 >= 5)
        return 0

    def __call__(self, day: Day, origins: np.ndarray, steps: int) -> np.ndarray:
        origins = _check_origins(day, origins)
        if day.t_start != self.t_start or day.dt != self.dt:
            raise ValueError("HistoricalAverage: the day's t_start/dt differ from the training days'")
        t = self.table.shape[1]
        idx = np.clip(origins[:, None] + np.arange(steps)[None, :], 0, t - 1)  # [S, steps]
        return self.table[self.group(day.day_of_week)][idx]


class Oracle:
    """The true future speeds of the day (unobserved -> ``fill``): what a perfect speed forecast would give.

    Not a baseline (it looks ahead); it bounds how good an ETA read from speeds along the route can be.
    With ``target=True`` it reads the day's target field (``Day.target_speed``) instead of ``speed``.
    """

    def __init__(self, fill: np.ndarray, target: bool = False):
        self.fill = np.asarray(fill, dtype=np.float32)
        self.target = target

    def __call__(self, day: Day, origins: np.ndarray, steps: int) -> np.ndarray:
        origins = _check_origins(day, origins)
        if self.target and day.target_speed is None:
            raise ValueError("Oracle(target=True): the day has no target_speed (load it with load_days)")
        speed, mask = (day.target_speed, day.target_mask) if self.target else (day.speed, day.mask)
        full = np.where(mask, speed, self.fill[None, :])  # [T, N]
        idx = np.clip(origins[:, None] + np.arange(steps)[None, :], 0, day.num_steps - 1)
        return full[idx].astype(np.float32)
