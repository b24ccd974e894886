"""Fixtures of the operations tests: a real `mlflow server` on a free loopback port, and a model fitted and
registered through it (both shared by the tests of this folder, torn down after them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUNSPOTS = str(REPO / "configs/forecasting/arnet_sunspots.yaml")
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
STARTUP_TIMEOUT_S = 180  # a cold `mlflow server` on a busy 2-core machine took 45 s here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def background(cmd: list[str], log: Path, env: dict[str, str] | None = None):
    """Run ``cmd`` in its own process group; always end that group (SIGTERM, then SIGKILL) on exit.

    The interpreter's ``bin`` folder goes first on ``PATH``: ``mlflow models serve`` starts ``uvicorn``
    by name, which a virtual environment that is not activated (as in CI) would not find.
    """
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield proc
        finally:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = STARTUP_TIMEOUT_S) -> float:
    """Poll ``url`` until it answers 200; fail if the process exits or ``timeout`` passes. Returns seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="package")
def tracking_server(tmp_path_factory):
    """A real `mlflow server`: sqlite backend and proxied artifacts in a temporary folder, 127.0.0.1 only."""
    home = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
           "--artifacts-destination", str(home / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with background(cmd, home / "server.log") as proc:
        uri = f"http://127.0.0.1:{port}"
        waited = wait_until_up(f"{uri}/health", proc, home / "server.log")
        print(f"mlflow server up after {waited:.1f} s")
        yield {"uri": uri, "home": home}


@pytest.fixture(scope="package")
def registered(tracking_server, tmp_path_factory):
    """`tsuite fit` of AR-Net on sunspots (2 epochs) tracked on the server and registered as sun@champion."""
    import mlflow

    from tsuite.cli import main

    work = tmp_path_factory.mktemp("fit_against_server")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", tracking_server["uri"])
        mlflow.set_tracking_uri(tracking_server["uri"])
        code = main(["fit", "--config", SUNSPOTS, "--trainer.enable_progress_bar", "false",
                     "--trainer.max_epochs", "2", "--register", "sun", "--alias", "champion"])
    assert code == 0
    return {**tracking_server, "name": "sun", "work": work}
