"""ETA and speed-forecast metrics: MAE, RMSE, MAPE, bad-ETA rate, and DCRNN's masked variants.

All functions take numpy arrays (anything ``np.asarray`` accepts) of equal shape and reduce over every
entry. MAPE and the bad-ETA rate are fractions (0.1 = 10 %). Masked metrics ignore entries whose true value
equals ``null_val`` (0 = missing in METR-LA / PEMS-BAY) or is NaN, as DCRNN's ``masked_*_np`` do; where
DCRNN returns 0 for an all-missing input, these return NaN.
"""

from __future__ import annotations

import numpy as np


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred has shape {list(pred.shape)}, true has {list(true.shape)}; they must match")
    return pred, true


def mae(pred, true) -> float:
    """Return the mean absolute error."""
    pred, true = _pair(pred, true)
    return float(np.mean(np.abs(pred - true))) if true.size else float("nan")


def rmse(pred, true) -> float:
    """Return the root mean squared error."""
    pred, true = _pair(pred, true)
    return float(np.sqrt(np.mean((pred - true) ** 2))) if true.size else float("nan")


def mape(pred, true) -> float:
    """Return the mean absolute percentage error as a fraction; true values must be non-zero."""
    pred, true = _pair(pred, true)
    if (true == 0).any():
        raise ValueError("mape: true contains zeros; use masked_mape for data where 0 means missing")
    return float(np.mean(np.abs(pred - true) / np.abs(true))) if true.size else float("nan")


def bad_rate(pred, true, threshold: float = 0.2) -> float:
    """Return the share of predictions whose absolute error exceeds ``threshold`` times the true value."""
    pred, true = _pair(pred, true)
    return float(np.mean(np.abs(pred - true) > threshold * np.abs(true))) if true.size else float("nan")


def eta_metrics(pred, true, threshold: float = 0.2) -> dict[str, float]:
    """Return MAE (s), RMSE (s), MAPE and bad-ETA rate of predicted vs true travel times, and the count."""
    pred, true = _pair(pred, true)
    return {
        "mae": mae(pred, true),
        "rmse": rmse(pred, true),
        "mape": mape(pred, true),
        "bad_rate": bad_rate(pred, true, threshold),
        "count": int(true.size),
    }


def _valid(true: np.ndarray, null_val: float, mask) -> np.ndarray:
    valid = ~np.isnan(true) if np.isnan(null_val) else (true != null_val) & ~np.isnan(true)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != true.shape:
            raise ValueError(
                f"mask has shape {list(mask.shape)}, true has {list(true.shape)}; they must match"
            )
        valid &= mask
    return valid


def masked_mae(pred, true, null_val: float = 0.0, mask=None) -> float:
    """Return the MAE over entries where ``true != null_val`` (and ``mask``, if given); NaN if none."""
    pred, true = _pair(pred, true)
    v = _valid(true, null_val, mask)
    return float(np.mean(np.abs(pred[v] - true[v]))) if v.any() else float("nan")


def masked_rmse(pred, true, null_val: float = 0.0, mask=None) -> float:
    """Return the RMSE over entries where ``true != null_val`` (and ``mask``, if given); NaN if none."""
    pred, true = _pair(pred, true)
    v = _valid(true, null_val, mask)
    return float(np.sqrt(np.mean((pred[v] - true[v]) ** 2))) if v.any() else float("nan")


def masked_mape(pred, true, null_val: float = 0.0, mask=None) -> float:
    """Return the MAPE (fraction) over entries where ``true != null_val`` and ``true != 0``; NaN if none."""
    pred, true = _pair(pred, true)
    v = _valid(true, null_val, mask) & (true != 0)
    return float(np.mean(np.abs(pred[v] - true[v]) / np.abs(true[v]))) if v.any() else float("nan")


def masked_metrics(pred, true, null_val: float = 0.0, mask=None) -> dict[str, float]:
    """Return masked MAE, RMSE and MAPE (the METR-LA / PEMS-BAY protocol) and the number of valid entries."""
    pred, true = _pair(pred, true)
    return {
        "mae": masked_mae(pred, true, null_val, mask),
        "rmse": masked_rmse(pred, true, null_val, mask),
        "mape": masked_mape(pred, true, null_val, mask),
        "count": int(_valid(true, null_val, mask).sum()),
    }
