"""optuna-dashboard on a real study in stemreg's storage: the study and its trials are found through its HTTP API.

The study is made the way `stemreg tune` makes it (`make_study`: stemreg's
RDB storage with heartbeat, its directions and pruner; trials drawn from its
search space, the architecture as a user attribute). The objective is a cheap
stand-in for training, so the test stays fast; the search itself is tested in
test_tuning_search.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest

from stemreg.tuning import Objective, make_study, suggest_architecture

pytest.importorskip("optuna_dashboard")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _stand_in_objective(trial: optuna.Trial) -> float:
    arch = suggest_architecture(trial)
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.set_user_attr("architecture", json.dumps(arch))
    trial.set_user_attr("mlflow_run_id", f"run-{trial.number}")
    return 20.0 + sum(arch["widths"]) / 100  # "val PSNR" that grows with width


def test_dashboard_lists_a_stemreg_study_and_its_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = make_study(storage_url=storage, study_name="dashboard-smoke", objective=Objective.QUALITY)
    study.optimize(_stand_in_objective, n_trials=3)

    command = shutil.which("optuna-dashboard")
    assert command, "optuna-dashboard is installed (extra 'dashboard') but its command is not on PATH"
    port = _free_port()
    log = tmp_path / "dashboard.log"
    proc = subprocess.Popen([command, storage, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"optuna-dashboard exited:\n{log.read_text()}"
            try:
                studies = _get_json(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, f"optuna-dashboard did not answer:\n{log.read_text()}"
                time.sleep(0.3)
        [summary] = [s for s in studies if s["study_name"] == "dashboard-smoke"]
        assert summary["directions"] == ["maximize"]

        detail = _get_json(f"{base}/api/studies/{summary['study_id']}")
        trials = detail["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2]
        assert all(t["state"] == "Complete" for t in trials)
        # What a microscopist looks for: each trial's architecture and the MLflow run beside it.
        attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
        assert "reverse-hourglass" in attrs["architecture"] and attrs["mlflow_run_id"]
        assert {p["name"] for p in trials[0]["params"]} >= {"levels", "base_width", "lr"}
        best = detail["best_trials"][0]
        assert best["number"] == study.best_trial.number
        assert best["values"][0] == pytest.approx(study.best_value)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
