"""The benchmark's smoke setting runs every method on the learned world model and writes its artifacts."""

import json
import sys

import numpy as np
import pytest
import torch

from gnnsim.planning.benchmark import METHODS, PlanningConfig, run_benchmark
from gnnsim.planning.world_model import GraphDynamics


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
    errors = saved["world_model"]["0"]
    assert set(errors) >= {"fit_seconds", "one_step", "rollout", "baseline_one_step", "baseline_rollout"}
    assert all(np.isfinite(v) for v in errors.values())
    # The success table, a blank line, the world-model table (header, rule, one row per seed).
    assert (tmp_path / "table.md").read_text().count("\n") == 2 + len(METHODS) + 1 + 2 + len(cfg.seeds)
    for png in ("success_vs_distance.png", "maze_landmarks.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_exact_dynamics_runs_without_a_world_model_table(tmp_path):
    cfg = PlanningConfig.smoke()
    cfg.dynamics, cfg.methods = "exact", ["her", "mpc"]
    run_benchmark(cfg, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["world_model"] == {"0": {}}
    assert (tmp_path / "table.md").read_text().count("\n") == 2 + 2


def test_progress_bar_counts_epochs_and_evaluation_steps_without_changing_results(capsys):
    cfg = PlanningConfig.smoke()
    cfg.dynamics, cfg.methods = "exact", ["her"]
    quiet = run_benchmark(cfg)
    assert capsys.readouterr().err == ""
    assert run_benchmark(cfg, progress=True) == quiet
    err = capsys.readouterr().err
    total = cfg.agent.epochs + cfg.eval.horizon  # 3 epochs + 30 steps
    assert "seed 0" in err and f"0/{total} " in err and "world model" in err and "her" in err


def test_unknown_dynamics_is_refused():
    cfg = PlanningConfig.smoke()
    cfg.dynamics = "gnn"
    with pytest.raises(ValueError, match="dynamics: expected one of"):
        run_benchmark(cfg)


def test_the_learned_model_feeds_imagination_edge_checks_and_mpc(monkeypatch):
    callers = set()
    predict = GraphDynamics.predict

    def spy(self, states, actions):
        frame = sys._getframe(1)
        while frame is not None:
            callers.add(frame.f_code.co_qualname)
            frame = frame.f_back
        return predict(self, states, actions)

    monkeypatch.setattr(GraphDynamics, "predict", spy)
    cfg = PlanningConfig.smoke()
    cfg.methods = ["mpc", "l3p"]
    cfg.landmarks.kmeans_iters = 0  # keep the farthest-point landmarks apart (a smoke embedding merges them)
    cfg.landmarks.cutoff = 1e3  # and check every edge, however long the barely trained critic thinks it is
    run_benchmark(cfg)
    assert {"train_agent", "check_edges", "CEMController.__call__"} <= callers


def test_parallel_seeds_give_the_sequential_results(tmp_path):
    cfg = PlanningConfig.smoke()
    cfg.seeds, cfg.methods = [0, 1], ["her", "l3p"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers, so both runs do the same arithmetic
    try:
        sequential = run_benchmark(cfg, tmp_path / "seq")
    finally:
        torch.set_num_threads(threads)
    cfg.workers = 2
    parallel = run_benchmark(cfg, tmp_path / "par")
    assert parallel == sequential
    seq, par = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("seq", "par"))
    def errors(results):  # the world-model errors per seed, without the (timing) fit seconds
        return {seed: {k: v for k, v in e.items() if k != "fit_seconds"} for seed, e in results["world_model"].items()}

    assert errors(par) == errors(seq) and len(errors(seq)) == 2
    cfg.workers = 0
    with pytest.raises(ValueError, match="workers: expected an integer >= 1"):
        run_benchmark(cfg)
