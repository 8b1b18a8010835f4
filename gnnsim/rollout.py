"""Autoregressive rollouts of a split, written as a self-describing file with error metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gnnsim.data.dataset import trajectory_tensors
from gnnsim.data.format import FieldSpec, Split, write_split
from gnnsim.files import write_text_atomic
from gnnsim.metrics import RolloutErrors
from gnnsim.simulators import Simulator

PRED_PREFIX = "pred_"


def rollout_split(
    sim: Simulator,
    split: Split,
    out_path: str | os.PathLike,
    num_steps: int | None = None,
    max_trajectories: int | None = None,
    device: torch.device | str = "cpu",
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll out every trajectory of ``split`` and write predictions next to the truth.

    The output file uses the gnnsim format: each trajectory holds the split's static fields, the true
    ``state_fields`` and ``pred_<field>`` for each, ``[T, nodes, F]``. A JSON file ``<stem>_metrics.json``
    beside it holds RMSE at horizons 1, 10, 50 and all steps (``rmse``), the same for the domain's baseline
    (``<baseline_name>_rmse``, e.g. ``persistence_rmse``), per-step curves, and whether every prediction stayed finite.
    Errors count only the entries the simulator's ``metric_mask`` field marks observed, when it names one.

    Args:
        sim: a trained simulator.
        split: the data to roll out.
        out_path: the ``.h5`` file to write.
        num_steps: rollout length (default: each trajectory's length - the simulator's history).
        max_trajectories: roll out only the first trajectories.
        device: where to run the model.
        metadata: JSON-able provenance stored in the file (checkpoint path and step, ...).
        progress: show a progress bar.

    Returns:
        The metrics dictionary (also written to disk).
    """
    out_path = Path(out_path)
    sim = sim.to(device).eval()
    n = len(split) if max_trajectories is None else min(max_trajectories, len(split))
    static = {k: v for k, v in split.schema.items() if v.kind == "static"}
    schema = dict(static)
    for f in sim.state_fields:
        schema[f] = split.schema[f]
        schema[PRED_PREFIX + f] = FieldSpec("dynamic", "float32", split.schema[f].dims)
    errors, baseline = RolloutErrors(), RolloutErrors()
    finite = True

    def trajectories():
        nonlocal finite
        for i in tqdm(range(n), desc="rollout", unit="traj", disable=not progress):
            traj = trajectory_tensors(split, i, sim.fields)
            steps = traj[sim.metric_field].shape[0] - sim.window + 1 if num_steps is None else num_steps
            pred = sim.rollout({k: v.to(device) for k, v in traj.items()}, steps)
            base = sim.baseline(traj, steps)
            t = pred[sim.metric_field].shape[0]
            first = sim.window - 2  # the rollout's index 0 is the last given frame
            truth = {f: traj[f][first : first + t].numpy() for f in sim.state_fields}
            pred_np = {f: pred[f].float().cpu().numpy() for f in sim.state_fields}
            finite = finite and all(np.isfinite(p).all() for p in pred_np.values())
            mask = None if sim.metric_mask is None else traj[sim.metric_mask][first : first + t].numpy()
            errors.add(np.nan_to_num(pred_np[sim.metric_field], nan=1e6), truth[sim.metric_field], mask)
            baseline.add(base[sim.metric_field].float().numpy(), truth[sim.metric_field], mask)
            out = {k: split.read(i, k) for k in static}
            out.update(truth)
            out.update({PRED_PREFIX + f: np.nan_to_num(p, nan=np.inf).clip(-1e30, 1e30) for f, p in pred_np.items()})
            yield out

    write_split(
        out_path,
        trajectories(),
        schema,
        dt=split.dt,
        generator="gnnsim-rollout",
        config={"domain": sim.domain, "simulator": sim.spec(), "source": str(split.path), **(metadata or {})},
    )
    metrics = {
        "domain": sim.domain,
        "field": sim.metric_field,
        "trajectories": n,
        "rmse": errors.at_horizons(),
        f"{sim.baseline_name}_rmse": baseline.at_horizons(),
        "finite": bool(finite),
        "rmse_per_step": errors.per_step(),
        f"{sim.baseline_name}_rmse_per_step": baseline.per_step(),
        **(metadata or {}),
    }
    metrics_path = out_path.with_name(out_path.stem + "_metrics.json")
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2))
    return metrics
