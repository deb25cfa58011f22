"""The search on a real SQLite study and a real MLflow store: trials, pruning, resume, plots."""
from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from stemreg.acquisition import get_condition
from stemreg.models import build_model
from stemreg.tuning import TINY_BUDGET, NoCompletedTrialError, default_study_name, run_study

CONDITION = "low-dose"


def _children(client: MlflowClient, parent_run_id: str):
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def _artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, "plots")}


def test_sqlite_study_logs_nested_trials_then_resumes_and_prunes(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    client = MlflowClient(mlflow_store)

    first = run_study(CONDITION, n_trials=2, storage=storage, budget=TINY_BUDGET,
                      pruner=optuna.pruners.NopPruner(), progress=False)

    assert first.n_trials_done == 2
    parent = client.get_run(first.parent_run_id)
    assert parent.data.tags["optuna.study"] == first.study_name
    assert parent.data.tags["optuna.storage"] == storage
    assert parent.info.status == "FINISHED"
    assert f"Optuna study '{first.study_name}'" in parent.data.tags["mlflow.note.content"]
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= _artifacts(client, parent.info.run_id)
    children = _children(client, first.parent_run_id)
    assert len(children) == 2
    for child in children:
        assert child.data.tags["optuna.state"] == "complete"
        assert {"depth", "widths", "kernel_size", "lr", "flops_per_pixel", "architecture"} <= set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "val_psnr")
        assert sorted(m.step for m in history) == list(range(1, TINY_BUDGET.epochs + 1))
        assert client.get_metric_history(child.info.run_id, "train_loss")
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    assert first.best_value == pytest.approx(max(t.value for t in study.trials))
    assert build_model(first.best_architecture) is not None
    assert float(parent.data.metrics["best.val_psnr"]) == pytest.approx(first.best_value)

    # A second invocation resumes the same study; an aggressive pruner stops its trial after epoch 1.
    second = run_study(CONDITION, n_trials=1, storage=storage, budget=TINY_BUDGET,
                       pruner=optuna.pruners.ThresholdPruner(lower=1e6), progress=False)

    assert second.study_name == first.study_name and second.parent_run_id != first.parent_run_id
    trials = optuna.load_study(study_name=first.study_name, storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert list(trials[2].intermediate_values) == [1]
    assert second.best_value == pytest.approx(first.best_value)  # the best of the whole study survives
    (pruned_run,) = _children(client, second.parent_run_id)
    assert pruned_run.data.tags["optuna.state"] == "pruned"
    assert pruned_run.data.tags["optuna.trial_number"] == "2"


def test_search_with_no_complete_trial_fails_clearly(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(NoCompletedTrialError, match="no complete trial"):
        run_study(CONDITION, n_trials=1, storage=storage, study_name="all-pruned", budget=TINY_BUDGET,
                  pruner=optuna.pruners.ThresholdPruner(lower=1e6), progress=False)
    (parent,) = MlflowClient(mlflow_store).search_runs(
        [MlflowClient(mlflow_store).get_experiment_by_name("Default").experiment_id],
        filter_string="tags.`stemreg.role` = 'study'")
    assert parent.info.status == "FAILED"


def test_quality_latency_search_logs_a_pareto_front(mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_study(CONDITION, n_trials=2, storage=storage, objective="quality-latency",
                       budget=TINY_BUDGET, progress=False)

    assert result.best_ms_per_mpx is not None and result.best_ms_per_mpx > 0
    assert result.pareto_front and result.best_trial_number in {p["trial"] for p in result.pareto_front}
    for a in result.pareto_front:  # no point of the front dominates another
        for b in result.pareto_front:
            assert not (a is not b and a["val_psnr"] >= b["val_psnr"]
                        and a["ms_per_mpx"] <= b["ms_per_mpx"]
                        and (a["val_psnr"], a["ms_per_mpx"]) != (b["val_psnr"], b["ms_per_mpx"]))
    client = MlflowClient(mlflow_store)
    assert "plots/pareto_front.png" in _artifacts(client, result.parent_run_id)
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for child in _children(client, result.parent_run_id):
        assert child.data.metrics["ms_per_mpx"] > 0


def test_changed_condition_gets_a_new_default_study():
    condition = get_condition(CONDITION)
    changed = condition.model_copy(update={"beam_current_pA": condition.beam_current_pA * 2})
    assert default_study_name(condition).startswith(CONDITION)
    assert default_study_name(condition) == default_study_name(get_condition(CONDITION))
    assert default_study_name(changed) != default_study_name(condition)


def test_queued_trials_run_first_once_and_oversized_nets_are_pruned_untrained(mlflow_store, tmp_path):
    from stemreg.tuning.space import SEED_DEFAULT_PARAMS

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    small = {"depth": 4, "base_width": 4, "growth": 1.0, "kernel_size": 3, "lr": 2e-3}  # ~1 kFLOP/px
    budget = TINY_BUDGET.model_copy(update={"max_flops_per_px": 50_000})  # the seed's default is ~97k
    result = run_study(CONDITION, n_trials=2, storage=storage, budget=budget,
                       enqueue=[SEED_DEFAULT_PARAMS, small], progress=False)

    trials = optuna.load_study(study_name=result.study_name, storage=storage).trials
    assert [t.params for t in trials] == [SEED_DEFAULT_PARAMS, {"levels": 1, **small}]
    assert trials[0].state == TrialState.PRUNED and not trials[0].intermediate_values  # never trained
    assert trials[1].state == TrialState.COMPLETE and result.best_params == {"levels": 1, **small}
    client = MlflowClient(mlflow_store)
    states = {c.data.tags["optuna.trial_number"]: c.data.tags["optuna.state"]
              for c in _children(client, result.parent_run_id)}
    assert states == {"0": "pruned", "1": "complete"}

    # Resumed with the same queue: both sets exist already, so the next trial is a fresh draw.
    run_study(CONDITION, n_trials=1, storage=storage, budget=budget, enqueue=[SEED_DEFAULT_PARAMS, small],
              progress=False)
    trials = optuna.load_study(study_name=result.study_name, storage=storage).trials
    assert len(trials) == 3 and trials[2].params not in (SEED_DEFAULT_PARAMS, small)

    with pytest.raises(ValueError, match="enqueued parameters"):
        run_study(CONDITION, n_trials=1, storage=storage, budget=budget, enqueue=[{"depth": 4}], progress=False)


def test_the_family_spans_plain_and_multiscale_and_blind_nets_are_pruned_before_training():
    import optuna

    from stemreg.acquisition import get_condition
    from stemreg.models import build_model
    from stemreg.tuning.space import cell_spacing_px, suggest_architecture

    plain = suggest_architecture(optuna.trial.FixedTrial({"levels": 1, "depth": 8, "base_width": 8, "growth": 2.0,
                                                          "kernel_size": 3}))
    scaled = suggest_architecture(optuna.trial.FixedTrial({"levels": 4, "base_width": 12, "growth": 2.0,
                                                           "kernel_size": 3, "unshuffle": 2,
                                                           "convs_per_level": 2, "dilation": 1}))
    assert plain["depth"] == 8 and "levels" not in plain
    assert scaled["levels"] == 4 and scaled["widths"] == sorted(scaled["widths"])
    # at the finest sampling (4 pm/px) the widest cell spans ~100 px: the seed's 17-px net sees a sixth
    # of one, the multi-scale member two
    cells = cell_spacing_px(get_condition("low-dose"))
    assert 95 < cells < 150
    assert 2 * build_model(plain).receptive_radius_px + 1 < 2 * cells <= 2 * build_model(scaled).receptive_radius_px + 1


def test_a_net_that_cannot_see_two_unit_cells_is_pruned_before_any_step(mlflow_store, tmp_path):
    from stemreg.tuning.search import NoCompletedTrialError
    from stemreg.tuning.space import SEED_DEFAULT_PARAMS

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    budget = TINY_BUDGET.model_copy(update={"min_receptive_cells": 2.0})
    with pytest.raises(NoCompletedTrialError):
        run_study("low-dose", n_trials=1, storage=storage, budget=budget, enqueue=[SEED_DEFAULT_PARAMS],
                  progress=False)
    [trial] = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage).trials
    assert trial.state == TrialState.PRUNED and not trial.intermediate_values  # never trained
    assert trial.user_attrs["receptive_field_px"] == 17
