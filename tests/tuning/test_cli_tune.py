"""`stemreg tune` end to end: bad input, two workers on one PostgreSQL study, a killed worker resumed,
--trials counted over the whole study, a lab's high-dose targets."""
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
             "--patch-px", "16", "--batch-size", "2", "--no-register", "--no-progress", "--min-receptive-cells", "0",
             "--no-distill"]


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
    (["--condition", CONDITION, "--trials", "1", "--storage", ""], "non-empty"),  # never optuna.db silently
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
    # Both ask for a study of 6 finished trials: together they run 6 (7 when both are in a trial as the 6th ends).
    workers = [_tune_process("--trials", "6", "--seed", str(i), *args, env=_env(mlflow_store)) for i in range(2)]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-2000:]
    reports = [json.loads(out)["study"] for out, _ in outputs]

    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    numbers = [t.number for t in trials]
    assert len(trials) in (6, 7) and sorted(numbers) == list(range(len(trials)))  # none lost, none duplicated
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sum(r["n_trials_done"] for r in reports) == len(trials)
    assert all(r["n_trials_finished"] >= 6 for r in reports)
    client = MlflowClient(mlflow_store)
    trial_runs = client.search_runs([client.get_experiment_by_name("stemreg").experiment_id],
                                    filter_string="tags.`optuna.study` = 'shared' and tags.`stemreg.role` = 'trial'")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == list(range(len(trials)))
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} <= {r["parent_run_id"] for r in reports}


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

    rerun = _tune_process("--trials", "3", *common, "--json", env=env)  # the same command again
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err[-2000:]
    assert json.loads(out)["study"]["n_trials_done"] == 3 - killed.number  # only the missing ones

    trials = optuna.load_study(study_name="resumable", storage=storage).trials
    assert len(trials) == 3 + 1  # three finished (the killed one retried) and the killed one, failed
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == killed.params
    assert all(t.state != TrialState.RUNNING for t in trials)
    # MLflow too: the killed worker's study run and trial run were closed (FAILED) by the rerun.
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("stemreg").experiment_id])
    assert {r.data.tags.get("stemreg.role") for r in runs} >= {"study", "trial"}
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


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


def test_three_tiny_distilled_trials_under_the_receptive_field_rule_register_a_multiscale_student(mlflow_store,
                                                                                                     tmp_path):
    # Nothing registered: the students learn from the shipped pretrained base. The receptive-field rule
    # (2 unit cells at the finest sampling) is on, and the points tried first must pass it; the summary
    # must describe multi-scale members (it used to die on KeyError 'depth').
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # low-dose's physics with a benchmark of 3 small images, so that registering a student costs little
    condition = tmp_path / "tiny-bench.yaml"
    condition.write_text("name: tiny-bench\nimage_size_px: 64\nbenchmark_spacings_px: [8, 16]\n"
                         "benchmark_doses: [1.0]\nbenchmark_per_bin: 1\n")
    args = [a for a in TINY_ARGS if a not in ("--no-register", "--min-receptive-cells", "0", "--no-distill")]
    result = CliRunner().invoke(main, ["tune", "--condition", str(condition), "--trials", "3", "--storage", storage,
                                       *args])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "PSNR dB  ms/Mpx  kFLOP/px  field px" in out
    assert "3 levels, widths 32-64-128" in out and "4 levels, widths 24-48-96-128" in out
    assert "teacher pretrained:low-dose-base" in out
    assert "registered models:/stem-denoiser-tiny-bench/1" in out
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert len(study.trials[0].values) == 2  # benchmark PSNR and ms per megapixel
    version = MlflowClient(mlflow_store).get_model_version("stem-denoiser-tiny-bench", "1")
    assert version.tags["teacher"] == "pretrained:low-dose-base" and version.tags["student.role"]


def test_unresolvable_base_model_is_refused_before_the_search(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [a for a in TINY_ARGS if a != "--no-register"]
    result = CliRunner().invoke(main, ["tune", "--condition", CONDITION, "--trials", "1", "--storage", storage,
                                       "--from", "models:/stem-denoiser-nothing/1", *args])
    assert result.exit_code == 2, result.output
    assert "--from" in result.output
    assert not (tmp_path / "optuna.db").exists()  # no study was started


def _tune(storage: str, trials: int, *extra: str):
    result = CliRunner().invoke(main, ["tune", "--condition", CONDITION, "--trials", str(trials), "--storage", storage,
                                       "--study", "counted", "--json", *TINY_ARGS, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["study"], result.stderr


def _finished(storage: str, study: str) -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_trials_count_the_studys_finished_trials_so_a_rerun_runs_only_the_missing(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first, _ = _tune(storage, 2)
    assert first["n_trials_done"] == 2 and first["n_trials_finished"] == 2

    second, err = _tune(storage, 3)  # e.g. the same search rerun with a larger --trials, or after a kill
    assert "holds 2 finished trial(s): 1 more to reach --trials 3" in err
    assert second["n_trials_done"] == 1 and second["n_trials_finished"] == 3
    assert len(_finished(storage, "counted")) == 3

    third, err = _tune(storage, 3)  # nothing missing: no new trial, the study's best is reported
    assert "already holds 3 finished trial(s) (--trials 3): no new trial" in err
    assert third["n_trials_done"] == 0 and third["n_trials_finished"] == 3
    assert third["best_trial_number"] == second["best_trial_number"]
    assert len(optuna.load_study(study_name="counted", storage=storage).trials) == 3


def _lattice(shape=(48, 48), period=4.0):
    import numpy as np

    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return 1000 + 800 * (np.cos(xx / period) * np.cos(yy / period)) ** 8


def test_tune_trains_on_a_labs_high_dose_targets_and_records_them(mlflow_store, tmp_path):
    from stemreg.acquisition import Calibration, write_image

    targets = tmp_path / "highdose"
    write_image(targets / "sto_a.tif", _lattice(), Calibration(12.0, "pm"))
    write_image(targets / "sto_b.npy", _lattice(period=3.0))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study, _ = _tune(storage, 1, "--targets", str(targets), "--target-fraction", "0.75")
    assert study["n_trials_done"] == 1

    client = MlflowClient(mlflow_store)
    parent = client.get_run(study["parent_run_id"])
    assert json.loads(parent.data.tags["lab_targets"]) == ["sto_a.tif", "sto_b.npy"]
    assert parent.data.tags["training_data"] == "simulated+lab-targets"
    assert parent.data.tags["lab_target_fraction"] == "0.75"
    assert parent.data.params["n_targets"] == "2"
    assert "lab_targets.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert _finished(storage, "counted")


@pytest.mark.parametrize("make, reason", [
    (lambda d: None, "no image files"),
    (lambda d: (d / "broken.npy").write_bytes(b"not an array"), "broken.npy: is not a readable NPY image"),
])
def test_bad_targets_exit_2_in_one_line_and_leave_the_stores_alone(mlflow_store, tmp_path, make, reason):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kept = optuna.create_study(storage=storage, study_name="counted", direction="maximize")
    kept.add_trial(optuna.trial.create_trial(params={"x": 1.0}, value=20.0,
                                             distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    client = MlflowClient(mlflow_store)
    experiment = client.create_experiment("stemreg")
    client.create_run(experiment, run_name="earlier work")
    folder = tmp_path / "highdose"
    folder.mkdir()
    make(folder)

    result = CliRunner().invoke(main, ["tune", "--condition", CONDITION, "--trials", "2", "--storage", storage,
                                       "--study", "counted", "--targets", str(folder), *TINY_ARGS])
    assert result.exit_code == 2, result.output
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("Error:")]
    assert "--targets" in line and reason in line
    assert len(optuna.load_study(study_name="counted", storage=storage).trials) == 1
    assert [r.info.run_name for r in client.search_runs([experiment])] == ["earlier work"]
