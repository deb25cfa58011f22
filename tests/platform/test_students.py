"""Distilled students in the registry: a search's front registered (challenger, fast) and the `fast`
alias served by `stemreg serve --alias fast` over real HTTP."""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from stemreg.tuning import TINY_BUDGET, run_study
from tests.platform.conftest import stop_server

CONDITION = "low-dose"
NAME = f"stem-denoiser-{CONDITION}"
#: The teacher: a tiny plain net (depth 4, widths 8-8-8); its student: the same, half as wide.
TEACHER_ARCH = {"kind": "reverse-hourglass", "depth": 4, "widths": [8, 8, 8], "kernel_size": 3}
STUDENT = {"levels": 1, "depth": 4, "base_width": 4, "growth": 1.0, "kernel_size": 3, "lr": 1e-5}


def _get(url: str, path: str) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _serve(alias: str, cwd) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(["stemreg", "serve", "--condition", CONDITION, "--alias", alias, "--port", "0",
                             "--poll-seconds", "0"], env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=cwd,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"stemreg serve --alias {alias} exited with {proc.returncode}")
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            return proc, found.group(0)
    pytest.fail("stemreg serve never said where it listens")


def test_the_front_is_registered_and_the_fast_student_is_served_by_alias(mlflow_store, tmp_path):
    import torch

    from stemreg.models import build_model
    from stemreg.platform.training.runs import log_and_register
    from stemreg.platform.training.students import register_front, teacher_for

    torch.manual_seed(0)
    log_and_register(build_model(TEACHER_ARCH), CONDITION, alias_policy="auto")  # the champion, scored
    teacher = teacher_for(CONDITION)
    assert teacher.uri == f"models:/{NAME}/1"
    # Both nets start at ~ the identity (residual, last layer ~0) and the student takes one tiny step:
    # it stays within 0.5 dB of the teacher, so it is the front's best and its fastest close member.
    budget = TINY_BUDGET.model_copy(update={"epochs": 1, "steps_per_epoch": 1, "latency_image_px": 32})
    result = run_study(CONDITION, n_trials=1, storage=f"sqlite:///{tmp_path / 'optuna.db'}", budget=budget,
                       objective="quality-latency", teacher=teacher, progress=False,
                       enqueue=[STUDENT])
    assert result.teacher_psnr is not None and result.trials[0]["run_id"]
    assert result.quality_trial == 0 and result.fast_trial == 0
    assert result.trials[0]["architecture"]["widths"] == [4, 4, 4] and not result.trials[0]["warm_start"]
    client = MlflowClient(mlflow_store)
    assert "plots/student_front.png" in {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}

    front = register_front(CONDITION, result)
    assert front["challenger"]["alias"] == "challenger" and front["fast"] is not None
    fast_version = front["fast"]["version"]
    assert str(client.get_model_version_by_alias(NAME, "fast").version) == str(fast_version)
    assert client.get_model_version(NAME, fast_version).tags["teacher"] == teacher.uri

    proc, url = _serve("fast", mlflow_store.removeprefix("sqlite:///").rsplit("/", 1)[0])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, info = _get(url, "/model")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200
        assert info["alias"] == "fast" and str(info["version"]) == str(fast_version)
    finally:
        stop_server(proc)
    assert np.isfinite(front["fast"]["benchmark"]["psnr"])
