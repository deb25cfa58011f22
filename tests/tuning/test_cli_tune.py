"""`stemreg tune` end to end: bad input, two workers on one PostgreSQL study, a killed worker resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from stemreg.platform.cli import main

CONDITION = "low-dose"
#: Seconds per trial stay well under one on one core.
# Seconds per trial: 16-px patches cannot hold the unit cells the receptive-field rule asks for, so it is off.
TINY_ARGS = ["--epochs", "1", "--steps", "2", "--n-train", "2", "--n-val", "1", "--image-px", "32",
             "--patch-px", "16", "--batch-size", "2", "--no-register", "--no-progress", "--min-receptive-cells", "0"]


def _tune_process(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from stemreg.platform.cli import main; main()", "tune", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _env(mlflow_store: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, **extra}


def _prepare_mlflow(mlflow_store: str) -> None:
    # Workers started at once must not race to create MLflow's tables; a real team has a server.
    client = MlflowClient(mlflow_store)
    if client.get_experiment_by_name("stemreg") is None:
        client.create_experiment("stemreg")


@pytest.mark.parametrize("args, reason", [
    (["--condition", "no-such-condition", "--trials", "1"], "no-such-condition"),
    (["--condition", CONDITION, "--trials", "1", "--storage", "redis://localhost/0"], "--storage"),
    (["--condition", CONDITION, "--trials", "1", "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/x"],
     "cannot open study storage"),
])
def test_bad_input_exits_2_with_one_line_reason(mlflow_store, args, reason):
    result = CliRunner().invoke(main, ["tune", *args, *TINY_ARGS])
    assert result.exit_code == 2, result.output
    assert reason in result.output


@pytest.mark.postgres
def test_two_workers_share_one_postgres_study(mlflow_store, postgres_url):
    _prepare_mlflow(mlflow_store)
    args = ["--condition", CONDITION, "--storage", postgres_url, "--study", "shared", "--json", *TINY_ARGS]
    workers = [_tune_process("--trials", str(n), "--seed", str(i), *args, env=_env(mlflow_store))
               for i, n in enumerate((2, 3))]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-2000:]
    reports = [json.loads(out)["study"] for out, _ in outputs]

    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(5))  # none lost, none duplicated
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sorted(r["n_trials_done"] for r in reports) == [2, 3]
    client = MlflowClient(mlflow_store)
    trial_runs = client.search_runs([client.get_experiment_by_name("stemreg").experiment_id],
                                    filter_string="tags.`optuna.study` = 'shared' and tags.`stemreg.role` = 'trial'")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == list(range(5))
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {r["parent_run_id"] for r in reports}


def test_killed_worker_resumes_and_its_trial_is_retried(mlflow_store, tmp_path):
    _prepare_mlflow(mlflow_store)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = _env(mlflow_store, STEMREG_OPTUNA_HEARTBEAT_S="1")
    common = ["--condition", CONDITION, "--storage", storage, "--study", "resumable", *TINY_ARGS]
    # A long trial (many epochs), killed once it has reported its first epoch.
    slow = _tune_process("--trials", "3", *common, "--epochs", "400", env=env)
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        assert slow.poll() is None, slow.communicate()[1][-2000:]
        try:
            study = optuna.load_study(study_name="resumable", storage=storage)
        except KeyError:  # not created yet
            continue
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.intermediate_values]
    assert running, "the worker never got into a trial"
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=30)
    (killed,) = running
    time.sleep(2.5)  # the heartbeat (1 s) goes stale after twice its interval

    rerun = _tune_process("--trials", "2", *common, "--json", env=env)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err[-2000:]
    assert json.loads(out)["study"]["n_trials_done"] == 2

    trials = optuna.load_study(study_name="resumable", storage=storage).trials
    assert len(trials) == killed.number + 1 + 2  # the old trials remain, two new ones follow
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == killed.params
    assert all(t.state != TrialState.RUNNING for t in trials)


def test_tune_registers_the_best_as_challenger(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [a for a in TINY_ARGS if a != "--no-register"]
    result = CliRunner().invoke(main, ["tune", "--condition", CONDITION, "--trials", "2", "--storage", storage,
                                       "--retrain-epochs", "1", "--json", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    registered, study = report["registered"], report["study"]
    assert registered["alias"] == "challenger"
    assert registered["architecture"] == study["best_architecture"]

    client = MlflowClient(mlflow_store)
    version = client.get_model_version_by_alias(f"stem-denoiser-{CONDITION}", "challenger")
    assert str(version.version) == str(registered["version"])
    assert version.tags["optuna.study"] == study["study_name"]
    assert json.loads(version.tags["architecture"]) == study["best_architecture"]
    run = client.get_run(registered["run_id"])
    assert float(run.data.params["train.lr"]) == pytest.approx(study["best_lr"])


def test_unresolvable_base_model_is_refused_before_the_search(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [a for a in TINY_ARGS if a != "--no-register"]
    result = CliRunner().invoke(main, ["tune", "--condition", CONDITION, "--trials", "1", "--storage", storage,
                                       "--from", "models:/stem-denoiser-nothing/1", *args])
    assert result.exit_code == 2, result.output
    assert "--from" in result.output
    assert not (tmp_path / "optuna.db").exists()  # no study was started
