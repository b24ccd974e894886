"""MLflow tracking: where runs go, logging a trained model as a pyfunc MLflow Model, and the registry.

The tracking URI comes from ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``
in the working directory (MLflow's file store is deprecated and the registry
needs a database). A team server is the same code with
``MLFLOW_TRACKING_URI=http://host:5000``.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tsuite.module import TsuiteModule, class_path

MODEL_NAME = "model"  # name of the logged model inside a run: runs:/<run_id>/model
WEIGHTS_FILE = "weights.pt"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def tracking_uri() -> str:
    """The tracking URI: ``$MLFLOW_TRACKING_URI`` or an absolute ``sqlite:///<cwd>/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class TrackingServerUnreachable(RuntimeError):
    """The MLflow tracking server named by the tracking URI does not answer."""


def check_tracking_uri(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail early, with the URI in the message, when an HTTP tracking server cannot be reached."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user-given server
                if response.status >= 400:
                    raise TrackingServerUnreachable(f"MLflow tracking server {uri} answered {response.status} at {url}")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingServerUnreachable(
                f"cannot reach the MLflow tracking server at {uri} ({err}); start it, or unset "
                "MLFLOW_TRACKING_URI to track in sqlite:///mlflow.db"
            ) from err
    return uri


def save_weights(model: TsuiteModule, path: str | os.PathLike) -> Path:
    """Save what rebuilds ``model``: its class path, hyperparameters and state dict (loadable with weights_only=True)."""
    bundle = {
        "class_path": class_path(model),
        "hparams": _plain(dict(model.hparams)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(bundle, path)
    return Path(path)


def load_weights(path: str | os.PathLike) -> TsuiteModule:
    """Rebuild a model saved by :func:`save_weights` (or a tsuite Lightning checkpoint), in eval mode."""
    from tsuite.module import CLASS_PATH_KEY

    bundle = torch.load(path, map_location="cpu", weights_only=True)
    if "class_path" in bundle:
        cls_path, hparams, state = bundle["class_path"], bundle["hparams"], bundle["state_dict"]
    elif CLASS_PATH_KEY in bundle:  # a Lightning checkpoint written by a TsuiteModule
        cls_path, hparams, state = bundle[CLASS_PATH_KEY], bundle.get("hyper_parameters", {}), bundle["state_dict"]
    else:
        raise ValueError(f"{path}: not a tsuite model file or checkpoint (no class path stored in it)")
    cls = _import(cls_path)
    # LightningCLI adds private keys such as _class_path: pass only the constructor's arguments.
    model = cls(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    model.load_state_dict(state)
    return model.eval()


def log_model(
    model: TsuiteModule,
    input_example: pd.DataFrame,
    run_id: str,
    register_as: str | None = None,
    alias: str | None = None,
) -> str:
    """Log ``model`` to run ``run_id`` as an MLflow Model (pyfunc flavour, signature, input example).

    Returns the logged model's URI (``models:/m-…``); with ``register_as`` also
    registers it and, with ``alias``, points the alias at the new version.
    """
    import mlflow
    from mlflow.models import infer_signature

    import tsuite

    mlflow.set_tracking_uri(tracking_uri())
    model = model.eval()
    output = model.predict_frame(input_example)
    params = model.predict_params() or None
    signature = infer_signature(input_example, output, params=params)
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_weights(model, Path(tmp) / WEIGHTS_FILE)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(PYFUNC_CODE),
                artifacts={"weights": str(weights)},
                signature=signature,
                input_example=input_example,
                pip_requirements=[f"tsuite=={tsuite.__version__}", f"torch=={torch.__version__.split('+')[0]}"],
            )
    uri = info.model_uri  # models:/<logged model id>; runs:/<run_id>/model resolves to the same model
    if register_as:
        register(uri, register_as, alias)
    return uri


def register(source: str, name: str, alias: str | None = None) -> int:
    """Register ``source`` (a run ID, ``runs:/`` or ``models:/`` URI) as a new version of ``name``; set ``alias``."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    uri = source if ":" in source else f"runs:/{source}/{MODEL_NAME}"
    version = mlflow.register_model(uri, name)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def load_model(source: str) -> TsuiteModule:
    """Load a tsuite model from an MLflow model URI, a local MLflow model folder or a Lightning checkpoint."""
    path = Path(source)
    if path.suffix == ".ckpt" or path.suffix == ".pt":
        if not path.exists():
            raise FileNotFoundError(f"{source}: no such checkpoint file")
        return load_weights(path)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if path.exists() and not (path / "MLmodel").exists():
        raise ValueError(f"{source}: a folder without an MLmodel file; expected an MLflow model folder")
    pyfunc = mlflow.pyfunc.load_model(source)
    return pyfunc.unwrap_python_model().model


def _import(path: str) -> type:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    """Hyperparameters as plain Python containers (what torch.load(weights_only=True) accepts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"hyperparameter value {value!r} of type {type(value).__name__} cannot be stored; use plain types")
