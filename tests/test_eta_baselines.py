"""Baseline speed forecasters and the ETA protocol on hand-built days."""

import numpy as np
import pytest

from gnnsim.eta import baselines as B
from gnnsim.eta.benchmark import eval_routes, route_etas
from gnnsim.traffic.routes import make_route_set


def day(speed, mask=None, dow=0, dt=100.0):
    speed = np.asarray(speed, dtype=np.float32)
    mask = speed > 0 if mask is None else np.asarray(mask, bool)
    return B.Day(speed=speed, mask=mask, day_of_week=dow, t_start=0.0, dt=dt)


FILL = np.array([9.0, 8.0], np.float32)
D = day([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0], [7.0, 8.0]])  # [T=4, N=2], 0 = unobserved


def test_realtime_snapshot_uses_only_the_past():
    f = B.RealtimeSnapshot(FILL)(D, np.array([0, 1, 2, 3, 4]), steps=2)
    assert f.shape == (5, 2, 2)
    np.testing.assert_array_equal(f[:, 0], [[9, 8], [1, 2], [3, 8], [9, 8], [7, 8]])
    np.testing.assert_array_equal(f[:, 1], f[:, 0])  # held constant
    aged = B.RealtimeSnapshot(FILL, max_age=1)(D, np.array([2, 3]), steps=1)[:, 0]
    np.testing.assert_array_equal(aged, [[3, 2], [3, 8]])  # forward fill of at most one interval
    anyage = B.RealtimeSnapshot(FILL, max_age=None)(D, np.array([3]), steps=1)[0, 0]
    np.testing.assert_array_equal(anyage, [3, 2])  # the last observation of the day, however old
    with pytest.raises(ValueError, match="origins"):
        B.RealtimeSnapshot(FILL)(D, np.array([5]), 1)


def test_historical_average_groups_and_fallbacks():
    days = [day([[10, 0], [20, 0]], dow=0), day([[30, 0], [40, 0]], dow=0), day([[50, 6], [0, 0]], dow=5)]
    ha = B.HistoricalAverage(days, FILL, by="day_of_week")
    mon = ha(day(np.zeros((2, 2)), dow=0), np.array([0]), steps=3)[0]
    # Monday: mean of the two Mondays; node 1 never seen on a Monday -> pooled (6 at interval 0) or fill
    np.testing.assert_array_equal(mon, [[20, 6], [30, 8], [30, 8]])  # beyond the day: last interval
    tue = ha(day(np.zeros((2, 2)), dow=1), np.array([1]), steps=1)[0]
    np.testing.assert_array_equal(tue, [[30, 8]])  # no Tuesday: pooled over all days
    dt = B.HistoricalAverage(days, FILL, by="day_type")(day(np.zeros((2, 2)), dow=6), np.array([0]), 2)[0]
    np.testing.assert_array_equal(dt, [[50, 6], [30, 8]])  # weekend group: one Saturday, then pooled
    with pytest.raises(ValueError, match="by must be"):
        B.HistoricalAverage(days, FILL, by="month")


def test_free_flow_and_oracle():
    np.testing.assert_array_equal(B.FreeFlow(FILL)(D, np.array([0, 3]), 2), np.broadcast_to(FILL, (2, 2, 2)))
    o = B.Oracle(FILL)(D, np.array([1]), 3)[0]
    np.testing.assert_array_equal(o, [[3, 8], [9, 8], [7, 8]])
    with pytest.raises(ValueError, match="no target_speed"):
        B.Oracle(FILL, target=True)(D, np.array([1]), 1)
    target = np.full((4, 2), 5.0, np.float32)
    dt = B.Day(D.speed, D.mask, 0, 0.0, 100.0, target_speed=target, target_mask=target > 0)
    np.testing.assert_array_equal(B.Oracle(FILL, target=True)(dt, np.array([0]), 2)[0], [[5, 5], [5, 5]])


def test_route_eta_horizon_semantics():
    # one segment of 1000 m; speeds 10 m/s until t=300, then 20; departure at t=350
    lengths = np.array([1000.0, 1.0])
    d = day(np.array([[10, 1], [10, 1], [10, 1], [20, 1], [20, 1]], np.float32))
    rs = make_route_set([np.array([0])], [np.array([400.0])], [350.0])  # measured 50 s
    rt = B.RealtimeSnapshot(FILL)
    # h = 0: t0 = 350, intervals 0..2 complete, 3 in progress -> last completed (10 m/s) -> 100 s
    assert route_etas(d, rs, lengths, rt, 0.0, steps=2).tolist() == [100.0]
    # h = 0 with interval 3 complete (t0 = 400 -> departure 400): snapshot 20 m/s -> 50 s
    rs2 = make_route_set([np.array([0])], [np.array([450.0])], [400.0])
    assert route_etas(d, rs2, lengths, rt, 0.0, steps=2).tolist() == [50.0]
    # the oracle reads the interval containing the departure, whatever the horizon
    for h in (0.0, 150.0, 300.0):
        assert route_etas(d, rs, lengths, B.Oracle(FILL), h, steps=6).tolist() == [50.0]
    res = eval_routes(
        [d], [rs], lengths, {"rt": rt, "oracle": B.Oracle(FILL)}, horizons_min=(0, 5), min_history_s=0.0
    )
    assert res["oracle"]["h=5"]["mae"] == 0.0
    assert res["rt"]["h=0"]["mae"] == 50.0 and res["rt"]["h=0"]["bad_rate"] == 1.0
    both = make_route_set(
        [np.array([0]), np.array([0])], [np.array([400.0]), np.array([460.0])], [350.0, 410.0]
    )
    win = eval_routes(
        [d], [both], lengths, {"rt": rt}, horizons_min=(0,), min_history_s=0.0, windows_h=[(0.1, 0.12)]
    )
    # only the 410 s departure (0.114 h) is in the window; realtime there reads interval 3 (20 m/s)
    assert win["rt"]["h=0"]["count"] == 1 and win["rt"]["h=0"]["mae"] == 0.0
    none = eval_routes(
        [d], [both], lengths, {"rt": rt}, horizons_min=(0,), min_history_s=0.0, windows_h=[(5, 6)]
    )
    assert none["rt"]["h=0"]["count"] == 0
