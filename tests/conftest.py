"""Shared fixtures: every test that tracks runs gets its own working directory and sqlite MLflow store."""

from __future__ import annotations

import logging
import warnings

import pytest

warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


@pytest.fixture
def mlflow_home(tmp_path, monkeypatch):
    """Run inside ``tmp_path`` with ``MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db``."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield tmp_path
