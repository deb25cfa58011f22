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


def test_pipeline_fine_tunes_other_conditions_from_the_low_dose_base(mlflow_store):
    from stemreg.platform.pipeline import FINE_TUNE_LR_FACTOR

    result = run_pipeline(["blur", "low-dose"], trials=0, train=TINY_TRAIN, arch=TINY_ARCH, from_scratch=True,
                          progress=False, **TINY_DATA)
    low, blur = result.outcomes
    assert (low.condition, blur.condition) == ("low-dose", "blur")  # the base runs first
    client = MlflowClient()
    base = client.get_model_version("stem-denoiser-low-dose", low.version)
    assert low.parent is None and "parent" not in base.tags
    # Blur has the base's architecture, so it was fine-tuned from it: half the epochs, 0.1x lr.
    version = client.get_model_version("stem-denoiser-blur", blur.version)
    assert blur.parent == version.tags["parent"] == f"models:/stem-denoiser-low-dose/{low.version}"
    assert json.loads(version.tags["architecture"]) == json.loads(base.tags["architecture"])
    params = client.get_run(blur.run_id).data.params
    assert params["train.epochs"] == "1"
    assert float(params["train.lr"]) == pytest.approx(TINY_TRAIN["lr"] * FINE_TUNE_LR_FACTOR)  # lr given: kept
    assert blur.alias == "champion" and blur.benchmark_psnr > blur.noisy_psnr
    assert set(low.phase_seconds) == {"train", "data_log_register_score", "promote"}


def test_pipeline_distils_students_of_each_champion_into_one_nested_study(mlflow_store, tmp_path):
    from stemreg.tuning import TINY_BUDGET

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_pipeline(["low-dose"], trials=1, train=TINY_TRAIN, arch=TINY_ARCH, from_scratch=True,
                          tune_budget=TINY_BUDGET.model_dump(), storage=storage, progress=False, **TINY_DATA)
    (low,) = result.outcomes
    tuned = low.tuned
    assert tuned["teacher"] == f"models:/stem-denoiser-low-dose/{low.champion}" and tuned["trials"] == 1
    assert "students" in low.phase_seconds and "students:" in low.note
    client = MlflowClient()
    study_run = client.get_run(tuned["parent_run_id"])
    assert study_run.data.tags["mlflow.parentRunId"] == result.run_id  # the study under the main job's run
    assert study_run.data.tags["stemreg.teacher"] == tuned["teacher"]
    experiment = study_run.info.experiment_id
    (trial_run,) = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{study_run.info.run_id}'")
    assert trial_run.data.tags["stemreg.role"] == "trial"
    assert "plots/student_front.png" in {a.path for a in client.list_artifacts(study_run.info.run_id, "plots")}
    # the best-quality student is registered (and gated) as a student of the champion
    student = client.get_model_version("stem-denoiser-low-dose", tuned["challenger"]["version"])
    assert student.tags["teacher"] == tuned["teacher"] and student.tags["optuna.study"] == tuned["study"]


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


def test_the_main_jobs_student_searches_start_from_a_different_draw_per_condition():
    """One seed for every condition made each condition's first sampled student the same architecture."""
    import optuna

    from stemreg.platform.pipeline import sampler_seed
    from stemreg.tuning.space import suggest_architecture

    def first_draw(name: str, seed: int = 0) -> str:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=sampler_seed(seed, name)))
        return json.dumps(suggest_architecture(study.ask()), sort_keys=True)

    names = ("low-dose", "blur", "defocus", "hysteresis")
    draws = [first_draw(name) for name in names]
    assert len(set(draws)) == len(names)
    assert draws == [first_draw(name) for name in names]  # repeatable run to run
