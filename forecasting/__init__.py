"""Forecasting: AR-Net (and the state-space and attention forecasters), series data, metrics, batch forecasts."""

from tsuite.forecasting.aaren import AarenAttention, AarenEncoder, TransformerEncoder
from tsuite.forecasting.aaren_forecaster import AarenForecaster
from tsuite.forecasting.arnet import ARNet
from tsuite.forecasting.base import WindowForecaster
from tsuite.forecasting.event_data import EventDataModule, validate_events
from tsuite.forecasting.event_model import EventForecaster
from tsuite.forecasting.hawkes import HawkesProcess
from tsuite.forecasting.lssl import LSSLLayer
from tsuite.forecasting.metrics import MeanAbsoluteScaledError, stpe
from tsuite.forecasting.s4 import S4Layer
from tsuite.forecasting.s4d import S4DLayer
from tsuite.forecasting.sequence_data import AddingProblem, CopyingMemory, DelayTask, SequentialDigits, UCRSequences
from tsuite.forecasting.series_data import SeriesDataModule
from tsuite.forecasting.sources import ARProcess, load_series, statsmodels_series
from tsuite.forecasting.ssm_backbone import SSMBackbone
from tsuite.forecasting.ssm_models import ForecastStream, SSMForecaster, SSMSequenceModel
from tsuite.forecasting.validation import validate_series

__all__ = [
    "ARNet",
    "ARProcess",
    "AarenAttention",
    "AarenEncoder",
    "AarenForecaster",
    "AddingProblem",
    "CopyingMemory",
    "DelayTask",
    "EventDataModule",
    "EventForecaster",
    "ForecastStream",
    "HawkesProcess",
    "LSSLLayer",
    "MeanAbsoluteScaledError",
    "S4DLayer",
    "S4Layer",
    "SSMBackbone",
    "SSMForecaster",
    "SSMSequenceModel",
    "SequentialDigits",
    "SeriesDataModule",
    "TransformerEncoder",
    "UCRSequences",
    "WindowForecaster",
    "load_series",
    "statsmodels_series",
    "stpe",
    "validate_events",
    "validate_series",
]
