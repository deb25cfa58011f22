"""MLproject's entry points are the CLI's commands: every flag exists, and `mlflow run` runs them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _entry_points() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


@pytest.mark.parametrize("name", sorted(_entry_points()))
def test_every_entry_point_passes_only_flags_its_command_defines(name):
    from stemreg.platform.cli import main

    entry = _entry_points()[name]
    words = entry["command"].split()
    assert words[0] == "stemreg"
    command = main.commands[words[1]]
    defined = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = [w for w in words[2:] if w.startswith("-")]
    assert used and set(used) <= defined, f"{name}: {sorted(set(used) - defined)} not defined by stemreg {words[1]}"
    placeholders = set(re.findall(r"{(\w+)}", entry["command"]))
    assert placeholders == set(entry.get("parameters", {})), name


def _mlflow_run(entry: str, params: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    args = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    # Run from the temporary folder: the store, its artifacts and outputs stay out of the repository.
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _repo_litter() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.name in ("mlruns", "mlflow.db", "optuna.db", "simulated")}


@pytest.mark.slow
def test_mlflow_run_simulate_and_train_entry_points(tmp_path):
    from mlflow import MlflowClient

    before = _repo_litter()
    out = tmp_path / "pairs"
    simulated = _mlflow_run("simulate", {"n": 2, "seed": 3, "out": out}, tmp_path)
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    assert np.load(out / "degraded.npy").shape[0] == 2 and (out / "simulation.json").is_file()

    trained = _mlflow_run("train", {"epochs": 1, "steps_per_epoch": 2, "n_train": 2, "seed": 1}, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("stem-denoiser-low-dose", "champion")
    assert float(version.tags["benchmark.psnr"]) > 0
    assert _repo_litter() == before
