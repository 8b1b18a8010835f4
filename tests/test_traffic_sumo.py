"""SUMO scenarios on a tiny network and a short simulated time: determinism, layout, read-back."""

import json

import numpy as np
import pytest

pytest.importorskip("sumo", reason="eclipse-sumo is not installed (pip install eclipse-sumo==1.28.0)")

from gnnsim.data.format import Split
from gnnsim.eta.benchmark import eval_sumo_dataset
from gnnsim.traffic import sumo as S
from gnnsim.traffic.routes import read_routes

TINY = S.TrafficScenarioConfig(
    grid_size=4,
    block_length=200.0,
    trips_per_day=6000,
    begin_h=7.5,
    end_h=8.5,
    drain_s=900.0,
    incidents_per_day=1.0,
    route_min_segments=3,
    route_max_segments=6,
    train_days=2,
    valid_days=0,
    test_days=1,
    start_day_of_week=0,
)


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    d = tmp_path_factory.mktemp("net")
    net, cmds = S.build_network(TINY, 7, d)
    return d / "net.net.xml", net, cmds


def test_network_classes_and_adjacency(tiny_net):
    _, net, cmds = tiny_net
    assert net.num_segments == 2 * 2 * 4 * 3  # 4x4 grid, two directions
    assert set(np.round(net.speed_limit, 2)) <= {16.67, 13.89, 8.33} and len(set(net.speed_limit)) >= 2
    assert net.lanes.min() == 1 and net.lanes.max() >= 2
    assert (net.senders != net.receivers).all()
    # a successor starts where its predecessor ends (grid streets are straight): midpoints one block apart
    gap = np.linalg.norm(net.pos[net.senders] - net.pos[net.receivers], axis=1)
    assert gap.max() <= 200.0 + 1e-3
    assert cmds[0].startswith("netgenerate --grid") and cmds[1].startswith("netconvert")


def test_entry_speeds_by_hand():
    net = S.Network(
        segment_ids=["a", "b", "c", "d"],
        length=np.array([100.0, 200.0, 300.0, 100.0]),
        speed_limit=np.full(4, 20.0),
        lanes=np.ones(4, int),
        pos=np.zeros((4, 2)),
        senders=np.array([0, 1, 2]),
        receivers=np.array([1, 2, 3]),
    )
    cfg = S.TrafficScenarioConfig(begin_h=0.0, end_h=1.0, interval_s=300.0)
    # vehicle 1 enters b at 100 (exit a), leaves at 120 (20 s), enters c at 120, leaves at 420 (300 s)
    # vehicle 2 enters b at 250, leaves at 290 (40 s); its c traversal (290 -> 292) is a teleport: dropped
    routes = [np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3])]
    exits = [np.array([100.0, 120.0, 420.0, 430.0]), np.array([250.0, 290.0, 292.0, 300.0])]
    speed, mask = S.entry_speeds(routes, exits, net, cfg)
    assert speed.shape == (12, 4, 1) and mask.sum() == 2
    assert speed[0, 1, 0] == pytest.approx(200.0 / 30.0)  # length / mean(20, 40): both entered in [0, 300)
    assert speed[0, 2, 0] == pytest.approx(1.0)  # 300 m in 300 s
    assert not mask[:, [0, 3]].any()  # first and last segments of a trip are partial


@pytest.mark.parametrize("family", ["spider", "rand"])
def test_other_families_build(tmp_path, family):
    cfg = S.TrafficScenarioConfig(network=family, spider_arms=5, spider_circles=3, rand_iterations=30)
    net, _ = S.build_network(cfg, 3, tmp_path)
    assert net.num_segments > 20 and len(net.senders) > net.num_segments
    assert len(set(np.round(net.speed_limit, 2))) >= 2


def test_same_seed_same_day(tiny_net):
    net_file, net, _ = tiny_net
    a = S.simulate_day(TINY, net_file, day=1, seed=11)
    b = S.simulate_day(TINY, net_file, day=1, seed=11)
    c = S.simulate_day(TINY, net_file, day=1, seed=12)
    for k in ("speed", "mask"):
        np.testing.assert_array_equal(a["trajectory"][k], b["trajectory"][k])
    np.testing.assert_array_equal(a["routes"].travel_time, b["routes"].travel_time)
    assert not np.array_equal(a["trajectory"]["speed"], c["trajectory"]["speed"])
    sp, m = a["trajectory"]["speed"][..., 0], a["trajectory"]["mask"][..., 0]
    assert sp.shape == (12, net.num_segments) and m.mean() > 0.3
    assert (
        (sp[~m] == 0).all()
        and (sp[m] > 0).all()
        and (sp[m] <= 1.3 * np.broadcast_to(net.speed_limit, sp.shape)[m]).all()
    )
    assert a["trajectory"]["day_of_week"].tolist() == [1] * 12
    np.testing.assert_allclose(a["trajectory"]["time_of_day"][:2], [7.5 / 24, (7.5 + 5 / 60) / 24], rtol=1e-6)
    rs = a["routes"]
    assert len(rs) > 50 and (rs.route_length >= 3).all() and (rs.route_length <= 6).all()
    free = np.add.reduceat(net.length[rs.route_segments] / net.speed_limit[rs.route_segments], rs.route_start)
    assert (
        rs.travel_time >= 0.75 * free
    ).all()  # vehicles drive at most ~1.15x the limit; junctions add time


def test_generate_reads_back(tmp_path):
    rec = S.generate(tmp_path, TINY, seed=3, workers=1)
    train, test = Split(tmp_path / "train.h5"), Split(tmp_path / "test.h5")
    assert len(train) == 2 and len(test) == 1 and train.dt == 300.0
    assert set(train.schema) == set(S.SPEED_SCHEMA)
    assert train.config["sumo_version"].startswith("Eclipse SUMO sumo 1.28")
    assert train.config["days_in_split"] == [0, 1] and test.config["days_in_split"] == [2]
    assert "--mesosim true" in train.config["days"][0]["command"]
    n = train.sizes[0]["nodes"]
    assert train.read(0, "speed").shape == (12, n, 1) and train.read(0, "pos").shape == (n, 2)
    routes = read_routes(tmp_path / "routes" / "test.h5", num_segments=n)
    assert len(routes) == 1 and len(routes[0]) == rec["days"][2]["labels"]
    saved = json.loads((tmp_path / "scenario.json").read_text())
    assert saved["network"]["commands"] == rec["network"]["commands"]
    assert (tmp_path / "network" / "net.net.xml").is_file()
    res = eval_sumo_dataset(tmp_path, "test", horizons_min=(0, 15), min_history_s=600.0)
    assert res["oracle"]["h=0"]["count"] > 0
    assert res["oracle"]["h=15"]["mae"] <= res["free_flow"]["h=15"]["mae"]
