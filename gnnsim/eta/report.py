"""The ETA benchmark report: run the methods on held-out data, write ``report.json``, ``report.md``, ``report.png``.

Two protocols (``gnnsim.eta.benchmark``): route ETAs on a SUMO data set (free-flow, real-time snapshot,
historical average by weekday/weekend and time of day, and the GNN), and the METR-LA / PEMS-BAY speed
protocol (historical average, last value and the GNN). Results are ``{method: {horizon_min: metrics}}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gnnsim.eta.baselines import Forecaster, RealtimeSnapshot
from gnnsim.eta.benchmark import eval_routes, eval_speed_forecast, format_table, load_days, sumo_baselines
from gnnsim.eta.gnn import GnnForecaster
from gnnsim.files import save_figure, write_text_atomic
from gnnsim.traffic.profile import ProfileForecaster, SpeedProfile
from gnnsim.traffic.routes import read_routes

Results = dict[str, dict[str, dict[str, float]]]


def sumo_report(
    data_dir: str | os.PathLike,
    split: str = "test",
    checkpoint: str | os.PathLike | None = None,
    horizons_min: Sequence[float] = (0, 15, 30, 60),
    windows_h: Sequence[tuple[float, float]] | None = None,
    device: str = "cpu",
) -> Results:
    """Return route-ETA metrics of the baselines (fitted on ``train``) and the GNN on a SUMO split.

    Args:
        data_dir: a ``gnnsim-data`` SUMO data set (``{train,SPLIT}.h5`` and ``routes/SPLIT.h5``).
        split: the held-out split.
        checkpoint: a traffic checkpoint (None: baselines only).
        horizons_min: departure horizons (min).
        windows_h: only departures inside these hour windows (None: all day).
        device: where the GNN runs.

    Returns:
        ``{method: {"H": {mae, rmse, mape, bad_rate, count}}}`` with H the horizon in minutes.
    """
    data_dir = Path(data_dir)
    train_days, statics = load_days(data_dir / "train.h5")
    days, _ = load_days(data_dir / f"{split}.h5")
    routes = read_routes(data_dir / "routes" / f"{split}.h5", num_segments=len(statics["length"]))
    base = sumo_baselines(train_days, statics)
    methods: dict[str, Forecaster] = {
        "free_flow": base["free_flow"],
        "realtime": base["realtime"],
        "historical": base["historical_daytype"],
    }
    if checkpoint is not None:
        methods["gnn"] = GnnForecaster.from_checkpoint(checkpoint, statics, device)
    results = eval_routes(days, routes, statics["length"], methods, horizons_min, windows_h=windows_h)
    return {name: {h.removeprefix("h="): m for h, m in per_h.items()} for name, per_h in results.items()}


def metr_la_report(
    data_dir: str | os.PathLike,
    split: str = "test",
    checkpoint: str | os.PathLike | None = None,
    horizon_steps: Sequence[int] = (3, 6, 12),
    input_steps: int = 12,
    output_steps: int = 12,
    device: str = "cpu",
) -> Results:
    """Return the METR-LA protocol's masked metrics of the baselines and the GNN on a converted data set.

    The historical average (weekday/weekend, interval of the day) and the last value's fallback come from
    ``train``; the forecasts at ``horizon_steps`` intervals after each origin are scored (keys: minutes).
    """
    data_dir = Path(data_dir)
    train_days, statics = load_days(data_dir / "train.h5")
    days, _ = load_days(data_dir / f"{split}.h5")
    series = [
        {
            "time_of_day": (d.t_start + np.arange(d.num_steps) * d.dt) % 86400 / 86400,
            "day_of_week": (d.day_of_week + (d.t_start + np.arange(d.num_steps) * d.dt) // 86400) % 7,
            "speed": d.speed,
            "speed_mask": d.mask,
        }
        for d in train_days
    ]
    profile = SpeedProfile().fit(series, ["speed"], train_days[0].dt)
    observed = sum(d.mask.sum(0) for d in train_days)
    node_mean = sum(np.where(d.mask, d.speed, 0).sum(0) for d in train_days) / np.maximum(observed, 1)
    methods: dict[str, Forecaster] = {
        "historical": ProfileForecaster(profile),
        "last_value": RealtimeSnapshot(node_mean, max_age=None),
    }
    if checkpoint is not None:
        methods["gnn"] = GnnForecaster.from_checkpoint(checkpoint, statics, device)
    dt_min = days[0].dt / 60
    return {
        name: {
            f"{h * dt_min:g}": m
            for h, m in zip(
                horizon_steps,
                eval_speed_forecast(days, fc, input_steps, output_steps, horizon_steps).values(),
            )
        }
        for name, fc in methods.items()
    }


def write_report(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    out_dir: str | os.PathLike,
    title: str,
    plot_metrics: Sequence[str] = ("mape", "bad_rate"),
    unit: str = "s",
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` (a table) and ``report.png`` (``plot_metrics`` vs horizon per method).

    ``unit`` is that of MAE and RMSE in the table: ``s`` for ETAs, the speed unit for speed forecasts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    write_text_atomic(paths["json"], json.dumps(results, indent=2))
    table = format_table({name: {f"h={h}": m for h, m in per_h.items()} for name, per_h in results.items()})
    table = table.replace("MAE (s) | RMSE (s)", f"MAE ({unit}) | RMSE ({unit})")
    write_text_atomic(paths["md"], f"# {title}\n\n{table}\n")
    fig, axes = plt.subplots(1, len(plot_metrics), figsize=(5 * len(plot_metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], plot_metrics):
        for name, per_h in results.items():
            h = [float(k) for k in per_h]
            scale = 100 if metric in ("mape", "bad_rate") else 1
            ax.plot(h, [scale * per_h[k].get(metric, np.nan) for k in per_h], marker="o", label=name)
        ax.set_xlabel("horizon (min)")
        ax.set_ylabel(f"{metric} (%)" if metric in ("mape", "bad_rate") else metric)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, paths["png"], dpi=120)
    return paths
