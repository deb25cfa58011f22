"""Per-condition architecture search with Optuna: the study, its objective, its result.

One call of :func:`run_study` is one worker: it opens (or resumes) the study
in the RDB storage, runs its share of trials, and logs them to MLflow as
nested runs under a parent run of its own. Several workers on one storage
(PostgreSQL for many machines) share one study; every trial number is handed
out by the database, so none is lost or duplicated.
"""
from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stemreg.models.config import off_benchmark
from stemreg.tuning.budget import SearchBudget
from stemreg.tuning.storage import masked_url, open_storage
from stemreg.tuning.latency import ms_per_mpx
from stemreg.tuning.space import space_params

if TYPE_CHECKING:
    import optuna
    from stemreg.acquisition import Condition

log = logging.getLogger(__name__)

#: Data seeds of a search: fixed, so every trial and every worker sees the same images.
TRAIN_SEED = 7_001
VAL_SEED = 7_002
#: Trials that run before the median pruner may prune, and epochs before it judges.
PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_EPOCHS = 1
#: In a quality-latency search the chosen trial is the fastest within this many dB of the best.
PSNR_TOLERANCE_DB = 0.5
TARGET_NAMES = ["val PSNR (dB)", "inference ms per megapixel"]


class Objective(str, enum.Enum):
    """What a search optimises."""

    QUALITY = "quality"
    QUALITY_LATENCY = "quality-latency"


class NoCompletedTrialError(RuntimeError):
    """The study has no complete trial yet, so there is no best architecture."""


@dataclass
class StudyResult:
    """What one :func:`run_study` call found (the best over the whole study, all workers).

    Attributes
    ----------
    best_params : dict
        The best trial's Optuna parameters (depth, base_width, growth, kernel_size, lr).
    best_architecture : dict
        Architecture dict for :func:`stemreg.models.build_model`.
    best_value : float
        The best trial's validation PSNR (dB).
    study_name, storage : str
        Where the study lives (storage password masked).
    parent_run_id : str
        This invocation's MLflow parent run.
    n_trials_done : int
        Trials this invocation ran (complete, pruned or failed).
    best_trial_number : int
    best_lr : float
    best_ms_per_mpx : float or None
        Measured latency of the best trial (quality-latency searches only).
    pareto_front : list of dict
        ``{"trial", "val_psnr", "ms_per_mpx"}`` (quality-latency only).
    objective : str
    """

    best_params: dict[str, Any]
    best_architecture: dict[str, Any]
    best_value: float
    study_name: str
    parent_run_id: str
    n_trials_done: int
    storage: str = ""
    best_trial_number: int = -1
    best_lr: float = float("nan")
    best_ms_per_mpx: float | None = None
    pareto_front: list[dict[str, Any]] = field(default_factory=list)
    objective: str = Objective.QUALITY.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for ``stemreg tune --json``)."""
        from dataclasses import asdict

        return asdict(self)


def default_study_name(condition: "Condition") -> str:
    """``<condition name>-<condition hash>``: a changed condition gets a new study."""
    return f"{condition.name}-{condition.hash()}"


def _data_seeds(condition: "Condition") -> tuple[int, int]:
    train_seed, val_seed = off_benchmark((TRAIN_SEED, VAL_SEED), getattr(condition, "benchmark_seed", None))
    return train_seed, val_seed


def _make_data(condition: "Condition", budget: SearchBudget):
    train_seed, val_seed = _data_seeds(condition)
    size_px = budget.image_px
    train = condition.sample_pairs(budget.n_train, size_px=size_px, seed=train_seed)
    val = condition.sample_pairs(budget.n_val, size_px=size_px, seed=val_seed)
    return (train.degraded, train.clean), (val.degraded, val.clean)


def _resolve_condition(condition: "Condition | str") -> "Condition":
    if isinstance(condition, str):
        from stemreg.acquisition import load_condition

        return load_condition(condition)
    return condition


def make_study(*, storage_url: str | None, study_name: str, objective: Objective,
               pruner: "optuna.pruners.BasePruner | None" = None,
               sampler: "optuna.samplers.BaseSampler | None" = None,
               heartbeat_interval_s: int | None = None) -> "optuna.Study":
    """Create or load (``load_if_exists``) the study in its RDB storage.

    Raises
    ------
    stemreg.tuning.storage.StorageError
        Bad or unreachable storage.
    ValueError
        The stored study's directions differ from ``objective``'s.
    """
    import optuna

    storage = open_storage(storage_url, heartbeat_interval_s=heartbeat_interval_s)
    if objective is Objective.QUALITY:
        directions = ["maximize"]
        pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS)
    else:
        directions = ["maximize", "minimize"]
        pruner = optuna.pruners.NopPruner()  # multi-objective studies cannot prune
    try:
        return optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    except ValueError as exc:
        raise ValueError(f"study {study_name!r} already exists with other objectives than "
                         f"{objective.value!r}; pick another --study name ({exc})") from exc


def run_study(condition: "Condition | str", *, n_trials: int | None, timeout_s: float | None = None,
              storage: str | None = None, study_name: str | None = None,
              objective: Objective | str = Objective.QUALITY, budget: SearchBudget | None = None,
              pruner: "optuna.pruners.BasePruner | None" = None,
              sampler: "optuna.samplers.BaseSampler | None" = None,
              heartbeat_interval_s: int | None = None, experiment_id: str | None = None,
              enqueue: list[dict[str, Any]] | None = None, progress: bool = True) -> StudyResult:
    """Search the reverse-hourglass architecture for one acquisition condition.

    Parameters
    ----------
    condition : Condition or str
        The acquisition condition (or its built-in name / YAML path).
    n_trials : int or None
        Trials this worker runs (None: until ``timeout_s``).
    timeout_s : float, optional
        Stop starting new trials after this many seconds.
    storage : str, optional
        SQLAlchemy URL of the study database; default ``sqlite:///optuna.db``.
    study_name : str, optional
        Default ``<condition>-<condition hash>``.
    objective : {"quality", "quality-latency"}
        Maximise validation PSNR (with pruning), or also minimise the measured
        inference time per megapixel (no pruning; Pareto front plotted).
    budget : SearchBudget, optional
        Per-trial training budget.
    pruner, sampler : optional
        Override Optuna's median pruner / TPE sampler (quality only for the pruner).
    heartbeat_interval_s : int, optional
        Heartbeat of running trials (a killed worker's trial is retried after 2x).
    experiment_id : str, optional
        MLflow experiment; default the current one.
    enqueue : list of dict, optional
        Parameter sets (``depth``, ``base_width``, ``growth``, ``kernel_size``,
        ``lr``) to try first, e.g. :data:`stemreg.tuning.space.SEED_DEFAULT_PARAMS`
        or a base model's parameters. A set the study already holds is not
        queued again, so a resumed study does not repeat it. Queued trials
        count towards ``n_trials``.
    progress : bool
        Show a tqdm bar over trials.

    Returns
    -------
    StudyResult

    Raises
    ------
    StorageError
        Bad or unreachable storage URL.
    NoCompletedTrialError
        No trial of the study has completed (all pruned or failed).
    """
    import optuna

    if n_trials is None and timeout_s is None:
        raise ValueError("give n_trials or timeout_s, else the search never ends")
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"n_trials must be >= 1 (got {n_trials})")
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds (got {timeout_s})")
    objective = Objective(objective)
    budget = budget or SearchBudget()
    condition = _resolve_condition(condition)
    study_name = study_name or default_study_name(condition)
    from stemreg.tuning.storage import default_storage

    storage_url = storage or default_storage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar and MLflow tell the story
    study = make_study(storage_url=storage_url, study_name=study_name, objective=objective,
                       pruner=pruner, sampler=sampler, heartbeat_interval_s=heartbeat_interval_s)
    for params in enqueue or []:
        study.enqueue_trial(space_params(params), skip_if_exists=True)

    from stemreg.tuning.tracking import StudyTracker

    tracker = StudyTracker(
        study_name=study_name, storage_url=masked_url(storage_url), objective=objective.value,
        params={"condition": condition.name, "objective": objective.value, "n_trials": n_trials,
                "timeout_s": timeout_s, **{f"budget.{k}": v for k, v in budget.model_dump().items()}},
        tags=dict(condition.flat_params()), experiment_id=experiment_id)
    try:
        train_data, val_data = _make_data(condition, budget)
        trial_objective = _TrialObjective(condition=condition, budget=budget, objective=objective,
                                          tracker=tracker, train_data=train_data, val_data=val_data)
        counter = _TrialCounter(total=n_trials, progress=progress, study_name=study_name)
        try:
            study.optimize(trial_objective, n_trials=n_trials, timeout=timeout_s,
                           callbacks=[counter], catch=(RuntimeError,), gc_after_trial=True)
        finally:
            counter.close()
        result = _result(study, objective, study_name=study_name, storage=masked_url(storage_url),
                         parent_run_id=tracker.parent_run_id, n_trials_done=counter.n_done)
    except BaseException:
        tracker.abort()
        raise
    tracker.finish(study, summary={"trial": result.best_trial_number, "val_psnr": result.best_value,
                                   "architecture": result.best_architecture, "lr": result.best_lr,
                                   **{k: str(v) for k, v in result.best_params.items() if k != "lr"},
                                   **({"ms_per_mpx": result.best_ms_per_mpx}
                                      if result.best_ms_per_mpx is not None else {}),
                                   "trials_done_here": counter.n_done},
                   multi_objective=objective is Objective.QUALITY_LATENCY, target_names=TARGET_NAMES)
    return result


class _TrialCounter:
    """Optuna callback: counts this worker's finished trials and drives a progress bar."""

    def __init__(self, *, total: int | None, progress: bool, study_name: str) -> None:
        from tqdm.auto import tqdm

        self.n_done = 0
        self.bar = tqdm(total=total, desc=f"search {study_name}", unit="trial", disable=not progress)

    def __call__(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
        self.n_done += 1
        self.bar.update(1)
        value = trial.values[0] if trial.values else None
        self.bar.set_postfix(trial=trial.number, state=trial.state.name.lower(),
                             psnr=f"{value:.2f}" if value is not None else "-")

    def close(self) -> None:
        self.bar.close()


class _TrialObjective:
    """The objective Optuna calls per trial: build, train, report, log."""

    def __init__(self, *, condition, budget: SearchBudget, objective: Objective, tracker,
                 train_data, val_data) -> None:
        self.condition = condition
        self.budget = budget
        self.objective = objective
        self.tracker = tracker
        self.train_data = train_data
        self.val_data = val_data

    def __call__(self, trial: "optuna.Trial") -> float | tuple[float, float]:
        import optuna
        from stemreg.models import TrainConfig, architecture_of, build_model, train
        from stemreg.tuning.space import cell_spacing_px, flops_per_pixel, suggest_architecture, suggest_lr

        import torch

        # The initial weights follow the trial number: a rerun of the study gives the same trials.
        torch.manual_seed(self.budget.seed + trial.number)
        model = build_model(suggest_architecture(trial))
        arch = architecture_of(model)  # canonical form, as the registry records it
        lr = suggest_lr(trial)
        flops = flops_per_pixel(model)
        radius = int(model.receptive_radius_px)
        trial.set_user_attr("architecture", arch)
        trial.set_user_attr("flops_per_pixel", flops)
        trial.set_user_attr("receptive_field_px", 2 * radius + 1)
        run_id = self.tracker.start_trial(trial, {
            "architecture": arch, "levels": arch.get("levels", 1), "depth": model.depth, "widths": arch["widths"],
            "kernel_size": arch["kernel_size"], "base_width": trial.params["base_width"],
            "growth": trial.params["growth"], "lr": lr, "flops_per_pixel": flops,
            "kflop_per_pixel": round(flops / 1e3, 1), "receptive_field_px": 2 * radius + 1,
            "n_parameters": sum(p.numel() for p in model.parameters())})
        trial.set_user_attr("mlflow_run_id", run_id)
        b = self.budget
        multiple = int(getattr(model, "size_multiple", 1) or 1)
        if b.patch_px % multiple:
            self.tracker.end_trial(run_id, "pruned")
            raise optuna.TrialPruned(f"its down-sampling needs patches a multiple of {multiple} px "
                                     f"(the budget's are {b.patch_px} px)")
        if b.min_receptive_cells:
            needed = b.min_receptive_cells * cell_spacing_px(self.condition)
            if 2 * radius + 1 < needed:
                # It cannot see the lattice's periodicity at the finest sampling: judged before any step.
                self.tracker.end_trial(run_id, "pruned")
                raise optuna.TrialPruned(f"receptive field {2 * radius + 1} px is smaller than "
                                         f"{b.min_receptive_cells:g} unit cells ({needed:.0f} px) at the finest "
                                         "sampling")
        if b.max_flops_per_px is not None and flops > b.max_flops_per_px:
            # Too big to train (and retrain, and serve) within this budget: judged before any step.
            self.tracker.end_trial(run_id, "pruned")
            raise optuna.TrialPruned(f"{flops / 1e3:.0f} kFLOP/px exceeds the budget's "
                                     f"{b.max_flops_per_px / 1e3:.0f} kFLOP/px")
        config = TrainConfig(epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, batch_size=b.batch_size,
                             patch_px=b.patch_px, lr=lr, seed=b.seed + trial.number)
        can_prune = self.objective is Objective.QUALITY

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            self.tracker.log_epoch(run_id, epoch, metrics)
            if can_prune:
                value = float(metrics["val_psnr"])
                trial.report(value, epoch)
                if trial.should_prune() or not math.isfinite(value):
                    raise optuna.TrialPruned(f"val PSNR {value:.2f} dB at epoch {epoch}")

        try:
            result = train(model, config, train_data=self.train_data, val_data=self.val_data,
                           on_epoch=on_epoch, progress=False)
        except optuna.TrialPruned:
            self.tracker.end_trial(run_id, "pruned")
            raise
        except BaseException:
            self.tracker.end_trial(run_id, "failed")
            raise
        best_psnr = float(result.best_val_psnr)
        final = {"best_val_psnr": best_psnr, "train_seconds": float(result.seconds)}
        if self.objective is Objective.QUALITY:
            self.tracker.end_trial(run_id, "complete", final)
            return best_psnr
        latency = ms_per_mpx(result.model, image_px=b.latency_image_px)
        trial.set_user_attr("ms_per_mpx", latency)
        self.tracker.end_trial(run_id, "complete", {**final, "ms_per_mpx": latency})
        return best_psnr, latency


def _result(study: "optuna.Study", objective: Objective, **common: Any) -> StudyResult:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise NoCompletedTrialError(
            f"study {common['study_name']!r} has no complete trial yet (all pruned or failed); "
            "run more trials or give each a larger budget")
    pareto: list[dict[str, Any]] = []
    if objective is Objective.QUALITY:
        best = study.best_trial
    else:
        front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)
        pareto = [{"trial": t.number, "val_psnr": t.values[0], "ms_per_mpx": t.values[1]} for t in front]
        top_psnr = front[0].values[0]
        # The fastest architecture that gives up at most PSNR_TOLERANCE_DB of quality.
        best = min((t for t in front if t.values[0] >= top_psnr - PSNR_TOLERANCE_DB), key=lambda t: t.values[1])
    return StudyResult(
        best_params=dict(best.params), best_architecture=dict(best.user_attrs["architecture"]),
        best_value=float(best.values[0]), best_trial_number=best.number, best_lr=float(best.params["lr"]),
        best_ms_per_mpx=(float(best.values[1]) if objective is Objective.QUALITY_LATENCY else None),
        pareto_front=pareto, objective=objective.value, **common)
