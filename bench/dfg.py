"""DFG benchmark 2D-2 (Schäfer & Turek 1996): periodic flow past a cylinder at Re 100.

Runs the cylinder_flow solver (same code, same mesh sizes as the data set at ``--resolution default``,
halved at ``fine``) on the benchmark geometry: channel [0, 2.2] x [0, 0.41], cylinder of radius 0.05 at
(0.2, 0.2), inflow 4 * 1.5 * y (0.41 - y) / 0.41^2 (mean speed 1), viscosity 1e-3. Drag and lift come from
the momentum residual tested with a function that is 1 on the cylinder (`ProjectionSolver.force`);
c = 2 F / (U_mean^2 D). The maxima are taken over the last `--window` seconds and the Strouhal number
St = D f / U_mean from the lift's upward zero crossings there.

Usage::

    python bench/dfg.py --json dfg.json [--resolution default|fine] [--duration 8] [--window 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gnnsim.files import write_text_atomic
from gnnsim.graph import NodeType
from gnnsim.solvers.cylinder_flow import CylinderFlowConfig, channel_solver, node_types
from gnnsim.solvers.mesh import Channel, mesh_channel

CHANNEL = Channel(length=2.2, height=0.41, center=(0.2, 0.2), radius=0.05)
MEAN_SPEED = 1.0
VISCOSITY = 1e-3
# Schäfer & Turek (1996): the benchmark's reference intervals for test case 2D-2.
REFERENCE = {"cd_max": (3.22, 3.24), "cl_max": (0.99, 1.01), "strouhal": (0.295, 0.305)}
TARGET = {"cd_max": 0.05, "cl_max": 0.15, "strouhal": 0.03}  # accepted relative error at default resolution
RESOLUTIONS = {"default": 1.0, "fine": 0.5}  # scale of the data set's mesh sizes


def strouhal(t: np.ndarray, lift: np.ndarray) -> float:
    """Return St = D f / U_mean, f from the upward zero crossings of the lift's oscillation."""
    s = lift - lift.mean()
    up = np.flatnonzero((s[:-1] < 0) & (s[1:] >= 0))
    if len(up) < 2:
        raise RuntimeError(
            f"lift crosses its mean upwards {len(up)} times: no periodic shedding (run longer?)"
        )
    crossings = t[up] - s[up] * (t[up + 1] - t[up]) / (s[up + 1] - s[up])  # linear interpolation
    frequency = (len(crossings) - 1) / (crossings[-1] - crossings[0])
    return float(2 * CHANNEL.radius * frequency / MEAN_SPEED)


def run(
    resolution: str = "default", duration: float = 8.0, window: float = 3.0, sample_dt: float = 0.002
) -> dict:
    """Simulate the benchmark and return its coefficients, mesh size and timings.

    Args:
        resolution: "default" (the data set's mesh sizes) or "fine" (halved).
        duration: simulated time; shedding is periodic after about 4 s.
        window: the last `window` seconds are analysed.
        sample_dt: time between force samples (the solver substeps within it at the data set's CFL).

    Returns:
        `strouhal`, `cd_max`, `cl_max`, `cl_min`, `cd_mean`, `nodes`, `cells`, `dt` (last step),
        `steps`, `time` (simulated), `wall_s`, `cpu_s`, `resolution`, mesh sizes.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution: expected one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if not 0 < window < duration:
        raise ValueError(f"window: expected 0 < window < duration ({duration}), got {window}")
    cfg = CylinderFlowConfig()
    scale = RESOLUTIONS[resolution]
    wall, cpu = time.perf_counter(), time.process_time()
    mesh_pos, cells = mesh_channel(
        CHANNEL, cfg.mesh_size * scale, cfg.cylinder_mesh_size * scale, cfg.refine_distance
    )
    types = node_types(mesh_pos, CHANNEL)
    solver = channel_solver(mesh_pos, cells, types, CHANNEL, MEAN_SPEED, VISCOSITY, dt=sample_dt)
    y = mesh_pos[:, 1]
    cylinder = np.flatnonzero((types == NodeType.WALL_BOUNDARY) & (y > 0) & (y < CHANNEL.height))

    samples = round(duration / sample_dt)
    t = np.empty(samples)
    force = np.empty((samples, 2))
    steps = 0
    for k in range(samples):
        steps += solver.advance(sample_dt, cfg.cfl)
        t[k], force[k] = (k + 1) * sample_dt, solver.force(cylinder)
    coeff = 2 * force / (MEAN_SPEED**2 * 2 * CHANNEL.radius)  # [S, 2] drag, lift
    last = t > duration - window
    return {
        "strouhal": strouhal(t[last], coeff[last, 1]),
        "cd_max": float(coeff[last, 0].max()),
        "cl_max": float(coeff[last, 1].max()),
        "cl_min": float(coeff[last, 1].min()),
        "cd_mean": float(coeff[last, 0].mean()),
        "nodes": len(mesh_pos),
        "cells": len(cells),
        "cylinder_nodes": len(cylinder),
        "dt": solver.dt,
        "steps": steps,
        "time": duration,
        "window": window,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "resolution": resolution,
        "mesh_size": cfg.mesh_size * scale,
        "cylinder_mesh_size": cfg.cylinder_mesh_size * scale,
    }


def report(result: dict) -> str:
    """Return the result as a table with the reference ranges and relative errors to their midpoints."""
    lines = [
        f"DFG 2D-2 (Re 100), resolution {result['resolution']}: {result['nodes']} nodes, "
        f"{result['cells']} cells, dt {result['dt']:.3g}, {result['time']:g} s simulated in "
        f"{result['wall_s']:.1f} s wall ({result['cpu_s']:.1f} s CPU)",
        f"{'quantity':<10}{'value':>9}{'reference':>14}{'rel. error':>12}{'target':>9}",
    ]
    for key, label in (("cd_max", "c_D,max"), ("cl_max", "c_L,max"), ("strouhal", "St")):
        lo, hi = REFERENCE[key]
        error = result[key] / (0.5 * (lo + hi)) - 1
        ok = "ok" if abs(error) <= TARGET[key] else "MISS"
        lines.append(
            f"{label:<10}{result[key]:>9.4f}{f'{lo:g}-{hi:g}':>14}{100 * error:>+11.2f}%"
            f"{f'{100 * TARGET[key]:g}%':>6} {ok}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark from the command line, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="default")
    parser.add_argument("--duration", type=float, default=8.0, help="simulated seconds")
    parser.add_argument("--window", type=float, default=3.0, help="analysed final seconds")
    parser.add_argument("--sample-dt", type=float, default=0.002, help="seconds between force samples")
    args = parser.parse_args(argv)
    result = run(args.resolution, args.duration, args.window, args.sample_dt)
    result["reference"] = REFERENCE
    print(report(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
