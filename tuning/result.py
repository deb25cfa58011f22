"""What a search found: its objective, its result, and how the best trial is chosen."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stemreg.errors import StemregError
from stemreg.tuning.distill import WARM_COPY

if TYPE_CHECKING:
    import optuna

#: In a quality-latency search the chosen trial is the fastest within this many dB of the best.
PSNR_TOLERANCE_DB = 0.5
TARGET_NAMES = ["val PSNR (dB)", "inference ms per megapixel"]
DISTILL_TARGET_NAMES = ["benchmark PSNR (dB, mean over bins)", "inference ms per megapixel"]


class Objective(str, enum.Enum):
    """What a search optimises."""

    QUALITY = "quality"
    QUALITY_LATENCY = "quality-latency"


class NoCompletedTrialError(StemregError, RuntimeError):
    """The study has no complete trial yet, so there is no best architecture."""


@dataclass
class StudyResult:
    """What one :func:`~stemreg.tuning.search.run_study` call found (the best over the whole study, all workers).

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
    n_trials_finished : int
        Finished trials (:data:`FINISHED_STATES`) of the whole study when this worker stopped.
    best_trial_number : int
    best_lr : float
    best_ms_per_mpx : float or None
        Measured latency of the best trial (quality-latency searches only).
    pareto_front : list of dict
        ``{"trial", "val_psnr", "ms_per_mpx"}`` (quality-latency only).
    objective : str
    trials : list of dict
        Every trial of the study: ``trial``, ``state``, ``val_psnr``, ``ms_per_mpx``, ``kflop_per_px``,
        ``receptive_field_px``, ``architecture``, ``run_id`` (None where a trial never measured it).
    teacher_uri, teacher_psnr, teacher_ms_per_mpx : optional
        A distillation search's teacher and its figures on the same benchmark slice and timer.
    quality_trial : int or None
        The complete trial of highest PSNR (the ``challenger`` of a distillation search).
    fast_trial : int or None
        The fastest complete trial within :data:`PSNR_TOLERANCE_DB` of the teacher (distillation
        search with latency measured; the ``fast`` alias), a warm-started copy of the teacher's shape
        excepted; None when no other student comes that close.
    """

    best_params: dict[str, Any]
    best_architecture: dict[str, Any]
    best_value: float
    study_name: str
    parent_run_id: str
    n_trials_done: int
    storage: str = ""
    n_trials_finished: int = 0
    best_trial_number: int = -1
    best_lr: float = float("nan")
    best_ms_per_mpx: float | None = None
    pareto_front: list[dict[str, Any]] = field(default_factory=list)
    objective: str = Objective.QUALITY.value
    trials: list[dict[str, Any]] = field(default_factory=list)
    teacher_uri: str | None = None
    teacher_psnr: float | None = None
    teacher_ms_per_mpx: float | None = None
    quality_trial: int | None = None
    fast_trial: int | None = None

    def trial(self, number: int | None) -> dict[str, Any] | None:
        """The row of trial ``number`` (None for None or an unknown number)."""
        return next((row for row in self.trials if row["trial"] == number), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for ``stemreg tune --json``)."""
        from dataclasses import asdict

        return asdict(self)


def study_result(study: "optuna.Study", objective: Objective, **common: Any) -> StudyResult:
    """The study's best trial (quality: highest PSNR; quality-latency: the fastest within PSNR_TOLERANCE_DB of
    the best PSNR on the Pareto front) as a :class:`StudyResult`; ``common`` fills the other fields."""
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
    rows = trial_rows(study)
    done = [r for r in rows if r["state"] == "complete" and r["val_psnr"] is not None]
    quality = max(done, key=lambda r: r["val_psnr"])["trial"] if done else None
    fast = None
    teacher_psnr = common.get("teacher_psnr")
    if teacher_psnr is not None:
        # A student started from a copy of the teacher has its shape: the champion again, not a faster model
        # (a pruned copy is narrower, hence faster: it may be the fast one).
        close = [r for r in done if r["val_psnr"] >= teacher_psnr - PSNR_TOLERANCE_DB and r["ms_per_mpx"] is not None
                 and r["warm_start"] not in (True, WARM_COPY)]
        fast = min(close, key=lambda r: r["ms_per_mpx"])["trial"] if close else None
    return StudyResult(
        trials=rows, quality_trial=quality, fast_trial=fast,
        best_params=dict(best.params), best_architecture=dict(best.user_attrs["architecture"]),
        best_value=float(best.values[0]), best_trial_number=best.number, best_lr=float(best.params["lr"]),
        best_ms_per_mpx=(float(best.values[1]) if objective is Objective.QUALITY_LATENCY else None),
        pareto_front=pareto, objective=objective.value, **common)


def trial_rows(study: "optuna.Study") -> list[dict[str, Any]]:
    """One row per trial of the study, for summaries: what it was and what it measured."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        flops = t.user_attrs.get("flops_per_pixel")
        values = t.values or []
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "val_psnr": float(values[0]) if values else None,
                     "ms_per_mpx": (float(values[1]) if len(values) > 1 else t.user_attrs.get("ms_per_mpx")),
                     "kflop_per_px": round(flops / 1e3, 1) if flops is not None else None,
                     "receptive_field_px": t.user_attrs.get("receptive_field_px"),
                     "architecture": t.user_attrs.get("architecture"),
                     "run_id": t.user_attrs.get("mlflow_run_id"),
                     # "copy", "pruned" or "" (True/False in studies from before pruned warm starts)
                     "warm_start": t.user_attrs.get("warm_start", "")})
    return rows
