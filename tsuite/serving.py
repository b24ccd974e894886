"""The MLflow pyfunc model shared by every tsuite model family.

It rebuilds the Lightning module from the logged weights (class path,
hyperparameters, state dict; loaded with ``weights_only=True``) and answers
``predict(df)`` with the module's :meth:`~tsuite.module.TsuiteModule.predict_frame`.

Bad input (:class:`~tsuite.tables.InputError`) leaves ``predict`` as an
``MlflowException`` with error code ``INVALID_PARAMETER_VALUE``, which
``mlflow models serve`` answers with HTTP 400 and the message itself (any
other exception would become a 400 with only a generic message).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from tsuite.tables import InputError


class TsuitePyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict(df, params)`` → ``module.predict_frame(df, **params)``."""

    def load_context(self, context: Any) -> None:
        from tsuite.tracking import load_weights

        self.model = load_weights(context.artifacts["weights"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        try:
            return self.model.predict_frame(model_input, **(params or {}))
        except InputError as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from err
