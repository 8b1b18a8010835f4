"""Historical speed profiles: mean observed speed by day group and interval of the day, fitted on training days.

The profile is what a segment usually does at this time of the week; the traffic simulator reads it as an
input and forecasts departures from it, and ``ProfileForecaster`` is the historical-average baseline of any
speed series (also multi-day ones such as METR-LA's, where intervals of the day repeat inside a trajectory).
Sums and counts are kept per day of week, so a training sample can read a profile that leaves its own day of
week out: otherwise the profile would contain the very values the model learns to predict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gnnsim.data.format import Split

DAY_S = 86400.0
WEEKEND = 5  # day_of_week >= 5 (Saturday, Sunday) is a weekend day


def absolute_slots(
    slot: Tensor, day_of_week: Tensor, offsets: Tensor, steps_per_day: int
) -> tuple[Tensor, Tensor]:
    """Return (interval of day, day of week) ``offsets`` intervals after (slot, day_of_week), across midnights.

    Args:
        slot: `[M]` interval of the day.
        day_of_week: `[M]` 0 = Monday.
        offsets: `[K]` interval offsets (may be negative).
        steps_per_day: intervals per day.

    Returns:
        Two `[M, K]` long tensors.
    """
    a = (day_of_week.long() * steps_per_day + slot.long())[:, None] + offsets.long()[None, :]  # [M, K]
    return a % steps_per_day, (a // steps_per_day) % 7


class SpeedProfile(nn.Module):
    """Mean speeds by (weekday / weekend, interval of the day, segment) of one or more fields.

    Buffers ``total`` and ``count`` `[F, 7, T_day, N]` hold sums by day of week; they are empty until
    ``fit`` and are resized when loaded from a state dict, so a checkpoint carries its profile.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(0, 7, 0, 0))
        self.register_buffer("count", torch.zeros(0, 7, 0, 0))

    @property
    def fitted(self) -> bool:
        return self.total.numel() > 0

    @property
    def steps_per_day(self) -> int:
        return self.total.shape[2]

    def fit(self, series: Sequence[dict[str, np.ndarray]], fields: Sequence[str], dt: float) -> SpeedProfile:
        """Accumulate the profile of ``fields`` from trajectories.

        Args:
            series: trajectories, each with ``time_of_day`` `[T]`, ``day_of_week`` `[T]` and, per field
                ``f``, ``f`` `[T, N]` with ``f + "_mask"`` `[T, N]` (True where observed).
            fields: the fields to profile (F of them).
            dt: interval length (s); ``86400 / dt`` must be a whole number.
        """
        steps = round(DAY_S / dt)
        if abs(steps * dt - DAY_S) > 1e-6 or not series:
            raise ValueError(f"SpeedProfile.fit: need >= 1 trajectory and dt dividing a day, got dt={dt}")
        n = series[0][fields[0]].shape[1]
        total = np.zeros((len(fields), 7, steps, n))
        count = np.zeros_like(total)
        for s in series:
            slot = np.round(np.asarray(s["time_of_day"], np.float64) * steps).astype(np.int64) % steps  # [T]
            dow = np.asarray(s["day_of_week"], np.int64) % 7
            for i, f in enumerate(fields):
                m = np.asarray(s[f + "_mask"], bool)
                np.add.at(total[i], (dow, slot), np.where(m, s[f], 0.0))
                np.add.at(count[i], (dow, slot), m)
        self.total = torch.as_tensor(total, dtype=torch.float32, device=self.total.device)
        self.count = torch.as_tensor(count, dtype=torch.float32, device=self.count.device)
        return self

    def fit_split(self, path: str | os.PathLike, fields: Sequence[str], masks: Sequence[str]) -> SpeedProfile:
        """Fit on every trajectory of a split; ``masks[i]`` is the observation mask field of ``fields[i]``."""
        split = Split(path)
        for f in ("time_of_day", "day_of_week", *fields, *masks):
            if f not in split.schema:
                raise ValueError(f"{split.path}: field '{f}' is missing; the speed profile needs it")
        series = []
        for i in range(len(split)):
            s = {k: split.read(i, k) for k in ("time_of_day", "day_of_week")}
            for f, m in zip(fields, masks):
                s[f], s[f + "_mask"] = split.read(i, f)[..., 0], split.read(i, m)[..., 0].astype(bool)
            series.append(s)
        dt = split.dt
        split.close()
        return self.fit(series, fields, dt)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("total", "count"):
            if prefix + name in state_dict:
                setattr(
                    self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device)
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, slot: Tensor, day_of_week: Tensor, node: Tensor, leave_out: bool = False) -> Tensor:
        """Return the profile `[F, *shape]` at broadcastable index tensors (interval of day, day of week, node).

        The mean is over the days of the same group (weekday / weekend), without those of the same day of
        week when ``leave_out``; where that group never observed the segment, over all days, then the
        segment's overall mean, then the field's overall mean.
        """
        if not self.fitted:
            raise ValueError(
                "speed profile is not fitted; set simulator.params.profile_split to the train split"
            )
        slot, dow, node = torch.broadcast_tensors(slot.long(), day_of_week.long() % 7, node.long())
        weekend = torch.arange(7, device=slot.device) >= WEEKEND  # [7]
        by_group = [
            torch.stack([x[:, ~weekend].sum(1), x[:, weekend].sum(1)], 1) for x in (self.total, self.count)
        ]
        pooled = [x.sum(1) for x in (self.total, self.count)]  # [F, T_day, N]
        group = (dow >= WEEKEND).long()
        g_sum, g_cnt = by_group[0][:, group, slot, node], by_group[1][:, group, slot, node]  # [F, *shape]
        p_sum, p_cnt = pooled[0][:, slot, node], pooled[1][:, slot, node]
        if leave_out:
            own_sum, own_cnt = self.total[:, dow, slot, node], self.count[:, dow, slot, node]
            g_sum, g_cnt, p_sum, p_cnt = g_sum - own_sum, g_cnt - own_cnt, p_sum - own_sum, p_cnt - own_cnt
        node_sum, node_cnt = pooled[0].sum(1), pooled[1].sum(1)  # [F, N]
        field_mean = node_sum.sum(1) / node_cnt.sum(1).clamp(min=1)  # [F]
        node_mean = torch.where(node_cnt > 0, node_sum / node_cnt.clamp(min=1), field_mean[:, None])[:, node]
        out = torch.where(p_cnt > 0.5, p_sum / p_cnt.clamp(min=1), node_mean)
        return torch.where(g_cnt > 0.5, g_sum / g_cnt.clamp(min=1), out)


class ProfileForecaster:
    """The historical-average baseline of a speed series: the profile at each forecast interval.

    Works on multi-day series (``Day`` with ``t_start`` and ``day_of_week`` of interval 0): interval ``k`` is
    ``t_start + k * dt`` seconds after midnight of ``day_of_week``.
    """

    def __init__(self, profile: SpeedProfile, field: int = 0):
        """Args: profile: a fitted profile; field: which of its fields to forecast."""
        self.profile, self.field = profile, field

    @torch.no_grad()
    def __call__(self, day, origins: np.ndarray, steps: int) -> np.ndarray:
        slot0, dow0 = origin_slots(day, origins, self.profile.steps_per_day)
        slot, dow = absolute_slots(slot0, dow0, torch.arange(steps), self.profile.steps_per_day)  # [S, steps]
        node = torch.arange(day.speed.shape[1])
        out = self.profile(slot[..., None], dow[..., None], node)[self.field]  # [S, steps, N]
        return out.numpy().astype(np.float32)


def origin_slots(day, origins: np.ndarray, steps_per_day: int) -> tuple[Tensor, Tensor]:
    """Return (interval of day, day of week) `[S]` of forecast origins (interval indices) of a ``Day``."""
    if abs(day.dt * steps_per_day - DAY_S) > 1e-6:
        raise ValueError(f"day.dt={day.dt} s does not match the profile's {steps_per_day} intervals per day")
    k = torch.as_tensor(np.asarray(origins, np.int64)) + round(day.t_start / day.dt)  # [S] since midnight
    return k % steps_per_day, (day.day_of_week + k // steps_per_day) % 7
