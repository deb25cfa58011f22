"""The main job on a tiny budget: it trains, registers, scores and crowns a champion."""
from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from stemreg.models import pretrained
from stemreg.platform import registry
from stemreg.platform.pipeline import run_pipeline
from tests.platform.conftest import TINY_ARCH, TINY_DATA, TINY_TRAIN


def test_pipeline_registers_a_scored_champion_in_one_parent_run(mlflow_store):
    result = run_pipeline(["low-dose"], train=TINY_TRAIN, arch=TINY_ARCH, progress=False, from_scratch=True,
                          **TINY_DATA)
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
    # The MLflow UI's description boxes say what each run is.
    assert "stemreg main job over low-dose" in parent.data.tags["mlflow.note.content"]
    version = client.get_model_version("stem-denoiser-low-dose", outcome.version)
    # the run's description is the training summary; the version's is its model card, which carries it
    assert train_run.data.tags["mlflow.note.content"] == version.tags["card.summary"]
    assert version.description.startswith("## stem-denoiser-low-dose version")
    assert "'low-dose'" in version.description
    summary = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="pipeline_summary.json")).read())
    assert summary["outcomes"][0]["version"] == outcome.version


def test_pipeline_tunes_then_fine_tunes_other_conditions_from_the_low_dose_base(mlflow_store, tmp_path):
    import optuna

    from stemreg.acquisition import get_condition
    from stemreg.platform.pipeline import FINE_TUNE_LR_FACTOR, STUDY_SUFFIX
    from stemreg.tuning import TINY_BUDGET, default_study_name
    from stemreg.tuning.space import SEED_DEFAULT_PARAMS

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune_budget = TINY_BUDGET.model_dump()
    # One trial each: low-dose's search tries the seed's default first; blur's tries low-dose's winner.
    result = run_pipeline(["blur", "low-dose"], trials=1, train=TINY_TRAIN, tune_budget=tune_budget, from_scratch=True,
                          storage=storage, progress=False, **TINY_DATA)

    low, blur = result.outcomes
    assert (low.condition, blur.condition) == ("low-dose", "blur")  # the base runs first
    client = MlflowClient()
    base = client.get_model_version("stem-denoiser-low-dose", low.version)
    assert json.loads(base.tags["tuning.params"]) == SEED_DEFAULT_PARAMS
    assert low.parent is None and "parent" not in base.tags

    def study_params(condition):
        study = optuna.load_study(study_name=f"{default_study_name(get_condition(condition))}-{STUDY_SUFFIX}",
                                  storage=storage)
        return [t.params for t in study.trials]

    assert study_params("low-dose") == [SEED_DEFAULT_PARAMS]
    assert study_params("blur") == [SEED_DEFAULT_PARAMS]
    # Blur's search picked the base's architecture, so blur was fine-tuned from it: half the epochs, 0.1x lr.
    version = client.get_model_version("stem-denoiser-blur", blur.version)
    assert blur.parent == version.tags["parent"] == f"models:/stem-denoiser-low-dose/{low.version}"
    assert json.loads(version.tags["architecture"]) == json.loads(base.tags["architecture"])
    params = client.get_run(blur.run_id).data.params
    assert params["train.epochs"] == "1"
    assert float(params["train.lr"]) == pytest.approx(TINY_TRAIN["lr"] * FINE_TUNE_LR_FACTOR)  # lr given: kept
    assert blur.alias == "champion" and blur.benchmark_psnr > blur.noisy_psnr
    assert set(low.phase_seconds) == {"tune", "train", "data_log_register_score", "promote"}

    # A second run resumes the study (the queued default is not repeated) and gates its new version.
    again = run_pipeline(["low-dose"], trials=1, train=TINY_TRAIN, tune_budget=tune_budget, from_scratch=True,
                         storage=storage, progress=False, **TINY_DATA)
    (second,) = again.outcomes
    params = study_params("low-dose")
    assert len(params) == 2 and params[1] != SEED_DEFAULT_PARAMS
    assert second.version == "2"
    first_psnr, second_psnr = low.benchmark_psnr, second.benchmark_psnr
    assert second.champion == ("2" if second_psnr > first_psnr else "1")
    assert second.promoted == (second_psnr > first_psnr)
    if not second.promoted:
        assert str(registry.resolve("low-dose", "challenger").version) == "2"


@pytest.mark.skipif(not pretrained.available(), reason="no pretrained base in this checkout")
def test_pipeline_registers_the_shipped_base_once_and_fine_tunes_from_it(mlflow_store):
    from mlflow import MlflowClient

    tiny = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_px": 64}
    result = run_pipeline(["blur"], train=tiny, progress=False, n_train=2, n_val=1)
    [blur] = result.outcomes
    client = MlflowClient(mlflow_store)
    base = client.get_model_version("stem-denoiser-low-dose", "1")
    assert base.tags["pretrained"] == "true" and base.tags["pretrained.weights_sha256"] == pretrained.load_card()[
        "weights_sha256"]
    assert json.loads(base.tags["pretrained.card"])["command"].startswith("stemreg pretrain")
    assert blur.parent == "models:/stem-denoiser-low-dose/1" and blur.alias == "champion"
    assert json.loads(client.get_model_version("stem-denoiser-blur", blur.version).tags["architecture"])["levels"] == 4
    # a second run finds the base registered already: no second copy
    run_pipeline(["blur"], train=tiny, progress=False, n_train=2, n_val=1)
    versions = client.search_model_versions("name='stem-denoiser-low-dose'")
    assert [str(v.version) for v in versions if v.tags.get("pretrained") == "true"] == ["1"]
