"""Platform fixtures: a tiny low-dose model, really trained, logged and registered.

`registered_low_dose` (session-scoped) trains a small reverse hourglass for a
few seconds, logs it as a models-from-code pyfunc and registers it as
`stem-denoiser-low-dose` (alias `champion`) in a session temp store. Tests
that use it point MLflow at that store themselves::

    def test_x(registered_low_dose, monkeypatch):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_low_dose.tracking_uri)

Treat that store as read-only (other tests rely on version 1 being champion);
tests that register or promote use the function-scoped `mlflow_store`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

#: A small reverse hourglass: seconds to train on 2 CPU cores, clearly better than the noisy input.
TINY_ARCH = {"kind": "reverse-hourglass", "depth": 4, "widths": [8, 16, 8], "kernel_size": 3}
#: A few seconds of training.
TINY_TRAIN = {"epochs": 2, "steps_per_epoch": 15, "batch_size": 4, "patch_px": 32, "lr": 3e-3}
TINY_DATA = {"n_train": 4, "n_val": 2, "size_px": 96}
#: A condition YAML with a 2-image benchmark (one spacing, two doses): evaluation tests in seconds.
TINY_CONDITION = """\
name: {name}
description: a tiny condition for tests
image_size_px: 48
benchmark_per_bin: 1
benchmark_spacings_px: [16]
benchmark_doses: [1.0, 4.0]
beam_current_pA: {current}
dwell_time_us: 1.4
bias: 0.2
"""


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model in a session store."""

    tracking_uri: str
    model_uri: str           # models:/stem-denoiser-low-dose@champion
    version: str
    name: str
    condition: str
    run_id: str
    store_dir: Path


def _point_mlflow_at(uri: str | None) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def forget_mlflow_experiment() -> None:
    """Drop the experiment MLflow remembers process-wide.

    `mlflow.set_experiment` keeps the id in a module global and exports it as
    `MLFLOW_EXPERIMENT_ID`; a later test on a fresh store would then start its
    runs in an experiment id that store does not have.
    """
    import mlflow.tracking.fluent as fluent

    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    fluent._active_experiment_id = None


@pytest.fixture(autouse=True)
def _no_mlflow_experiment_leaks():
    """Every platform test starts and ends without a remembered MLflow experiment."""
    forget_mlflow_experiment()
    yield
    forget_mlflow_experiment()


@pytest.fixture(scope="session")
def registered_low_dose(tmp_path_factory) -> RegisteredModel:
    """`stem-denoiser-low-dose@champion`, a tiny really-trained hourglass, in a session temp store."""
    import mlflow

    from stemreg.platform.training import train_and_register

    store_dir = tmp_path_factory.mktemp("registered_low_dose")
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        result = train_and_register("low-dose", arch=TINY_ARCH, config=TINY_TRAIN, seed=0,
                                    run_name="fixture-low-dose", progress=False, **TINY_DATA)
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
        # Leave no global MLflow state behind: other tests set their store themselves.
        _point_mlflow_at(None)
        forget_mlflow_experiment()
    assert result.alias == "champion", result
    return RegisteredModel(tracking_uri=uri, model_uri="models:/stem-denoiser-low-dose@champion",
                           version=result.version, name=result.name, condition="low-dose",
                           run_id=result.run_id, store_dir=store_dir)


def stop_server(proc, sig: int | None = None) -> None:
    """Stop a server started in its own session (start_new_session=True): ``sig`` (default SIGINT) to its
    process group, SIGKILL if it has not gone after 20 s; its stderr pipe closed."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGINT if sig is None else sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
