"""Runs never left RUNNING: a killed process's run is marked FAILED at the next start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

SCRIPT = """
import sys, time, mlflow
from stemreg.platform.store import configure
configure()
run = mlflow.start_run()
print(run.info.run_id, flush=True)
time.sleep(120)
"""


def _started(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip(), env


def test_a_killed_process_run_is_marked_failed_at_the_next_start(tmp_path, monkeypatch):
    import mlflow

    from stemreg.platform.store import configure

    proc, run_id, env = _started(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.chdir(tmp_path)
    try:
        assert mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status == "RUNNING"
        configure()
        assert mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status == "FAILED"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_sigterm_ends_the_run_failed(tmp_path):
    import mlflow

    proc, run_id, env = _started(tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline and status != "FAILED":
        status = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status
        time.sleep(0.2)
    assert status == "FAILED"
