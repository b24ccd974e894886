"""Classical baselines that AR-Net is compared with: least-squares AR (statsmodels ``AutoReg``) and seasonal naive."""

from __future__ import annotations

import numpy as np


def least_squares_ar(y: np.ndarray, n_lags: int, trend: str = "c") -> np.ndarray:
    """AR(n_lags) coefficients of ``y`` by ordinary least squares (statsmodels ``AutoReg``), lag 1 first."""
    from statsmodels.tsa.ar_model import AutoReg

    fit = AutoReg(np.asarray(y, dtype=np.float64), lags=n_lags, trend=trend).fit()
    return np.asarray(fit.params[-n_lags:] if trend != "n" else fit.params, dtype=np.float64)


def least_squares_forecast(train: np.ndarray, n_lags: int, history: np.ndarray, horizon: int) -> np.ndarray:
    """Fit AutoReg on ``train`` and forecast ``horizon`` steps after ``history`` (recursively)."""
    from statsmodels.tsa.ar_model import AutoReg

    fit = AutoReg(np.asarray(train, dtype=np.float64), lags=n_lags, trend="c").fit()
    const, coefs = fit.params[0], fit.params[1:]
    window = list(np.asarray(history, dtype=np.float64)[-n_lags:])
    out = []
    for _ in range(horizon):
        nxt = const + float(np.dot(coefs, window[::-1][:n_lags]))
        out.append(nxt)
        window.append(nxt)
    return np.asarray(out)


def seasonal_naive(history: np.ndarray, horizon: int, season_length: int = 1) -> np.ndarray:
    """Repeat the last season: ŷ_{T+h} = y_{T+h−m·⌈h/m⌉}."""
    history = np.asarray(history, dtype=np.float64)
    if len(history) < season_length:
        raise ValueError(f"seasonal naive needs {season_length} past values, got {len(history)}")
    last = history[-season_length:]
    return np.resize(last, horizon) if season_length > 1 else np.full(horizon, history[-1])
