"""The ETA benchmark: route travel times from speed forecasts, per departure horizon; the METR-LA protocol.

ETA protocol. For a label (route, departure time ``depart``, measured ``travel_time``) and horizon h, the
forecast is made at ``t0 = depart - h`` from the intervals completed by then (origin
``k0 = floor((t0 - t_start) / dt)``), and the ETA walks the route through the forecast in time order
(``walk_routes``). Every horizon uses the same labels: those whose earliest origin still has
``min_history_s`` of the day before it.

Speed protocol (METR-LA / PEMS-BAY, DCRNN): forecast origins every interval with ``input_steps`` before and
``output_steps`` after inside the split; masked MAE / RMSE / MAPE at the given horizons (3, 6, 12 steps =
15, 30, 60 min).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from gnnsim.data.format import Split
from gnnsim.eta.baselines import Day, Forecaster, FreeFlow, HistoricalAverage, Oracle, RealtimeSnapshot
from gnnsim.eta.metrics import eta_metrics, masked_metrics
from gnnsim.traffic.routes import RouteSet, read_routes, walk_routes


def load_days(path: str | os.PathLike) -> tuple[list[Day], dict[str, np.ndarray]]:
    """Read a traffic speed split: one Day per trajectory, and the static fields of the first trajectory.

    ``entry_speed`` / ``entry_mask`` (SUMO data) become the days' target fields when present.
    """
    split = Split(path)
    for name in ("speed", "mask", "time_of_day", "day_of_week"):
        if name not in split.schema:
            raise ValueError(f"{split.path}: field '{name}' is missing; not a traffic speed split")
    days, statics = [], {}
    for i in range(len(split)):
        tod = split.read(i, "time_of_day")
        days.append(
            Day(
                speed=split.read(i, "speed")[..., 0],
                mask=split.read(i, "mask")[..., 0].astype(bool),
                day_of_week=int(split.read(i, "day_of_week")[0]) if len(tod) else 0,
                t_start=float(round(float(tod[0]) * 86400.0)) if len(tod) else 0.0,  # stored as float32
                dt=split.dt,
                target_speed=split.read(i, "entry_speed")[..., 0] if "entry_speed" in split.schema else None,
                target_mask=split.read(i, "entry_mask")[..., 0].astype(bool)
                if "entry_mask" in split.schema
                else None,
            )
        )
    if len(split):
        statics = {k: split.read(0, k) for k, s in split.schema.items() if s.kind == "static"}
    split.close()
    return days, statics


def route_etas(
    day: Day, routes: RouteSet, lengths: np.ndarray, forecaster: Forecaster, horizon_s: float, steps: int
) -> np.ndarray:
    """Return the ETA (s) of every route when forecast ``horizon_s`` before its departure.

    Args:
        day: the day's observations (the forecaster sees only intervals before each origin).
        routes: the labels of that day.
        lengths: `[N]` segment lengths.
        forecaster: see ``gnnsim.eta.baselines.Forecaster``.
        horizon_s: time between the forecast and the departure (s).
        steps: intervals forecast from each origin (the walk holds the last one beyond).
    """
    t0 = routes.depart.astype(np.float64) - horizon_s
    k0 = np.clip(np.floor((t0 - day.t_start) / day.dt).astype(np.int64), 0, day.num_steps)
    origins, field = np.unique(k0, return_inverse=True)
    fields = forecaster(day, origins, steps)  # [S, steps, N]
    return walk_routes(
        routes.padded(), routes.depart, lengths, fields, day.t_start + origins * day.dt, day.dt, field
    )


def eval_routes(
    days: Sequence[Day],
    routes: Sequence[RouteSet],
    lengths: np.ndarray,
    forecasters: Mapping[str, Forecaster],
    horizons_min: Sequence[float] = (0, 15, 30, 60),
    min_history_s: float = 3600.0,
    travel_steps: int = 12,
    bad_threshold: float = 0.2,
    windows_h: Sequence[tuple[float, float]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Return ``{forecaster: {"h=MIN": metrics}}`` (``eta_metrics``) over all days' labels.

    Args:
        days, routes: the split's days and their labels, in the same order.
        lengths: `[N]` segment lengths (m).
        forecasters: name -> forecaster.
        horizons_min: departure horizons in minutes.
        min_history_s: a label is used only if its earliest forecast origin has this much of the day before.
        travel_steps: intervals forecast beyond the departure.
        bad_threshold: relative error above which an ETA counts as bad.
        windows_h: if given, only labels departing inside one of these [start, end) hour windows count
            (e.g. the peaks ``[(6.5, 9.5), (16, 19)]``).
    """
    if len(days) != len(routes):
        raise ValueError(f"{len(days)} days of speeds but {len(routes)} days of routes")
    h_max = max(horizons_min) * 60.0

    def keep(d: Day, r: RouteSet) -> np.ndarray:
        ok = r.depart - h_max - d.t_start >= min_history_s
        if windows_h is not None:
            hour = r.depart / 3600.0
            ok &= np.any([(hour >= a) & (hour < b) for a, b in windows_h], axis=0)
        return ok

    kept = [r.subset(keep(d, r)) for d, r in zip(days, routes)]
    true = np.concatenate([r.travel_time for r in kept]).astype(np.float64)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, fc in forecasters.items():
        out[name] = {}
        for h in horizons_min:
            steps = math.ceil(h * 60.0 / days[0].dt) + travel_steps
            pred = np.concatenate(
                [route_etas(d, r, lengths, fc, h * 60.0, steps) for d, r in zip(days, kept)]
            )
            out[name][f"h={h:g}"] = eta_metrics(pred, true, bad_threshold)
    return out


def sumo_baselines(train_days: Sequence[Day], statics: Mapping[str, np.ndarray]) -> dict[str, Forecaster]:
    """Return the baselines of a SUMO dataset (free-flow = speed limit, also the fill where unobserved)."""
    limit = statics["speed_limit"]
    return {
        "free_flow": FreeFlow(limit),
        "realtime": RealtimeSnapshot(limit, max_age=None),  # empty now -> last speed seen today
        "historical": HistoricalAverage(train_days, limit, by="day_of_week"),
        "historical_daytype": HistoricalAverage(train_days, limit, by="day_type"),
        "oracle": Oracle(limit),
        "oracle_entry": Oracle(limit, target=True),
    }


def eval_sumo_dataset(
    root: str | os.PathLike,
    split: str = "test",
    horizons_min: Sequence[float] = (0, 15, 30, 60),
    extra: Mapping[str, Forecaster] | None = None,
    **kwargs,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate the baselines (fitted on ``train``) and ``extra`` forecasters on a SUMO dataset's split."""
    root = os.fspath(root)
    train_days, statics = load_days(os.path.join(root, "train.h5"))
    days, _ = load_days(os.path.join(root, f"{split}.h5"))
    routes = read_routes(os.path.join(root, "routes", f"{split}.h5"), num_segments=len(statics["length"]))
    forecasters = {**sumo_baselines(train_days, statics), **(extra or {})}
    return eval_routes(days, routes, statics["length"], forecasters, horizons_min, **kwargs)


def eval_speed_forecast(
    days: Sequence[Day],
    forecaster: Forecaster,
    input_steps: int = 12,
    output_steps: int = 12,
    horizons: Sequence[int] = (3, 6, 12),
    null_val: float = 0.0,
    chunk: int = 512,
) -> dict[str, dict[str, float]]:
    """Return ``{"h=STEPS": masked_metrics}`` of a speed forecaster (the METR-LA / PEMS-BAY protocol).

    Origins ``k0`` run over ``[input_steps, T - output_steps]`` of each day (split); horizon ``h`` compares
    the forecast of interval ``k0 + h - 1`` with its observation, ignoring entries equal to ``null_val``.
    """
    if max(horizons) > output_steps:
        raise ValueError(f"horizons {list(horizons)} exceed output_steps={output_steps}")
    preds = {h: [] for h in horizons}
    trues = {h: [] for h in horizons}
    for day in days:
        origins = np.arange(input_steps, day.num_steps - output_steps + 1)
        for a in range(0, len(origins), chunk):
            o = origins[a : a + chunk]
            f = forecaster(day, o, output_steps)  # [S, steps, N]
            for h in horizons:
                preds[h].append(f[:, h - 1])
                trues[h].append(np.where(day.mask[o + h - 1], day.speed[o + h - 1], null_val))
    return {
        f"h={h}": masked_metrics(np.concatenate(preds[h]), np.concatenate(trues[h]), null_val)
        for h in horizons
    }


def format_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Return a markdown table: one row per (forecaster, horizon), MAE/RMSE in s, MAPE and bad rate in %."""
    lines = [
        "| forecaster | horizon | MAE (s) | RMSE (s) | MAPE (%) | bad ETA (%) | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per_h in results.items():
        for h, m in per_h.items():
            lines.append(
                f"| {name} | {h.removeprefix('h=')} min | {m['mae']:.1f} | {m['rmse']:.1f} | "
                f"{100 * m['mape']:.1f} | "
                f"{100 * m.get('bad_rate', float('nan')):.1f} | {m['count']} |"
            )
    return "\n".join(lines)
