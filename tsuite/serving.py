"""The MLflow pyfunc model shared by every tsuite model family.

It rebuilds the Lightning module from the logged weights (class path,
hyperparameters, state dict; loaded with ``weights_only=True``) and answers
``predict(df)`` with the module's :meth:`~tsuite.module.TsuiteModule.predict_frame`.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd


class TsuitePyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict(df, params)`` → ``module.predict_frame(df, **params)``."""

    def load_context(self, context: Any) -> None:
        from tsuite.tracking import load_weights

        self.model = load_weights(context.artifacts["weights"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.model.predict_frame(model_input, **(params or {}))
