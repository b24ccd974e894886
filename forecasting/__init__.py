"""Forecasting: AR-Net (and the state-space and attention forecasters), series data, metrics, batch forecasts."""

from tsuite.forecasting.arnet import ARNet
from tsuite.forecasting.base import WindowForecaster
from tsuite.forecasting.metrics import MeanAbsoluteScaledError, stpe
from tsuite.forecasting.series_data import SeriesDataModule
from tsuite.forecasting.sources import ARProcess, load_series, statsmodels_series
from tsuite.forecasting.validation import validate_series

__all__ = [
    "ARNet",
    "ARProcess",
    "MeanAbsoluteScaledError",
    "SeriesDataModule",
    "WindowForecaster",
    "load_series",
    "statsmodels_series",
    "stpe",
    "validate_series",
]
