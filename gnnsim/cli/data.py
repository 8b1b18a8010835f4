"""gnnsim-data: generate a data set with a project solver, or convert a user's files (hydra app)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gnnsim.cli.common import CONF_DIR, command, plain, typed


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


def generate_sumo(data: DictConfig, out_dir: Path) -> dict[str, Path]:
    """Simulate days of traffic on a generated road network with SUMO (speeds + ETA labels)."""
    from gnnsim.traffic import sumo

    cfg = typed(sumo.TrafficScenarioConfig, data.scenario, "data.scenario")
    sumo.generate(out_dir, cfg, seed=data.seed, workers=data.workers)
    splits = ("train", "valid", "test")
    return {split: out_dir / f"{split}.h5" for split in splits if (out_dir / f"{split}.h5").exists()}


def convert_metr_la(data: DictConfig, out_dir: Path) -> dict[str, Path]:
    """Convert a METR-LA / PEMS-BAY speed file and its sensor graph (DCRNN's 70/10/20 split)."""
    from gnnsim.data.convert import metr_la

    if data.source is None:
        raise ValueError("data.source: expected the speed file (metr-la.h5 or pems-bay.h5)")
    if (data.distances is None) == (data.adj_pkl is None):
        raise ValueError("data.distances / data.adj_pkl: give exactly one (distances CSV or DCRNN's adj_mx.pkl)")
    metr_la.convert(data.source, out_dir, distances=data.distances, adj_pkl=data.adj_pkl, key=data.key)
    return {split: out_dir / f"{split}.h5" for split in ("train", "valid", "test")}


GENERATORS = {
    "cloth": generate_cloth,
    "cylinder_flow": generate_cylinder_flow,
    "metr_la": convert_metr_la,
    "sumo": generate_sumo,
    "tfrecord": convert_tfrecord,
}


@command
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
