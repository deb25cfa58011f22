"""A lab's shared deployment, for real: `mlflow server` on PostgreSQL with proxied artifacts.

One `mlflow server` per module, on a fresh PostgreSQL database, with its
artifacts in a folder only the server writes (`--artifacts-destination`,
`--serve-artifacts`). Every `stemreg` command runs as a user would run it:
a subprocess in a second, empty working directory whose only link to the
server is `MLFLOW_TRACKING_URI=http://127.0.0.1:PORT`; the Optuna study lives
in a second fresh database on the same PostgreSQL.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.platform.conftest import stop_server

pytestmark = pytest.mark.postgres

ADMIN_URL = os.environ.get("STEMREG_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
CONDITION = "low-dose"
TINY_ARCH = json.dumps({"kind": "reverse-hourglass", "depth": 4, "widths": [8, 16, 8], "kernel_size": 3})
#: `stemreg train` in a few seconds.
TRAIN_FLAGS = ["--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "2", "--patch-px", "32",
               "--n-train", "2", "--n-val", "1", "--arch", TINY_ARCH]
#: One trial per worker and a one-epoch retrain, a few seconds each.
TUNE_FLAGS = ["--trials", "1", "--epochs", "1", "--steps", "2", "--n-train", "2", "--n-val", "1",
              "--image-px", "48", "--patch-px", "32", "--batch-size", "2", "--retrain-epochs", "1",
              "--no-progress", "--json", "--min-receptive-cells", "0"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, *, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        stop_server(proc, signal.SIGTERM)  # mlflow server's gunicorn stops on SIGTERM


class _Databases:
    """Fresh PostgreSQL databases for one test module, dropped afterwards."""

    def __init__(self):
        import sqlalchemy

        self._sqlalchemy = sqlalchemy
        self.engine = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def create(self, label: str) -> str:
        name = f"stemreg_{label}_{uuid.uuid4().hex[:8]}"
        with self.engine.connect() as conn:
            conn.execute(self._sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def drop_all(self) -> None:
        text = self._sqlalchemy.text
        with self.engine.connect() as conn:
            for name in self.names:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        self.engine.dispose()


class Lab:
    """The running tracking server and a workstation's empty working directory."""

    def __init__(self, url: str, study_storage: str, artifacts: Path, workdir: Path):
        self.url, self.study_storage, self.artifacts, self.workdir = url, study_storage, artifacts, workdir
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MLFLOW_") and k != "STEMREG_OPTUNA_STORAGE"}
        env.update(MLFLOW_TRACKING_URI=url, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.env = env

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen(["stemreg", *args], cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                stderr=log.open("w"), text=True, start_new_session=True)

    def run(self, *args: str) -> dict:
        """`stemreg ARGS --json` in the workstation's directory; its JSON answer."""
        proc = subprocess.run(["stemreg", *args, *([] if "--json" in args else ["--json"])],
                              cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"stemreg {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
        return json.loads(proc.stdout)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`mlflow server` on a fresh PostgreSQL database with proxied artifacts; an empty workstation dir."""
    pytest.importorskip("psycopg2")
    try:
        dbs = _Databases()
        backend = dbs.create("mlflow")
        study_storage = dbs.create("optuna")
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL}: {exc}")
    root = tmp_path_factory.mktemp("lab")
    server_dir, artifacts, workdir = root / "server", root / "artifacts", root / "workstation"
    for folder in (server_dir, artifacts, workdir):
        folder.mkdir()
    port = _free_port()
    log = root / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
         "--artifacts-destination", str(artifacts), "--serve-artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=server_dir, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, timeout_s=90, log=log)
        yield Lab(f"http://127.0.0.1:{port}", study_storage, artifacts, workdir)
    finally:
        _stop(server)
        dbs.drop_all()


@pytest.fixture(scope="module")
def trained(lab) -> dict:
    """`stemreg train --condition low-dose` through the server: the first version, champion."""
    return lab.run("train", "--condition", CONDITION, *TRAIN_FLAGS)


@pytest.fixture(scope="module")
def tuned(lab, trained) -> list[dict]:
    """Two `stemreg tune` workers at once on one study in PostgreSQL; each registers its best."""
    # --trials counts the study's finished trials, all workers' together: both ask for 2.
    flags = [("2" if previous == "--trials" else flag) for previous, flag in zip([None, *TUNE_FLAGS], TUNE_FLAGS)]
    args = ["tune", "--condition", CONDITION, "--storage", lab.study_storage, "--study", "lab-study", *flags]
    logs = [lab.workdir.parent / f"tune-{i}.log" for i in range(2)]
    workers = [lab.popen(*args, "--seed", str(i), log=logs[i]) for i in range(2)]
    outputs = []
    for worker, log in zip(workers, logs):
        out, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, f"tune worker failed:\n{log.read_text()[-4000:]}"
        outputs.append(json.loads(out))
    return outputs


def test_train_registers_through_the_server_and_leaves_the_workstation_clean(lab, trained):
    assert trained["version"] == "1" and trained["alias"] == "champion"
    assert trained["benchmark"]["psnr"] > 0
    client = lab.client()
    version = client.get_model_version(f"stem-denoiser-{CONDITION}", "1")
    # The version points at the logged model (MLflow 3), which the server knows came from our run.
    assert version.source.startswith("models:/m-")
    assert client.get_logged_model(version.source[len("models:/"):]).source_run_id == trained["run_id"]
    assert version.tags["condition"] == CONDITION and "benchmark.psnr" in version.tags
    # Artifacts went through the server's proxy into its destination, not into this directory.
    run = client.get_run(trained["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(lab.artifacts.rglob("weights.pt")), "the model's weights are not in the server's artifact store"
    assert not list(lab.workdir.glob("mlflow.db")) and not (lab.workdir / "mlruns").exists()


def test_two_tune_workers_share_one_postgres_study_and_register_their_best(lab, tuned):
    import optuna

    study = optuna.load_study(study_name="lab-study", storage=lab.study_storage)
    # The study holds the 2 finished trials both asked for (3 when both started their last one at once), numbered
    # apart by the database. Finished = complete or pruned (what --trials counts): which worker's trial the
    # median rule prunes is a race of the two processes' timing.
    # Each worker queues the points tried first (the seed's default, a pruned copy of the teacher); two
    # workers starting at once can both queue them, and what neither reached stays WAITING for the next
    # worker: never RUNNING or FAILED.
    TrialState = optuna.trial.TrialState
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(finished) in (2, 3) and len(finished) + len(waiting) == len(study.trials)
    assert sorted(t.number for t in finished) == list(range(len(finished)))
    assert any(t.state == TrialState.COMPLETE for t in finished)
    versions = sorted(int(out["registered"]["version"]) for out in tuned)
    # the registry numbered the two concurrent registrations apart (each worker may also register its
    # `fast` student, which takes a number in between)
    assert len(set(versions)) == 2 and versions[0] >= 2
    assert all(out["registered"]["alias"] == "challenger" for out in tuned)
    assert not (lab.workdir / "optuna.db").exists()


def test_promote_and_rollback_move_the_champion_on_the_server(lab, tuned):
    name = f"stem-denoiser-{CONDITION}"
    promoted = lab.run("promote", "--condition", CONDITION, "--force", "--reason", "lab test")
    challenger = lab.client().get_model_version_by_alias(name, "champion").version
    assert promoted["promoted"] and promoted["from_version"] == "1" and promoted["to_version"] == challenger
    rolled = lab.run("rollback", "--condition", CONDITION, "--reason", "back")
    assert rolled["to_version"] == "1" and rolled["from_version"] == challenger
    assert lab.client().get_model_version_by_alias(name, "champion").version == "1"
    history = json.loads(lab.client().get_model_version(name, "1").tags["promotion.history"])
    assert [entry["kind"] for entry in history][-1] == "rollback"


def test_evaluate_scores_the_registered_champion_and_logs_to_the_server(lab, trained):
    report = lab.run("evaluate", "--condition", CONDITION, "--methods", "hourglass,gaussian", "--budget", "tiny")
    methods = {row["method"]: row for row in report["rows"]}
    assert {"noisy", "hourglass", "gaussian"} <= set(methods)
    assert methods["hourglass"]["psnr"] > 0
    run = lab.client().get_run(report["run_id"])
    assert run.info.status == "FINISHED"


def _noisy_scan(path: Path) -> np.ndarray:
    from stemreg.acquisition import Calibration, get_condition, write_image

    noisy = get_condition(CONDITION).sample_pairs(1, size_px=64, seed=5).degraded[0]
    write_image(path, noisy, Calibration(pixel_size=12.5, unit="pm"))
    return noisy


def test_denoise_and_serve_use_the_champion_from_the_server(lab, trained):
    from stemreg.acquisition import read_image

    scan = lab.workdir / "scan.tif"
    noisy = _noisy_scan(scan)
    result = lab.run("denoise", str(scan), "--condition", CONDITION, "-o", str(lab.workdir / "denoised"))
    champion = lab.client().get_model_version_by_alias(f"stem-denoiser-{CONDITION}", "champion").version
    assert result["version"] == champion
    written = read_image(lab.workdir / "denoised" / "scan.tif")
    assert written.data.shape == noisy.shape and not np.allclose(written.data, noisy)
    assert written.calibration.pixel_size == pytest.approx(12.5)

    port = _free_port()
    log = lab.workdir.parent / "serve.log"
    server = lab.popen("serve", "--condition", CONDITION, "--port", str(port), "--poll-seconds", "0", log=log)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, timeout_s=90, log=log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/model", timeout=10) as response:
            assert json.load(response)["version"] == champion
        request = urllib.request.Request(f"http://127.0.0.1:{port}/denoise", data=scan.read_bytes(),
                                         headers={"Content-Type": "image/tiff"}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            served = response.read()
    finally:
        _stop(server)
    served_path = lab.workdir / "served.tif"
    served_path.write_bytes(served)
    # The server and the CLI run the same registered version: the same image comes back.
    np.testing.assert_allclose(read_image(served_path).data, written.data, rtol=1e-5, atol=1e-5)
