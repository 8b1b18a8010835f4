"""gnnsim-data: generate a data set with a project solver, or convert a user's files (hydra app)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gnnsim.cli.common import CONF_DIR, friendly_errors, plain, typed


def generate_cylinder_flow(data: DictConfig, out_dir: Path) -> dict[str, Path]:
    """Simulate cylinder-flow trajectories with the project's Navier-Stokes solver."""
    from gnnsim.solvers import cylinder_flow

    cfg = typed(cylinder_flow.CylinderFlowConfig, data.solver, "data.solver")
    return cylinder_flow.generate(out_dir, cfg, splits=plain(data.splits), seed=data.seed, workers=data.workers)


def convert_tfrecord(data: DictConfig, out_dir: Path) -> dict[str, Path]:
    """Convert a DeepMind MeshGraphNets download (meta.json + SPLIT.tfrecord)."""
    from gnnsim.data.convert.tfrecord import convert_dataset

    if data.source is None:
        raise ValueError("data.source: expected the folder holding meta.json and SPLIT.tfrecord files")
    return convert_dataset(data.source, out_dir, splits=tuple(data.splits), limit=data.limit)


def generate_cloth(data: DictConfig, out_dir: Path) -> dict[str, Path]:
    """Simulate flags with the project's mass-spring cloth solver."""
    from gnnsim.solvers import cloth

    cfg = typed(cloth.ClothConfig, data.solver, "data.solver")
    return cloth.generate(out_dir, cfg, splits=plain(data.splits), seed=data.seed, workers=data.workers)


GENERATORS = {
    "cloth": generate_cloth,
    "cylinder_flow": generate_cylinder_flow,
    "tfrecord": convert_tfrecord,
}


@friendly_errors
def run(cfg: DictConfig) -> dict[str, Path]:
    """Run the generator that ``data.generator`` names into ``out_dir``; print the files written."""
    generator = cfg.data.generator
    if generator not in GENERATORS:
        raise ValueError(f"data.generator: expected one of {sorted(GENERATORS)}, got {generator!r}")
    written = GENERATORS[generator](cfg.data, Path(cfg.out_dir))
    for split, path in written.items():
        print(f"{split}: {path}")
    return written


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="data")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
