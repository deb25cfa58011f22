"""The main job on a tiny budget: it trains, registers, scores and crowns a champion."""
from __future__ import annotations

import json

import mlflow
from mlflow import MlflowClient

from stemreg.platform import registry
from stemreg.platform.pipeline import run_pipeline
from tests.platform.conftest import TINY_ARCH, TINY_DATA, TINY_TRAIN


def test_pipeline_registers_a_scored_champion_in_one_parent_run(mlflow_store):
    result = run_pipeline(["low-dose"], train=TINY_TRAIN, arch=TINY_ARCH, progress=False, **TINY_DATA)
    (outcome,) = result.outcomes
    assert outcome.alias == "champion" and outcome.promoted
    champion = registry.resolve("low-dose", "champion")
    assert str(champion.version) == outcome.version == outcome.champion
    assert float(champion.tags["benchmark.psnr"]) == outcome.benchmark_psnr or \
        abs(float(champion.tags["benchmark.psnr"]) - outcome.benchmark_psnr) < 1e-3
    assert outcome.benchmark_psnr > outcome.noisy_psnr
    client = MlflowClient()
    train_run = client.get_run(outcome.run_id)
    assert train_run.data.tags["mlflow.parentRunId"] == result.run_id
    parent = client.get_run(result.run_id)
    assert parent.data.metrics["low-dose.benchmark_psnr"] == outcome.benchmark_psnr
    summary = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="pipeline_summary.json")).read())
    assert summary["outcomes"][0]["version"] == outcome.version
