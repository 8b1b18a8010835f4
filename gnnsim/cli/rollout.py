"""gnnsim-rollout: roll a trained simulator out on a split and write predictions and metrics (hydra app)."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gnnsim.checkpoint import load_checkpoint, simulator_from_checkpoint
from gnnsim.cli.common import CONF_DIR, command
from gnnsim.data.format import Split
from gnnsim.rollout import rollout_split
from gnnsim.training import resolve_device


@command
def run(cfg: DictConfig) -> dict:
    """Load the run's checkpoint, roll out ``cfg.split``, and print where outputs and metrics went."""
    ckpt_path = Path(cfg.checkpoint)
    payload = load_checkpoint(ckpt_path)
    sim = simulator_from_checkpoint(payload)
    data_dir = Path(cfg.data_dir or payload.get("extra", {}).get("data_dir", ""))
    split = Split(data_dir / f"{cfg.split}.h5")
    out = Path(cfg.out_dir) / f"{cfg.split}.h5"
    metrics = rollout_split(
        sim,
        split,
        out,
        num_steps=cfg.num_steps,
        max_trajectories=cfg.max_trajectories,
        device=resolve_device(cfg.device),
        metadata={"checkpoint": str(ckpt_path), "checkpoint_step": int(payload["step"])},
    )
    summary = {k: metrics[k] for k in metrics if k.endswith("rmse") or k == "finite"}
    print(json.dumps(summary, indent=1))
    print(f"rollout: {out}\nmetrics: {out.with_name(out.stem + '_metrics.json')}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="rollout")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
