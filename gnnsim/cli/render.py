"""gnnsim-render: animate a rollout (truth | prediction | |error|) and plot its error against step (hydra app)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gnnsim.cli.common import CONF_DIR, command
from gnnsim.data.format import Split
from gnnsim import render


def animation_frames(rollout: Split, trajectory: int, frames: int) -> list:
    """Render the frames that suit the rollout's domain."""
    domain = rollout.config.get("domain")
    if domain == "flow":
        return render.animate_mesh_field(rollout, trajectory, "velocity", frames)
    if domain == "cloth":
        return render.animate_cloth(rollout, trajectory, frames)
    raise ValueError(f"{rollout.path}: no animation for domain {domain!r}")


@command
def run(cfg: DictConfig) -> list[Path]:
    """Write the animation(s), the error plot and optionally XDMF next to the rollout file; print the paths."""
    path = Path(cfg.rollout)
    rollout = Split(path)
    if not 0 <= cfg.trajectory < len(rollout):
        raise ValueError(f"trajectory={cfg.trajectory}: {path} holds trajectories 0..{len(rollout) - 1}")
    written = []
    images = animation_frames(rollout, cfg.trajectory, cfg.frames)
    for fmt in cfg.formats:
        if fmt not in ("gif", "mp4"):
            raise ValueError(f"formats: expected gif and/or mp4, got {fmt!r}")
        written.append(render.save_animation(images, path.with_name(f"{path.stem}_traj{cfg.trajectory}.{fmt}"), cfg.fps))
    metrics = path.with_name(path.stem + "_metrics.json")
    if metrics.exists():
        written.append(render.plot_error_curve(metrics, path.with_name(f"{path.stem}_rmse.png")))
    if cfg.xdmf:
        written.append(render.write_xdmf(rollout, cfg.trajectory, path.with_name(f"{path.stem}_traj{cfg.trajectory}.xdmf")))
    for p in written:
        print(f"wrote {p}")
    return written


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="render")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
