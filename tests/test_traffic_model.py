"""The traffic simulator, its speed profile, the GNN forecaster and the ETA report, on tiny hand-built days."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from gnnsim.checkpoint import load_checkpoint, simulator_from_checkpoint
from gnnsim.data.dataset import FrameDataset, trajectory_tensors
from gnnsim.data.format import Split, write_split
from gnnsim.eta.benchmark import load_days
from gnnsim.eta.gnn import GnnForecaster
from gnnsim.eta.report import sumo_report, write_report
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators import build_simulator
from gnnsim.simulators.traffic import masked_mean_square
from gnnsim.traffic.profile import ProfileForecaster, SpeedProfile
from gnnsim.traffic.routes import make_route_set, write_routes
from gnnsim.traffic.sumo import SPEED_SCHEMA
from gnnsim.training import TrainConfig, train

DT = 3600.0  # hourly intervals: 24 per day
N = 4  # a chain of segments 0 -> 1 -> 2 -> 3
TINY = ModelConfig(latent_size=8, num_blocks=2, hidden_layers=1)
PARAMS = {"history": 3, "horizons": 4}


def tiny_day(dow: int, rng: np.random.Generator) -> dict:
    """One synthetic day: a rush hour at 8:00 on weekdays, node 3 unobserved at night."""
    hours = np.arange(24)
    slow = 1.0 - 0.5 * np.exp(-0.5 * ((hours - 8) / 1.5) ** 2) * (dow < 5)  # [24]
    speed = (10.0 * slow[:, None] * (1 + 0.05 * rng.standard_normal((24, N)))).astype(np.float32)
    mask = np.ones((24, N), bool)
    mask[:6, 3] = False
    speed[~mask] = 0.0
    return {
        "speed": speed[..., None],
        "mask": mask[..., None],
        "entry_speed": (0.9 * speed)[..., None],
        "entry_mask": mask[..., None],
        "time_of_day": (hours / 24).astype(np.float32),
        "day_of_week": np.full(24, dow, np.int32),
        "length": np.full(N, 500.0, np.float32),
        "speed_limit": np.full(N, 12.0, np.float32),
        "lanes": np.array([1, 2, 1, 2], np.int32),
        "pos": np.zeros((N, 2), np.float32),
        "senders": np.arange(N - 1, dtype=np.int32),
        "receivers": np.arange(1, N, dtype=np.int32),
        "edge_weight": np.ones(N - 1, np.float32),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Train (Mon-Fri, Sat) and test (Tue) days, with routes 0..3 leaving every hour from 7:00 to 12:00."""
    root = tmp_path_factory.mktemp("traffic")
    rng = np.random.default_rng(0)
    splits = {"train": [0, 1, 2, 3, 4, 5], "test": [1]}
    for name, dows in splits.items():
        days = [tiny_day(d, rng) for d in dows]
        write_split(root / f"{name}.h5", days, SPEED_SCHEMA, dt=DT, generator="test")
        departs = np.arange(7, 13) * 3600.0
        routes = [
            make_route_set(
                [np.arange(N)] * len(departs), [t + 50.0 * np.arange(1, N + 1) for t in departs], departs
            )
            for _ in days
        ]
        write_routes(root / "routes" / f"{name}.h5", routes, config={}, dt=DT)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    torch.manual_seed(0)
    sim = build_simulator("traffic", TINY, {**PARAMS, "profile_split": str(dataset / "train.h5")})
    data = FrameDataset(dataset / "train.h5", sim.window, sim.fields)
    run = tmp_path_factory.mktemp("run")
    result = train(
        sim,
        data,
        TrainConfig(
            steps=40, batch_size=2, warmup_steps=5, lr=1e-3, log_every=10, checkpoint_every=40, device="cpu"
        ),
        run,
        progress=False,
    )
    return sim, result


def test_masked_loss_ignores_missing_values():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 100.0], [-100.0, 2.0]])
    mask = torch.tensor([[True, False], [False, True]])
    assert masked_mean_square(pred, target, mask).item() == pytest.approx((1 + 4) / 2)
    target[0, 1] = float("nan")  # a missing value's placeholder never enters the loss
    assert masked_mean_square(pred, target, mask).item() == pytest.approx((1 + 4) / 2)
    assert masked_mean_square(pred, target, torch.zeros_like(mask)).item() == 0.0  # nothing observed: no gradient


def test_profile_groups_and_leaves_own_day_of_week_out():
    steps = 2  # two intervals per day
    day = lambda dow, v: {
        "time_of_day": np.array([0.0, 0.5]),
        "day_of_week": np.full(2, dow),
        "speed": np.array([[v, v], [v, 0.0]]),
        "speed_mask": np.array([[1, 1], [1, 0]], bool),
    }
    p = SpeedProfile().fit([day(0, 10.0), day(0, 20.0), day(1, 40.0), day(6, 7.0)], ["speed"], 86400 / steps)
    at = lambda slot, dow, node, leave_out=False: p(
        torch.tensor(slot), torch.tensor(dow), torch.tensor(node), leave_out
    )[0].item()
    assert at(0, 2, 0) == pytest.approx((10 + 20 + 40) / 3)  # weekday group
    assert at(0, 0, 0, leave_out=True) == pytest.approx(40.0)  # a Monday sample: the Mondays left out
    assert at(0, 5, 0) == pytest.approx(7.0)  # weekend group (the Sunday)
    assert at(0, 6, 0, leave_out=True) == pytest.approx((10 + 20 + 40) / 3)  # no other weekend day: pooled
    assert at(1, 2, 1) == pytest.approx((10 + 20 + 40 + 7) / 4)  # never observed then: the segment's mean
    day0 = type("D", (), {"speed": np.zeros((2, 2)), "dt": 86400 / steps, "t_start": 0.0, "day_of_week": 6})
    f = ProfileForecaster(p)(day0, np.array([1]), 2)  # Sunday 12:00, then Monday 0:00 (across midnight)
    np.testing.assert_allclose(f[0, :, 0], [7.0, (10 + 20 + 40) / 3])


def test_training_runs_finite_and_checkpoint_round_trips(trained, dataset):
    sim, result = trained
    assert np.isfinite(result["loss"])
    loaded = simulator_from_checkpoint(load_checkpoint(result["checkpoint"]))
    torch.testing.assert_close(
        loaded.profile.total, sim.profile.total
    )  # the profile travels in the checkpoint
    traj = trajectory_tensors(Split(dataset / "test.h5"), 0, loaded.fields)
    sim.eval()
    torch.testing.assert_close(loaded.rollout(traj)["entry_speed"], sim.rollout(traj)["entry_speed"])


def test_forecaster_reads_only_the_past(trained, dataset):
    sim, _ = trained
    days, statics = load_days(dataset / "test.h5")
    fc = GnnForecaster(sim, statics)
    origins = np.array([9])
    base = fc(days[0], origins, steps=6)
    assert base.shape == (1, 6, N) and np.isfinite(base).all() and (base > 0).all()
    future = days[0].speed.copy()
    future[9:] *= 3.0  # the future changes
    np.testing.assert_array_equal(fc(replace(days[0], speed=future), origins, steps=6), base)
    past = days[0].speed.copy()
    past[8] *= 3.0  # the last completed interval changes
    assert not np.allclose(fc(replace(days[0], speed=past), origins, 6), base)
    # beyond the model's horizons: the target's historical profile (Tue 13:00, 14:00 from the weekday train days)
    tail = sim.profile(torch.tensor([[13], [14]]), torch.tensor([[1], [1]]), torch.arange(N))[1]
    np.testing.assert_allclose(base[0, 4:], tail.numpy(), rtol=1e-6)


def test_rollout_and_last_value_baseline(trained, dataset):
    sim, _ = trained
    traj = trajectory_tensors(Split(dataset / "test.h5"), 0, sim.fields)
    pred = sim.rollout(traj)["entry_speed"]
    first = sim.window - 2
    assert pred.shape == (24 - first, N, 1)
    base = sim.baseline(traj)["entry_speed"]
    torch.testing.assert_close(base, traj["speed"][first - 1 : 23])  # every segment observed after 6:00


def test_eta_report_structure(trained, dataset, tmp_path):
    _, result = trained
    results = sumo_report(dataset, "test", result["checkpoint"], horizons_min=(0, 60))
    assert list(results) == ["free_flow", "realtime", "historical", "gnn"]
    for per_h in results.values():
        assert list(per_h) == ["0", "60"]
        for m in per_h.values():
            assert {"mae", "rmse", "mape", "bad_rate"} <= set(m) and m["count"] == 6
    truth = 200.0  # four 500 m segments at 50 s each
    assert results["free_flow"]["0"]["mae"] == pytest.approx(truth - 4 * 500 / 12.0, rel=1e-5)
    paths = write_report(results, tmp_path, "tiny")
    assert json.loads(paths["json"].read_text()) == results
    assert "| gnn | 60 min |" in paths["md"].read_text() and paths["png"].stat().st_size > 0


def test_metr_la_protocol_report(tmp_path):
    """Converted METR-LA layout (one multi-day trajectory per split, no segment statics), baselines and GNN."""
    from gnnsim.data.convert.metr_la import SCHEMA
    from gnnsim.eta.report import metr_la_report

    rng = np.random.default_rng(1)
    for name, first_day in (("train", 0), ("test", 7)):
        days = [tiny_day((first_day + i) % 7, rng) for i in range(7 if name == "train" else 2)]
        traj = {k: np.concatenate([d[k] for d in days]) for k in ("speed", "mask", "time_of_day", "day_of_week")}
        traj.update({k: days[0][k] for k in ("senders", "receivers", "edge_weight")})
        write_split(tmp_path / f"{name}.h5", [traj], SCHEMA, dt=DT, generator="test")
    torch.manual_seed(0)
    params = {**PARAMS, "target": "speed", "static_fields": [], "profile_split": str(tmp_path / "train.h5")}
    sim = build_simulator("traffic", TINY, params)
    data = FrameDataset(tmp_path / "train.h5", sim.window, sim.fields)
    cfg = TrainConfig(steps=5, batch_size=2, warmup_steps=2, log_every=5, checkpoint_every=5, device="cpu")
    ckpt = train(sim, data, cfg, tmp_path / "run", progress=False)["checkpoint"]
    results = metr_la_report(tmp_path, "test", ckpt, horizon_steps=(1, 2), input_steps=3, output_steps=2)
    assert list(results) == ["historical", "last_value", "gnn"]
    assert all(list(per_h) == ["60", "120"] for per_h in results.values())  # hourly data: minutes
    # every test value is observed after 6:00 and the noise is 5 %: the weekday profile is within ~10 %
    assert results["historical"]["60"]["mape"] < 0.1 and np.isfinite(results["gnn"]["120"]["mae"])
