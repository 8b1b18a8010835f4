"""Generate a split by running a simulator in parallel processes, deterministically per seed."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gnnsim.data.format import Schema, write_split


def trajectory_seeds(seed: int, n: int) -> list[int]:
    """Return ``n`` independent 63-bit seeds derived from ``seed`` (the same for the same inputs)."""
    return [int(s.generate_state(2, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(n)]


def generate_split(
    path: str | os.PathLike,
    simulate: Callable[[int], Mapping[str, np.ndarray]],
    seeds: list[int],
    *,
    schema: Schema,
    dt: float,
    generator: str,
    config: Mapping,
    workers: int = 1,
    desc: str = "",
) -> Path:
    """Run ``simulate(seed)`` for each seed (in ``workers`` processes) and write the results as one split.

    Args:
        path: output ``.h5`` file, written atomically.
        simulate: a picklable callable (module-level function or ``functools.partial``) returning one
            trajectory's arrays as the schema describes.
        seeds: one seed per trajectory; trajectory ``i`` depends on ``seeds[i]`` only.
        schema, dt, generator, config: stored in the file's header (see ``write_split``).
        workers: number of processes; 1 runs in this process.
        desc: progress-bar label.

    Returns:
        The path written.
    """
    bar = dict(total=len(seeds), desc=desc or Path(path).name, unit="traj", leave=False)
    if workers <= 1:
        trajs = tqdm((simulate(s) for s in seeds), **bar)
        return write_split(path, trajs, schema, dt=dt, generator=generator, config=config)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        trajs = tqdm(pool.map(simulate, seeds), **bar)
        return write_split(path, trajs, schema, dt=dt, generator=generator, config=config)
