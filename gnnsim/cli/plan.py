"""gnnsim-plan: the latent-landmark planning benchmark (HER, MPC, L3P, exact-distance oracle) (hydra app)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gnnsim.cli.common import CONF_DIR, command
from gnnsim.planning.benchmark import PlanningConfig, run_benchmark

# The benchmark's dataclasses are the schema: `plan=default` (the full table) or `plan=smoke` (seconds).
ConfigStore.instance().store(group="plan", name="default", node=PlanningConfig)
ConfigStore.instance().store(group="plan", name="smoke", node=PlanningConfig.smoke())


@command
def run(cfg: DictConfig) -> dict:
    """Run the benchmark and write ``report.json`` ({method: {bucket: success rate}}), a table and plots."""
    out_dir = Path(cfg.out_dir)
    table = run_benchmark(OmegaConf.to_object(cfg.plan), out_dir, progress=True)
    print((out_dir / "table.md").read_text())
    print(f"report: {out_dir / 'report.json'}\nplots: {out_dir / 'success_vs_distance.png'}, {out_dir / 'maze_landmarks.png'}")
    return table


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="plan")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
