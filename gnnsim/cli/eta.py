"""gnnsim-eta: the ETA benchmark of a trained traffic run against the baselines on held-out data (hydra app).

``mode=sumo``: route travel times on a SUMO data set's held-out days. ``mode=metr_la``: the METR-LA /
PEMS-BAY speed protocol on a converted data set (``checkpoint=null`` for the baselines alone).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gnnsim.cli.common import CONF_DIR, command, plain
from gnnsim.eta.report import metr_la_report, sumo_report, write_report

MODES = ("sumo", "metr_la")


@command
def run(cfg: DictConfig) -> dict:
    """Evaluate the methods that ``cfg.mode`` names, write the report files and print the table."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {cfg.mode!r}")
    checkpoint = None if cfg.checkpoint is None else Path(cfg.checkpoint)
    if cfg.mode == "sumo":
        windows = None if cfg.windows_h is None else [tuple(w) for w in plain(cfg)["windows_h"]]
        results = sumo_report(
            cfg.data_dir, cfg.split, checkpoint, tuple(cfg.horizons_min), windows, cfg.device
        )
        title, metrics, unit = f"Route ETAs, {cfg.data.name} {cfg.split} days", ("mape", "bad_rate"), "s"
    else:
        results = metr_la_report(
            cfg.data_dir, cfg.split, checkpoint, tuple(cfg.horizon_steps), device=cfg.device
        )
        title, metrics = f"Speed forecasts (METR-LA protocol), {cfg.data.name} {cfg.split}", ("mape", "mae")
        unit = "mph"  # METR-LA and PEMS-BAY speeds, as converted
    paths = write_report(results, cfg.out_dir, title, metrics, unit)
    print(paths["md"].read_text())
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eta")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
