"""MLflow "model from code" entry: logged with every tsuite model, it names the pyfunc class to load."""

import mlflow

from tsuite.serving import TsuitePyfunc

mlflow.models.set_model(TsuitePyfunc())
