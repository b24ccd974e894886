"""The base Lightning module of every tsuite model.

A tsuite model is a ``LightningModule`` that can also answer a table: given a
pandas DataFrame in its family's input format (a long-format series table, an
event table, ...), :meth:`TsuiteModule.predict_frame` returns the prediction
table. The MLflow pyfunc wrapper (:mod:`tsuite.serving`) and the batch jobs
call only this method, so one code path serves ``tsuite forecast``,
``mlflow.pyfunc.load_model(...).predict(df)`` and ``mlflow models serve``.
"""

from __future__ import annotations

import abc
from typing import Any

import lightning.pytorch as pl
import pandas as pd

CLASS_PATH_KEY = "tsuite_class_path"


def class_path(obj: Any) -> str:
    """Importable dotted path of ``obj``'s class, e.g. ``tsuite.forecasting.ARNet``."""
    cls = type(obj)
    module = cls.__module__
    # Prefer the public package name (tsuite.forecasting.ARNet over tsuite.forecasting.arnet.ARNet)
    # when the package re-exports the class.
    package = module.rsplit(".", 1)[0]
    try:
        import importlib

        if getattr(importlib.import_module(package), cls.__name__, None) is cls:
            return f"{package}.{cls.__name__}"
    except ImportError:
        pass
    return f"{module}.{cls.__name__}"


class TsuiteModule(pl.LightningModule, abc.ABC):
    """Lightning module with a table-in, table-out prediction method for jobs and serving.

    Subclasses call ``self.save_hyperparameters()`` in ``__init__`` so that the
    model can be rebuilt from its class path and hyperparameters alone (that is
    what the MLflow model and the checkpoints store).
    """

    @abc.abstractmethod
    def predict_frame(self, df: pd.DataFrame, **params: Any) -> pd.DataFrame:
        """Predict from a table in the family's input format; return the prediction table."""

    def predict_params(self) -> dict[str, Any]:
        """Default values of the keyword parameters that :meth:`predict_frame` accepts (for the MLflow signature)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_PATH_KEY] = class_path(self)
