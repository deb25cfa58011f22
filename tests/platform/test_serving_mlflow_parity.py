"""Acceptance: `mlflow models serve` and `stemreg serve` answer /invocations with the same array.

Both servers run for real: MLflow's scoring server as a subprocess (its own
process group, killed afterwards) against the registered champion's store,
and stemreg's on a free localhost port in this process.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

MODEL_URI = "models:/stem-denoiser-low-dose@champion"
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_for_ping(port: int, proc: subprocess.Popen | None, log_path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if _request(port, "GET", "/ping", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    tail = log_path.read_text()[-3000:] if log_path else ""
    pytest.fail(f"no 200 from /ping on port {port} within {timeout_s} s:\n{tail}")


@pytest.fixture(scope="module")
def mlflow_scoring_server(registered_low_dose, tmp_path_factory):
    """`mlflow models serve` on the fixture's champion, in its own process group."""
    log_path = tmp_path_factory.mktemp("mlflow-serve") / "server.log"
    port = _free_port()
    # MLflow starts `uvicorn` from PATH; make it this interpreter's, so the server imports the same
    # stemreg (the loader_module) as the tests do, not another installation's.
    shim = tmp_path_factory.mktemp("uvicorn-shim")
    (shim / "uvicorn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    (shim / "uvicorn").chmod(0o755)
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_low_dose.tracking_uri,
           "MLFLOW_REGISTRY_URI": registered_low_dose.tracking_uri,
           "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_ping(port, proc, log_path, START_TIMEOUT_S)
        yield port
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def stemreg_server(registered_low_dose):
    from stemreg.platform.serving import make_server

    srv = make_server("low-dose", alias="champion", port=0, poll_seconds=0,
                      tracking_uri=registered_low_dose.tracking_uri).start_background()
    _wait_for_ping(srv.port, None, None, START_TIMEOUT_S)
    yield srv
    srv.stop()
    import mlflow

    mlflow.set_tracking_uri(None)  # the server pointed MLflow's globals at the fixture's store
    mlflow.set_registry_uri(None)


def _noisy(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.poisson(25.0, size=shape) / 25.0).astype(np.float32)


@pytest.mark.parametrize("key, shape", [("inputs", (1, 40, 40)), ("instances", (2, 24, 24)),
                                        ("inputs", (1, 300, 280))])  # > one 256 px tile
def test_stemreg_serve_answers_like_mlflow_models_serve(mlflow_scoring_server, stemreg_server,
                                                        registered_low_dose, key, shape):
    body = json.dumps({key: _noisy(shape, seed=sum(shape)).tolist()}).encode()
    mlflow_status, mlflow_body = _request(mlflow_scoring_server, "POST", "/invocations", body)
    ours_status, ours_body = _request(stemreg_server.port, "POST", "/invocations", body)
    assert mlflow_status == 200, mlflow_body[:500]
    assert ours_status == 200, ours_body[:500]
    theirs = json.loads(mlflow_body)
    ours = json.loads(ours_body)
    assert set(ours) == set(theirs) == {"predictions"}
    theirs_arr = np.asarray(theirs["predictions"], dtype=np.float64)
    ours_arr = np.asarray(ours["predictions"], dtype=np.float64)
    assert ours_arr.shape == theirs_arr.shape == shape
    np.testing.assert_allclose(ours_arr, theirs_arr, rtol=1e-6, atol=1e-6)
    # and the same model version behind both
    info = json.loads(_request(stemreg_server.port, "GET", "/model")[1])
    assert info["version"] == str(registered_low_dose.version)
