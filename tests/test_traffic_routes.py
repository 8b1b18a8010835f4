"""Routes: travel time under time-varying speeds (closed forms), label windows, and the routes file."""

import h5py
import numpy as np
import pytest

from gnnsim.data.format import FormatError
from gnnsim.traffic import routes as R


def test_walk_route_by_hand():
    lengths = np.array([300.0, 600.0, 150.0])
    speeds = np.array([[[10.0, 10.0, 10.0], [20.0, 20.0, 5.0], [1.0, 1.0, 1.0]]])  # [S=1, T=3, N=3], dt = 60
    # depart 30: seg 0 in interval 0 (10 m/s) -> 60; seg 1 in interval 1 (20) -> 90; seg 2 (5 m/s) -> 120
    tt = R.walk_routes(np.array([[0, 1, 2]]), np.array([30.0]), lengths, speeds, np.array([0.0]), 60.0)
    assert tt.tolist() == [90.0]
    # before the first interval the first applies, after the last the last; -1 pads a shorter route
    tt = R.walk_routes(
        np.array([[0, -1, -1], [2, 2, -1]]),
        np.array([-500.0, 1000.0]),
        lengths,
        speeds,
        np.array([0.0]),
        60.0,
    )
    assert tt.tolist() == [30.0, 300.0]


def test_walk_route_triangular_closed_form():
    # speed c * (k + 1) in interval k and segments of length c * dt: a segment entered in interval k takes
    # dt / (k + 1), so exactly k + 1 segments fit in interval k; n = (K+1)(K+2)/2 segments take (K+1) dt.
    dt, c, n_int = 60.0, 7.0, 6
    speeds = (c * np.arange(1, n_int + 1, dtype=float))[None, :, None].repeat(4, axis=2)  # [1, T, 4]
    lengths = np.full(4, c * dt)
    for k in range(4):
        n = (k + 1) * (k + 2) // 2
        route = (np.arange(n) % 4)[None, :]
        tt = R.walk_routes(route, np.array([0.0]), lengths, speeds, np.array([0.0]), dt)
        assert tt[0] == pytest.approx((k + 1) * dt)


def test_walk_routes_fields_and_checks():
    lengths = np.array([100.0])
    speeds = np.array([[[10.0], [20.0]], [[5.0], [50.0]]])  # two fields
    tt = R.walk_routes(
        np.array([[0], [0], [0]]),
        np.array([0.0, 0.0, 100.0]),
        lengths,
        speeds,
        np.array([0.0, 100.0]),
        100.0,
        field=np.array([0, 1, 1]),
    )
    assert tt.tolist() == [
        10.0,
        20.0,
        20.0,
    ]  # field 1 starts at t=100: t=0 is before it, t=100 is its interval 0
    tt = R.walk_routes(
        np.array([[0]]), np.array([0.0]), lengths, np.array([[[0.0]]]), np.array([0.0]), 1.0, min_speed=2.0
    )
    assert tt.tolist() == [50.0]
    with pytest.raises(ValueError, match="NaN"):
        R.walk_routes(np.array([[0]]), np.array([0.0]), lengths, np.array([[[np.nan]]]), np.array([0.0]), 1.0)


def test_label_windows_and_route_set():
    rng = np.random.default_rng(0)
    routes = [np.arange(12), np.arange(3), np.arange(100, 108)]
    exits = [np.arange(1, 13) * 10.0, np.array([1.0, 2.0, 3.0]), np.arange(1, 9) * 5.0]
    r, e, d = R.sample_label_windows(rng, routes, exits, min_segments=4, max_segments=6)
    assert len(r) == 2  # the 3-segment trip is too short
    for win, ex, dep, full, fex in zip(r, e, d, [routes[0], routes[2]], [exits[0], exits[2]]):
        assert 4 <= len(win) <= 6
        s = int(np.flatnonzero(full == win[0])[0])
        assert 1 <= s and s + len(win) <= len(full) - 1  # inside route[1:-1]
        assert dep == fex[s - 1]
        np.testing.assert_array_equal(ex, fex[s : s + len(win)])
    rs = R.make_route_set(r, e, d)
    np.testing.assert_allclose(rs.travel_time, [e[0][-1] - d[0], e[1][-1] - d[1]])
    pad = rs.padded()
    assert pad.shape == (2, max(len(w) for w in r))
    np.testing.assert_array_equal(pad[1, : len(r[1])], r[1])
    assert (pad[0, len(r[0]) :] == -1).all()
    sub = rs.subset(np.array([False, True]))
    np.testing.assert_array_equal(sub.route_segments, r[1])
    assert sub.route_start.tolist() == [0] and sub.travel_time[0] == rs.travel_time[1]
    empty = rs.subset(np.array([False, False]))
    assert len(empty) == 0 and empty.padded().shape == (0, 0) and len(empty.route_segments) == 0


def test_routes_file_roundtrip_and_errors(tmp_path):
    rs = R.make_route_set(
        [np.array([0, 1, 2]), np.array([2, 3])],
        [np.array([5.0, 9.0, 12.0]), np.array([3.0, 4.0])],
        [1.0, 2.0],
    )
    path = R.write_routes(
        tmp_path / "routes" / "test.h5", [rs, rs.subset(np.array([1]))], config={"x": 1}, dt=300.0
    )
    back = R.read_routes(path, num_segments=4)
    assert len(back) == 2
    for name in R.ROUTE_SCHEMA:
        np.testing.assert_array_equal(getattr(back[0], name), getattr(rs, name))
    with pytest.raises(
        FormatError, match=r"test.h5: traj_000000: field 'route_segments' has ids outside \[0, 3\)"
    ):
        R.read_routes(path, num_segments=3)
    with h5py.File(path, "a") as f:
        f["traj_000001/travel_time"][0] = 99.0
    with pytest.raises(FormatError, match=r"traj_000001: field 'travel_time' differs"):
        R.read_routes(path)
