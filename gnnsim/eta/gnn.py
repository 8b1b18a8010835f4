"""A trained traffic simulator as an ETA-benchmark ``Forecaster``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from gnnsim.checkpoint import load_checkpoint, simulator_from_checkpoint
from gnnsim.eta.baselines import Day, _check_origins
from gnnsim.simulators.traffic import TrafficSimulator
from gnnsim.traffic.profile import absolute_slots, origin_slots


class GnnForecaster:
    """Forecasts with a ``TrafficSimulator``: ``[S, steps, N]`` speeds from the intervals before each origin.

    Intervals past the simulator's ``horizons`` take its historical profile (the forecast it decays to).

    Args:
        sim: a trained traffic simulator (its profile fitted or loaded).
        statics: the data's static fields (``senders``, ``receivers``, ``edge_weight`` and the simulator's
            ``static_fields``), e.g. from ``gnnsim.eta.benchmark.load_days``.
        device: where the model runs.
    """

    def __init__(
        self, sim: TrafficSimulator, statics: Mapping[str, np.ndarray], device: str | torch.device = "cpu"
    ):
        if not isinstance(sim, TrafficSimulator):
            raise ValueError(f"GnnForecaster needs a traffic simulator, got domain {sim.domain!r}")  # noqa: TRY004
        missing = [k for k in ("senders", "receivers", "edge_weight", *sim.static_fields) if k not in statics]
        if missing:
            raise ValueError(f"GnnForecaster: static field(s) {missing} missing from the data")
        self.device = torch.device(device)
        self.sim = sim.to(self.device).eval()
        sim.fit_profile()
        self.edge_index = (
            torch.as_tensor(np.stack([statics["senders"], statics["receivers"]])).long().to(self.device)
        )
        self.edge_weight = torch.as_tensor(statics["edge_weight"]).float().to(self.device)
        self.static_values = {k: np.asarray(statics[k]) for k in sim.static_fields}

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, statics: Mapping[str, np.ndarray], device: str | torch.device = "cpu"
    ) -> GnnForecaster:
        """Load a traffic checkpoint written by ``gnnsim-train``."""
        return cls(simulator_from_checkpoint(load_checkpoint(path)), statics, device)

    @torch.no_grad()
    def __call__(self, day: Day, origins: np.ndarray, steps: int) -> np.ndarray:
        origins = _check_origins(day, origins)
        sim, k = self.sim, self.sim.horizons
        slot0, dow0 = origin_slots(day, origins, sim.profile.steps_per_day)
        speed = torch.as_tensor(day.speed, dtype=torch.float32, device=self.device)
        mask = torch.as_tensor(day.mask, device=self.device)
        statics = sim.node_statics(self.static_values, speed.shape[1]).to(self.device)
        slot0, dow0 = slot0.to(self.device), dow0.to(self.device)
        pred = sim.forecast(
            speed,
            mask,
            torch.as_tensor(origins, device=self.device),
            slot0,
            dow0,
            statics,
            self.edge_index,
            self.edge_weight,
        )  # [S, K, N]
        if steps > k:  # beyond the horizons: the historical profile of the target
            offsets = torch.arange(k, steps, device=self.device)
            slot, dow = absolute_slots(slot0, dow0, offsets, sim.profile.steps_per_day)  # [S, steps - K]
            node = torch.arange(speed.shape[1], device=self.device)
            tail = sim.profile(slot[..., None], dow[..., None], node)[sim.profiled.index(sim.target)]
            pred = torch.cat([pred, tail], dim=1)
        return pred[:, :steps].cpu().numpy().astype(np.float32)
