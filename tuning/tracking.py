"""MLflow records of a search: one parent run per worker invocation, one nested run per trial.

Optuna's own MLflow callback makes no parent run and is deprecated, so the
search logs itself. Everything goes through an explicit ``MlflowClient`` and
run ids, never the fluent "active run" stack: the caller (a CLI command, an
``mlflow run`` project run) may hold an active run of its own, which becomes
the parent's parent and is left running.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "optuna.study"
STORAGE_TAG = "optuna.storage"
STATE_TAG = "optuna.state"
TRIAL_TAG = "optuna.trial_number"
ROLE_TAG = "stemreg.role"
NOTE_TAG = "mlflow.note.content"  # the run's description box in the MLflow UI
#: Where a distillation trial keeps its student (artifacts of the trial run).
STUDENT_DIR, STUDENT_WEIGHTS, STUDENT_ARCHITECTURE = "student", "weights.pt", "architecture.json"


def context_tags() -> dict[str, str]:
    """The tags MLflow's fluent API would add from ``MLFLOW_RUN_CONTEXT`` (e.g. the process id and host
    that let a later process close the runs of a killed one); runs made through a client get them here."""
    try:
        tags = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def _experiment_id(client: "MlflowClient", outer_run_id: str | None) -> str:
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    if outer_run_id:
        return client.get_run(outer_run_id).info.experiment_id
    from mlflow.tracking.fluent import _get_experiment_id

    return _get_experiment_id()


class StudyTracker:
    """Writes a search's parent run and its trials' nested runs to the MLflow store in force.

    Parameters
    ----------
    study_name, storage_url : str
        Tagged on the parent (the storage with its password masked).
    objective : str
        ``quality`` or ``quality-latency``.
    params : dict
        Logged once on the parent (condition, budget, search settings).
    tags : dict
        Extra parent tags (the condition's flat parameters).
    experiment_id : str, optional
        Default: the active run's experiment, else the current experiment.
    """

    def __init__(self, *, study_name: str, storage_url: str, objective: str,
                 params: dict[str, Any], tags: dict[str, str], experiment_id: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
        active = mlflow.active_run()
        outer_run_id = active.info.run_id if active else os.environ.get("MLFLOW_RUN_ID")
        self.experiment_id = experiment_id or _experiment_id(self.client, outer_run_id)
        parent_tags = {**context_tags(), STUDY_TAG: study_name, STORAGE_TAG: storage_url, ROLE_TAG: "study",
                       "optuna.objective": objective, **tags}
        if outer_run_id:
            parent_tags[PARENT_TAG] = outer_run_id
        parent_tags.setdefault(NOTE_TAG, f"Optuna study '{study_name}' (objective: {objective}). Each nested run "
                                         f"is one trial, with its architecture and per-epoch validation "
                                         f"metrics; this run logs the best trial and the optimisation-history "
                                         f"and parameter-importance plots.")
        run = self.client.create_run(self.experiment_id, run_name=f"study-{study_name}", tags=parent_tags)
        self.parent_run_id = run.info.run_id
        self.study_name = study_name
        self._log_params(self.parent_run_id, params)

    # ---- trials -------------------------------------------------------------
    def start_trial(self, trial: "optuna.Trial", params: dict[str, Any]) -> str:
        """Open the nested run of one trial and log its parameters; returns its run id."""
        tags = {**context_tags(), PARENT_TAG: self.parent_run_id, STUDY_TAG: self.study_name, ROLE_TAG: "trial",
                TRIAL_TAG: str(trial.number), STATE_TAG: "running"}
        retried = retried_trial_number(trial)
        if retried is not None:
            tags["optuna.retry_of_trial"] = str(retried)
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch metrics (``train_loss``, ``val_psnr``, ``val_ssim``) of one trial."""
        from mlflow.entities import Metric
        import time

        now_ms = int(time.time() * 1000)
        entries = [Metric(key, float(value), now_ms, int(epoch)) for key, value in metrics.items()
                   if isinstance(value, (int, float))]
        if entries:
            self.client.log_batch(run_id, metrics=entries)

    def end_trial(self, run_id: str, state: str, metrics: dict[str, float] | None = None) -> None:
        """Close a trial's run: ``state`` is ``complete``, ``pruned`` or ``failed`` (a tag)."""
        if metrics:
            self.log_epoch(run_id, 0, metrics)
        self.client.set_tag(run_id, STATE_TAG, state)
        self.client.set_terminated(run_id, status="FAILED" if state == "failed" else "FINISHED")

    def log_student(self, run_id: str, model: Any, architecture: dict[str, Any]) -> None:
        """A trained student's state_dict and architecture on its trial run (``student/``)."""
        import tempfile
        from pathlib import Path

        import torch

        with tempfile.TemporaryDirectory() as tmp:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(tmp) / STUDENT_WEIGHTS)
            (Path(tmp) / STUDENT_ARCHITECTURE).write_text(json.dumps(architecture))
            self.client.log_artifacts(run_id, tmp, STUDENT_DIR)

    # ---- parent -------------------------------------------------------------
    def finish(self, study: "optuna.Study", *, summary: dict[str, Any], multi_objective: bool,
               target_names: list[str], status: str = "FINISHED", result: Any = None) -> None:
        """Log the best trial and the study's plots on the parent run, then close it."""
        run_id = self.parent_run_id
        params = {f"best.{k}": v for k, v in summary.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        metrics = {f"best.{k}": float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._log_params(run_id, params)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        for name, figure in study_figures(study, multi_objective=multi_objective, target_names=target_names):
            self.client.log_figure(run_id, figure, f"plots/{name}.png")
            _close(figure)
        if result is not None and result.teacher_psnr is not None:
            from stemreg.tuning.front import front_figure

            figure = front_figure(result)
            self.client.log_figure(run_id, figure, "plots/student_front.png")
            _close(figure)
        self.client.set_terminated(run_id, status=status)

    def abort(self) -> None:
        """Close the parent run as FAILED (the search raised)."""
        self.client.set_terminated(self.parent_run_id, status="FAILED")

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, _param_text(value)) for key, value in params.items()]
        if entries:
            self.client.log_batch(run_id, params=entries)


def retried_trial_number(trial: "optuna.Trial") -> int | None:
    """The number of the dead worker's trial that ``trial`` re-runs, or None for a fresh trial."""
    try:
        # Optuna keeps the retry record in system attrs, which a live Trial no longer exposes.
        frozen = trial.study._storage.get_trial(trial._trial_id)
    except AttributeError:
        return None
    return frozen.system_attrs.get("failed_trial")


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's limit on a param value


def _close(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def study_figures(study: "optuna.Study", *, multi_objective: bool,
                  target_names: list[str]) -> Iterable[tuple[str, Any]]:
    """Matplotlib figures of the study: optimisation history, parameter importances, Pareto front.

    Importances need two complete trials with differing parameters, the
    Pareto front a multi-objective study; a plot that cannot be drawn yet is
    skipped with a log line, never fatal.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    psnr_target = (lambda t: t.values[0]) if multi_objective else None
    psnr_name = target_names[0]
    makers = [("optimization_history",
               lambda: ovm.plot_optimization_history(study, target=psnr_target, target_name=psnr_name))]
    if len(complete) >= 2:
        # Optuna's default importance evaluator ranks parameters by what lowers the target: negate PSNR.
        makers.append(("param_importances",
                       lambda: ovm.plot_param_importances(study, target=lambda t: -t.values[0],
                                                          target_name=f"-{psnr_name}")))
    if multi_objective and complete:
        makers.append(("pareto_front", lambda: ovm.plot_pareto_front(study, target_names=target_names)))
    for name, make in makers:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # We negate PSNR for the importance evaluator ourselves; its reminder is noise.
                warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator")
                axes = make()
        except Exception as exc:  # noqa: BLE001 - a missing plot must not lose a finished search
            log.warning("could not draw the %s plot: %s", name, exc)
            continue
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        figure.tight_layout()
        yield name, figure
