"""Per-condition architecture search with Optuna: the study and its trials (what it found: :mod:`.result`).

One call of :func:`run_study` is one worker: it opens (or resumes) the study
in the RDB storage, runs its share of trials, and logs them to MLflow as
nested runs under a parent run of its own. Several workers on one storage
(PostgreSQL for many machines) share one study; every trial number is handed
out by the database, so none is lost or duplicated. With ``study_total`` the
trial count is the study's: a worker stops once the study holds that many
finished trials (:data:`FINISHED_STATES`), so a rerun after a kill, or a second
worker, runs only the missing ones.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from stemreg.tuning.budget import SearchBudget
from stemreg.tuning.data import TRAIN_SEED, VAL_SEED, search_data, trial_data  # noqa: F401 - the seeds re-exported
from stemreg.tuning.latency import ms_per_mpx
from stemreg.tuning.result import (DISTILL_TARGET_NAMES, PSNR_TOLERANCE_DB, TARGET_NAMES,  # noqa: F401
                                   NoCompletedTrialError, Objective, StudyResult, study_result)
from stemreg.tuning.space import space_params
from stemreg.tuning.storage import masked_url, open_storage

if TYPE_CHECKING:
    import optuna
    from stemreg.acquisition import Condition, ConditionLike
    from stemreg.tuning.distill import Teacher

log = logging.getLogger(__name__)

#: Trial states that count as finished towards a study's total (``study_total``): complete and
#: pruned. A failed trial (an error, a killed worker's) does not count; a killed one is retried.
FINISHED_STATES = ("COMPLETE", "PRUNED")
#: Trials that run before the median pruner may prune, and epochs before it judges.
PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_EPOCHS = 1


def default_study_name(condition: "Condition") -> str:
    """``<condition name>-<condition hash>``: a changed condition gets a new study."""
    return f"{condition.name}-{condition.hash()}"


def count_finished(study: "optuna.Study") -> int:
    """The study's finished trials (:data:`FINISHED_STATES`), every worker's."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in FINISHED_STATES)))


def finished_trials(storage_url: str, study_name: str) -> int:
    """Finished trials of a stored study (0 when there is no such study yet)."""
    import optuna

    try:
        return count_finished(optuna.load_study(study_name=study_name, storage=open_storage(storage_url)))
    except KeyError:  # no such study
        return 0


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


def run_study(condition: "ConditionLike", *, n_trials: int | None, timeout_s: float | None = None,
              storage: str | None = None, study_name: str | None = None,
              objective: Objective | str = Objective.QUALITY, budget: SearchBudget | None = None,
              pruner: "optuna.pruners.BasePruner | None" = None,
              sampler: "optuna.samplers.BaseSampler | None" = None,
              heartbeat_interval_s: int | None = None, experiment_id: str | None = None,
              enqueue: list[dict[str, Any]] | None = None, progress: bool = True, study_total: bool = False,
              targets: list | None = None, target_fraction: float = 0.0,
              teacher: "Teacher | None" = None) -> StudyResult:
    """Search the reverse-hourglass architecture for one acquisition condition.

    Parameters
    ----------
    condition : Condition or str
        The acquisition condition (or its built-in name / YAML path).
    n_trials : int or None
        Trials this worker runs (None: until ``timeout_s``); with ``study_total``, the
        study's finished trials to reach.
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
    study_total : bool
        Count ``n_trials`` over the whole study: stop once it holds ``n_trials`` finished
        (complete or pruned) trials, every worker's and every earlier run's together (Optuna's
        ``MaxTrialsCallback``). This worker runs at most the ones missing when it starts, none
        when the study already holds them (the result is then the study's best so far). A
        failed trial is not replaced within this run; several workers at once may end a few
        over, as trials already running when the count is reached still finish.
    targets, target_fraction : optional
        A lab's clean high-dose images (``(image, pixel_size_pm or None, name)``, see
        :func:`stemreg.acquisition.stream.load_targets`) and the share of the trials'
        training patches cut from them; see :func:`stemreg.tuning.data.search_data`.
        Their names are tagged on the parent run (``lab_targets``).
    teacher : stemreg.tuning.distill.Teacher, optional
        Make every trial a student of this model (see :mod:`stemreg.tuning.distill`): it trains on
        the condition's stream against the teacher's output plus the clean target, a student of the
        teacher's shape starts from its weights, and the first objective is the PSNR on a slice of
        the condition's benchmark (``budget.bench_per_bin`` images per bin, mean over bins). The
        teacher is scored on the same slice (``StudyResult.teacher_psnr``). Each student's weights
        are logged on its trial run (``student/``), so a front member can be registered as trained.

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
    from stemreg.acquisition import load_condition

    condition = load_condition(condition)
    study_name = study_name or default_study_name(condition)
    from stemreg.tuning.storage import default_storage

    # "" is a mistake to report (check_storage_url does), never a reason to take the default.
    storage_url = storage if storage is not None else default_storage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar and MLflow tell the story
    study = make_study(storage_url=storage_url, study_name=study_name, objective=objective,
                       pruner=pruner, sampler=sampler, heartbeat_interval_s=heartbeat_interval_s)
    for params in enqueue or []:
        study.enqueue_trial(space_params(params), skip_if_exists=True)
    callbacks: list[Any] = []
    to_run, finished_before = n_trials, count_finished(study)
    if study_total and n_trials is not None:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        to_run = max(0, n_trials - finished_before)
        callbacks.append(MaxTrialsCallback(n_trials, states=tuple(TrialState[s] for s in FINISHED_STATES)))

    from stemreg.acquisition.stream import targets_tags
    from stemreg.tuning.tracking import StudyTracker

    tracker = StudyTracker(
        study_name=study_name, storage_url=masked_url(storage_url), objective=objective.value,
        params={"condition": condition.name, "objective": objective.value, "n_trials": n_trials,
                "trials_counted": "study" if study_total else "worker", "finished_before": finished_before,
                "timeout_s": timeout_s, **({"n_targets": len(targets), "target_fraction": target_fraction}
                                           if targets else {}),
                **{f"budget.{k}": v for k, v in budget.model_dump().items()}},
        tags={**condition.flat_params(), **targets_tags(targets, target_fraction),
              **({"stemreg.teacher": teacher.uri} if teacher is not None else {})}, experiment_id=experiment_id)
    reference: dict[str, float] = {}
    try:
        if targets:
            tracker.client.log_dict(tracker.parent_run_id, {"lab_targets": [name for _, _, name in targets],
                                                            "fraction": target_fraction}, "lab_targets.json")
        counter = _TrialCounter(total=to_run, progress=progress and to_run != 0, study_name=study_name)
        try:
            if to_run != 0:  # a study that already holds its trials starts none (nor renders data)
                train_data, val_data = search_data(condition, budget, targets=targets,
                                                   target_fraction=target_fraction, teacher=teacher)
                bench = None
                if teacher is not None:
                    from stemreg.tuning.distill import BenchSlice

                    bench = BenchSlice.of(condition, budget.bench_per_bin)
                    reference = {"teacher_psnr": bench.psnr(teacher.model),
                                 "teacher_ms_per_mpx": ms_per_mpx(teacher.model, image_px=budget.latency_image_px)}
                    for key, value in reference.items():
                        tracker.client.log_metric(tracker.parent_run_id, key, value)
                trial_objective = _TrialObjective(condition=condition, budget=budget, objective=objective,
                                                  tracker=tracker, train_data=train_data, val_data=val_data,
                                                  teacher=teacher, bench=bench)
                study.optimize(trial_objective, n_trials=to_run, timeout=timeout_s, callbacks=[counter, *callbacks],
                               catch=(RuntimeError,), gc_after_trial=True)
        finally:
            counter.close()
        result = study_result(study, objective, study_name=study_name, storage=masked_url(storage_url),
                              parent_run_id=tracker.parent_run_id, n_trials_done=counter.n_done,
                              n_trials_finished=count_finished(study),
                              teacher_uri=teacher.uri if teacher is not None else None, **reference)
    except BaseException:
        tracker.abort()
        raise
    tracker.finish(study, summary={"trial": result.best_trial_number, "val_psnr": result.best_value,
                                   "architecture": result.best_architecture, "lr": result.best_lr,
                                   **{k: str(v) for k, v in result.best_params.items() if k != "lr"},
                                   **({"ms_per_mpx": result.best_ms_per_mpx}
                                      if result.best_ms_per_mpx is not None else {}),
                                   "trials_done_here": counter.n_done,
                                   "trials_finished_in_study": result.n_trials_finished},
                   multi_objective=objective is Objective.QUALITY_LATENCY,
                   target_names=DISTILL_TARGET_NAMES if teacher is not None else TARGET_NAMES, result=result)
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
                 train_data, val_data, teacher=None, bench=None) -> None:
        self.teacher, self.bench = teacher, bench
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
        warm = ""
        if self.teacher is not None:
            from stemreg.tuning.distill import warm_start

            # the teacher's own shape starts from its weights, a narrower member from a pruned copy of them
            warm = warm_start(model, self.teacher)
        trial.set_user_attr("warm_start", warm)
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
            "n_parameters": sum(p.numel() for p in model.parameters()), "warm_start": warm,
            **({"teacher": self.teacher.uri} if self.teacher is not None else {})})
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
            result = train(model, config, train_data=trial_data(self.train_data), val_data=self.val_data,
                           on_epoch=on_epoch, progress=False)
        except optuna.TrialPruned:
            self.tracker.end_trial(run_id, "pruned")
            raise
        except BaseException:
            self.tracker.end_trial(run_id, "failed")
            raise
        best_psnr = float(result.best_val_psnr)
        final = {"best_val_psnr": best_psnr, "train_seconds": float(result.seconds)}
        if self.bench is not None:
            # A student is judged on the benchmark slice, as the teacher is, and kept for registration.
            best_psnr = self.bench.psnr(result.model)
            final["bench_psnr"] = best_psnr
            self.tracker.log_student(run_id, result.model, arch)
        if self.objective is Objective.QUALITY:
            self.tracker.end_trial(run_id, "complete", final)
            return best_psnr
        latency = ms_per_mpx(result.model, image_px=b.latency_image_px)
        trial.set_user_attr("ms_per_mpx", latency)
        self.tracker.end_trial(run_id, "complete", {**final, "ms_per_mpx": latency})
        return best_psnr, latency
