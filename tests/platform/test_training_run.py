"""Training runs: what lands in MLflow, and fine-tuning from a registered parent."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from stemreg.acquisition import get_condition
from stemreg.models import psnr
from stemreg.platform.errors import BadInput
from stemreg.platform.training_run import train_and_register
from tests.platform.conftest import TINY_ARCH, TINY_DATA, TINY_TRAIN


@pytest.fixture
def fixture_store(registered_low_dose, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_low_dose.tracking_uri)
    mlflow.set_tracking_uri(registered_low_dose.tracking_uri)
    mlflow.set_registry_uri(registered_low_dose.tracking_uri)
    yield MlflowClient(registered_low_dose.tracking_uri, registered_low_dose.tracking_uri)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_run_holds_params_epoch_metrics_panel_and_model(registered_low_dose, fixture_store):
    client = fixture_store
    run = client.get_run(registered_low_dose.run_id)
    params = run.data.params
    assert params["condition.name"] == "low-dose"
    assert params["condition.hash"] == get_condition("low-dose").hash()
    assert json.loads(params["architecture"])["widths"] == TINY_ARCH["widths"]
    assert int(params["train.epochs"]) == TINY_TRAIN["epochs"]
    assert float(params["flops_per_pixel"]) > 0
    history = client.get_metric_history(run.info.run_id, "val_psnr")
    assert sorted(m.step for m in history) == list(range(1, TINY_TRAIN["epochs"] + 1))
    assert {"train_loss", "val_ssim", "benchmark_psnr"} <= set(run.data.metrics)
    panel = [f.path for f in client.list_artifacts(run.info.run_id, "panels")]
    assert panel == ["panels/validation_panel.png"]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=panel[0])
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_registered_version_carries_tags_description_and_works(registered_low_dose, fixture_store):
    client = fixture_store
    version = client.get_model_version_by_alias(registered_low_dose.name, "champion")
    tags = version.tags
    assert tags["condition"] == "low-dose" and tags["condition.hash"] == get_condition("low-dose").hash()
    assert json.loads(tags["architecture"])["depth"] == TINY_ARCH["depth"]
    assert float(tags["benchmark.psnr"]) > float(tags["benchmark.noisy_psnr"])
    assert "val_psnr" in tags and version.description
    model = mlflow.pyfunc.load_model(registered_low_dose.model_uri)
    assert model.metadata.signature is not None
    pair = get_condition("low-dose").sample_pairs(1, size_px=64, seed=123)
    denoised = np.asarray(model.predict(pair.degraded))
    assert denoised.shape == pair.degraded.shape
    assert psnr(denoised[0], pair.clean[0]) > psnr(pair.degraded[0], pair.clean[0])


def test_fine_tuning_records_its_parent_and_refuses_another_architecture(mlflow_store):
    parent = train_and_register("low-dose", arch=TINY_ARCH, config=TINY_TRAIN, progress=False, **TINY_DATA)
    other = {**TINY_ARCH, "widths": [8, 8, 8]}
    with pytest.raises(BadInput, match="differs"):
        train_and_register("low-dose", arch=other, config=TINY_TRAIN, init_from=parent.model_uri,
                           progress=False, **TINY_DATA)
    child = train_and_register("low-dose", config={**TINY_TRAIN, "epochs": 1, "lr": 1e-3}, seed=1,
                               init_from="models:/stem-denoiser-low-dose@champion", progress=False, **TINY_DATA)
    assert child.alias == "challenger"
    assert child.architecture == parent.architecture
    tags = MlflowClient().get_model_version(child.name, child.version).tags
    assert tags["parent"] == "models:/stem-denoiser-low-dose@champion"
    # Starting from trained weights: its first epoch already beats the parent's first epoch from scratch.
    client = MlflowClient()
    first = {r: [m.value for m in client.get_metric_history(r, "val_psnr") if m.step == 1][0]
             for r in (parent.run_id, child.run_id)}
    assert first[child.run_id] > first[parent.run_id]
