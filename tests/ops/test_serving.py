"""`mlflow models serve` of the registered AR-Net answers POST /invocations with forecasts, and malformed
input with HTTP 400 and a message that says what was wrong (never a 500)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from tests.ops.conftest import MLFLOW, background, free_port, wait_until_up


@pytest.fixture(scope="module")
def scoring_server(registered, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"]}
    cmd = [MLFLOW, "models", "serve", "-m", "models:/sun@champion", "--env-manager", "local",
           "-p", str(port), "-h", "127.0.0.1", "-w", "1"]
    with background(cmd, log, env) as proc:
        waited = wait_until_up(f"http://127.0.0.1:{port}/ping", proc, log)
        print(f"mlflow models serve up after {waited:.1f} s")
        yield f"http://127.0.0.1:{port}/invocations"


def post(url: str, frame: pd.DataFrame | dict, params: dict | None = None) -> tuple[int, dict]:
    split = frame if isinstance(frame, dict) else json.loads(frame.to_json(orient="split", index=False))
    body = {"dataframe_split": split, **({"params": params} if params else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def history() -> pd.DataFrame:
    from tsuite.forecasting import statsmodels_series

    return statsmodels_series("sunspots").tail(60).reset_index(drop=True)


def test_invocations_answer_forecasts_equal_to_the_pyfunc_model(scoring_server, registered, monkeypatch):
    import mlflow

    status, body = post(scoring_server, history(), params={"horizon": 3})
    assert status == 200
    served = pd.DataFrame(body["predictions"])
    assert list(served.columns) == ["unique_id", "ds", "ARNet"] and served["ds"].tolist() == [2009, 2010, 2011]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    local = mlflow.pyfunc.load_model("models:/sun@champion").predict(history(), params={"horizon": 3})
    np.testing.assert_allclose(served["ARNet"].to_numpy(), local["ARNet"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_columns", "Model is missing inputs ['y']"),  # MLflow's schema check
        ("text_y", "Failed to convert column y to type 'float64'"),
        ("empty_table", "the table has no rows"),  # the rest: tsuite's InputError, passed through
        ("nan_y", "y is missing (NaN)"),
        ("too_short", "at least 24 are needed"),
        ("duplicate_ds", "duplicate (unique_id, ds)"),
    ],
)
def test_malformed_input_gets_400_with_a_readable_message(scoring_server, case, expected):
    good = history()
    frames = {
        "wrong_columns": good.rename(columns={"y": "value"}),
        "text_y": {"columns": ["unique_id", "ds", "y"], "data": [["s", i, "high"] for i in range(30)]},
        "empty_table": {"columns": ["unique_id", "ds", "y"], "data": []},
        "nan_y": good.assign(y=good["y"].where(good.index != 40)),
        "too_short": good.tail(5),
        "duplicate_ds": pd.concat([good, good.tail(1)], ignore_index=True),
    }
    status, body = post(scoring_server, frames[case])
    assert status == 400, body
    assert body["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert expected in body["message"], body["message"][:500]
