"""ETA metrics against hand-computed values, and the masked metrics against DCRNN's formulas."""

import math

import numpy as np
import pytest

from gnnsim.eta import metrics


def test_eta_metrics_by_hand():
    true = np.array([100.0, 100.0, 100.0, 100.0, 50.0])
    pred = np.array([110.0, 90.0, 150.0, 100.0, 60.0])  # errors 10, -10, 50, 0, 10 (= exactly 20 % of 50)
    m = metrics.eta_metrics(pred, true)
    assert m["mae"] == pytest.approx(80 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((100 + 100 + 2500 + 0 + 100) / 5))
    assert m["mape"] == pytest.approx((0.1 + 0.1 + 0.5 + 0 + 0.2) / 5)
    assert m["bad_rate"] == pytest.approx(1 / 5)  # only |50| > 20 % of 100; 20 % exactly is not bad
    assert m["count"] == 5
    assert metrics.bad_rate(pred, true, threshold=0.05) == pytest.approx(4 / 5)


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="shape"):
        metrics.mae(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="masked_mape"):
        metrics.mape(np.ones(2), np.array([1.0, 0.0]))
    assert math.isnan(metrics.mae(np.zeros(0), np.zeros(0)))


def test_masked_metrics_by_hand():
    true = np.array([[0.0, 50.0], [60.0, 0.0]])
    pred = np.array([[10.0, 55.0], [54.0, 3.0]])  # only 50 and 60 count
    m = metrics.masked_metrics(pred, true)
    assert m["mae"] == pytest.approx(5.5)
    assert m["rmse"] == pytest.approx(math.sqrt(30.5))
    assert m["mape"] == pytest.approx(0.1)
    assert m["count"] == 2
    # an extra mask drops the 60 as well; NaN as the null value
    assert metrics.masked_mae(pred, true, mask=[[True, True], [False, True]]) == pytest.approx(5.0)
    true_nan = np.where(true == 0, np.nan, true)
    assert metrics.masked_rmse(pred, true_nan, null_val=np.nan) == pytest.approx(math.sqrt(30.5))
    assert math.isnan(metrics.masked_mae(pred, np.zeros_like(true)))  # DCRNN would say 0


def _dcrnn_masked(pred, labels, kind):
    # DCRNN lib/metrics.py, masked_*_np with null_val = 0
    mask = np.not_equal(labels, 0).astype("float32")
    mask /= np.mean(mask)
    if kind == "mae":
        return np.mean(np.nan_to_num(mask * np.abs(pred - labels)))
    if kind == "rmse":
        return np.sqrt(np.mean(np.nan_to_num(mask * np.square(pred - labels))))
    return np.mean(np.nan_to_num(mask * np.abs(np.divide((pred - labels).astype("float32"), labels))))


def test_masked_metrics_equal_dcrnn():
    rng = np.random.default_rng(1)
    labels = rng.uniform(5, 70, (50, 12, 7))
    labels[rng.random(labels.shape) < 0.1] = 0.0
    pred = labels + rng.normal(0, 3, labels.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for kind, fn in (
            ("mae", metrics.masked_mae),
            ("rmse", metrics.masked_rmse),
            ("mape", metrics.masked_mape),
        ):
            assert fn(pred, labels) == pytest.approx(_dcrnn_masked(pred, labels, kind), rel=1e-5)
