"""The benchmark's smoke setting runs every method and writes its artifacts."""

import json

import numpy as np
import pytest
import torch

from gnnsim.planning.benchmark import METHODS, PlanningConfig, run_benchmark


def test_smoke_benchmark_writes_table_and_pictures(tmp_path):
    torch.manual_seed(0)
    cfg = PlanningConfig.smoke()
    table = run_benchmark(cfg, tmp_path)
    assert list(table) == list(METHODS)
    for row in table.values():
        assert len(row) == cfg.eval.buckets and all(0.0 <= v <= 1.0 for v in row.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["success"] == table and saved["config"]["seeds"] == cfg.seeds
    assert np.diff(saved["bucket_edges_steps"]).min() > 0
    assert (tmp_path / "table.md").read_text().count("\n") == 2 + len(METHODS)
    for png in ("success_vs_distance.png", "maze_landmarks.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_a_dynamics_factory_must_return_a_dynamics_model():
    with pytest.raises(TypeError, match="predict/rollout"):
        run_benchmark(PlanningConfig.smoke(), dynamics=lambda maze: object())
