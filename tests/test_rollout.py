"""Rollouts: boundary conditions, metrics against hand computation, the output file, pictures."""

import json

import numpy as np
import pytest
import torch

from conftest import write_synthetic_flow
from gnnsim import render
from gnnsim.data.dataset import trajectory_tensors
from gnnsim.data.format import Split
from gnnsim.graph import NodeType
from gnnsim.metrics import RolloutErrors
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.rollout import PRED_PREFIX, rollout_split
from gnnsim.simulators.flow import FlowSimulator


def test_rmse_at_horizons_by_hand():
    errors = RolloutErrors()
    truth = np.zeros((4, 2, 1))
    pred = np.array([0.0, 1.0, 2.0, 3.0])[:, None, None] * np.ones((4, 2, 1))
    errors.add(pred, truth)
    errors.add(np.zeros((3, 2, 1)), np.zeros((3, 2, 1)))  # a shorter trajectory with no error
    # step 1: (1+1+0+0)/4; steps 1..2: (2 + 8 + 0)/8; all steps 1..3: (2 + 8 + 18)/10
    out = errors.at_horizons((1, 2, 50))
    assert out == {"1": pytest.approx(np.sqrt(0.5)), "2": pytest.approx(np.sqrt(10 / 8)),
                   "all": pytest.approx(np.sqrt(28 / 10))}
    assert errors.per_step()[3] == pytest.approx(3.0)


def test_masked_rmse_counts_only_observed_entries():
    errors = RolloutErrors()
    truth = np.zeros((2, 3, 1))
    pred = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 100.0]])[:, :, None]  # step 1: the 100 is unobserved
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=np.uint8)[:, :, None]
    errors.add(pred, truth, mask)
    assert errors.at_horizons((1,)) == {"1": pytest.approx(np.sqrt((1 + 4) / 2)), "all": pytest.approx(np.sqrt(2.5))}


@pytest.fixture
def trained_sim():
    torch.manual_seed(0)
    sim = FlowSimulator(ModelConfig(latent_size=8, num_blocks=1))
    return sim.eval()


def test_boundary_nodes_follow_ground_truth(flow_split, trained_sim):
    split = Split(flow_split)
    traj = trajectory_tensors(split, 0, FlowSimulator.fields)
    pred = trained_sim.rollout(traj)
    assert pred["velocity"].shape == traj["velocity"].shape
    fixed = ~FlowSimulator.loss_mask(traj["node_type"])
    assert fixed.any() and (traj["node_type"] == NodeType.INFLOW).any()
    torch.testing.assert_close(pred["velocity"][:, fixed], traj["velocity"][:, fixed], rtol=0, atol=0)
    torch.testing.assert_close(pred["velocity"][0], traj["velocity"][0], rtol=0, atol=0)


def test_persistence_baseline_is_the_first_frame(flow_split):
    traj = trajectory_tensors(Split(flow_split), 0, FlowSimulator.fields)
    base = FlowSimulator.baseline(traj)["velocity"]
    free = FlowSimulator.loss_mask(traj["node_type"])
    assert torch.equal(base[:, free], traj["velocity"][:1, free].expand(base.shape[0], -1, -1))


def test_rollout_file_and_metrics(flow_split, trained_sim, tmp_path):
    out = tmp_path / "roll" / "test.h5"
    metrics = rollout_split(trained_sim, Split(flow_split), out, progress=False, metadata={"checkpoint_step": 7})
    saved = json.loads((tmp_path / "roll" / "test_metrics.json").read_text())
    assert saved["rmse"] == metrics["rmse"] and set(saved["rmse"]) == {"1", "10", "all"}
    assert saved["finite"] and saved["checkpoint_step"] == 7
    roll = Split(out)
    assert roll.config["domain"] == "flow" and len(roll) == 2
    # The stored prediction reproduces the reported error.
    errors, base = RolloutErrors(), RolloutErrors()
    for i in range(2):
        errors.add(roll.read(i, PRED_PREFIX + "velocity"), roll.read(i, "velocity"))
        v = roll.read(i, "velocity")
        traj = trajectory_tensors(Split(flow_split), i, FlowSimulator.fields)
        base.add(FlowSimulator.baseline(traj)["velocity"].numpy(), v)
    assert errors.at_horizons() == pytest.approx(metrics["rmse"])
    assert base.at_horizons() == pytest.approx(metrics["persistence_rmse"])


def test_render_writes_gif_plot_and_xdmf(flow_split, trained_sim, tmp_path):
    out = tmp_path / "test.h5"
    rollout_split(trained_sim, Split(flow_split), out, progress=False)
    roll = Split(out)
    frames = render.animate_mesh_field(roll, 0, "velocity", frames=5)
    assert len(frames) == 5 and frames[0].ndim == 3 and frames[0].std() > 0
    gif = render.save_animation(frames, tmp_path / "a.gif", fps=5)
    import imageio.v3 as iio
    assert iio.imread(gif, index=None).shape[0] == 5
    png = render.plot_error_curve(tmp_path / "test_metrics.json", tmp_path / "rmse.png")
    assert png.stat().st_size > 1000
    xdmf = render.write_xdmf(roll, 0, tmp_path / "a.xdmf").read_text()
    assert xdmf.count("<Grid Name=\"step") == roll.num_steps(0) and "test.h5:/traj_000000/pred_velocity" in xdmf
