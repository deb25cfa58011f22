"""The main job: per condition, tune (optional), train, register, score, promote if better.

`stemreg pipeline` and MLproject's `main` entry point run :func:`run_pipeline`.
Everything lands in one parent MLflow run (the `mlflow run` run when there is
one) with a nested run per training and per study.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from stemreg.platform.errors import BadInput

log = logging.getLogger(__name__)

#: Quick defaults: the whole default job (four conditions) fits the 10-15 min budget on 2 CPU cores,
#: and the low-dose champion gains >= 6 dB PSNR over the noisy input (see the report / benchmarks).
QUICK_TRAIN: dict[str, Any] = {"epochs": 6, "steps_per_epoch": 40, "batch_size": 8, "patch_px": 64, "lr": 2e-3}
QUICK_N_TRAIN = 24
QUICK_N_VAL = 4
#: Architecture of the quick job: the seed's 8-layer reverse hourglass, narrower so CPU training is quick.
QUICK_ARCHITECTURE: dict[str, Any] = {"kind": "reverse-hourglass", "depth": 8,
                                      "widths": [16, 32, 48, 64, 48, 32, 16], "kernel_size": 3}


@dataclass
class ConditionOutcome:
    """What the pipeline did for one condition."""

    condition: str
    version: str | None = None
    alias: str | None = None
    promoted: bool = False
    champion: str | None = None
    benchmark_psnr: float | None = None
    noisy_psnr: float | None = None
    benchmark_ssim: float | None = None
    ms_per_mpx: float | None = None
    architecture: dict[str, Any] | None = None
    tuned: dict[str, Any] | None = None
    note: str = ""
    seconds: float = 0.0
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineResult:
    """All conditions' outcomes and the parent run."""

    run_id: str
    outcomes: list[ConditionOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seconds": self.seconds, "outcomes": [o.as_dict() for o in self.outcomes]}


def all_condition_names() -> list[str]:
    """Names of the built-in conditions."""
    from stemreg.acquisition import list_conditions

    return [c if isinstance(c, str) else c.name for c in list_conditions()]


def _tune(cond, trials: int, *, timeout_s: float | None, storage: str | None, budget: dict[str, Any] | None):
    from stemreg.tuning import run_study

    kwargs: dict[str, Any] = {"n_trials": trials, "timeout_s": timeout_s, "storage": storage}
    if budget:
        kwargs["budget"] = budget
    return run_study(cond, **kwargs)


def run_condition(condition: Any, *, trials: int = 0, train: dict[str, Any] | None = None,
                  arch: dict[str, Any] | None = None, n_train: int = QUICK_N_TRAIN, n_val: int = QUICK_N_VAL,
                  seed: int = 0, tune_timeout_s: float | None = None, storage: str | None = None,
                  tune_budget: dict[str, Any] | None = None, size_px: int | None = None,
                  progress: bool = True) -> ConditionOutcome:
    """Tune (when `trials` > 0), train, register, score and gate-promote one condition."""
    from stemreg.platform import registry
    from stemreg.platform.benchmark import as_condition
    from stemreg.platform.training_run import train_and_register

    started = time.perf_counter()
    cond = as_condition(condition)
    outcome = ConditionOutcome(condition=cond.name)
    architecture = dict(arch or QUICK_ARCHITECTURE)
    if trials > 0:
        study = _tune(cond, trials, timeout_s=tune_timeout_s, storage=storage, budget=tune_budget)
        outcome.tuned = {"study": study.study_name, "best_value": study.best_value,
                         "trials": study.n_trials_done, "best_params": study.best_params}
        if study.best_architecture:
            architecture = dict(study.best_architecture)
    result = train_and_register(cond, arch=architecture, config={**QUICK_TRAIN, **(train or {})},
                                n_train=n_train, n_val=n_val, seed=seed, nested=True,
                                run_name=f"train-{cond.name}", alias_policy="auto", progress=progress,
                                extra_tags={"stemreg.pipeline": "1"}, size_px=size_px)
    outcome.version, outcome.alias, outcome.run_id = result.version, result.alias, result.run_id
    outcome.architecture = result.architecture
    bench = result.benchmark
    outcome.benchmark_psnr, outcome.noisy_psnr = bench.get("psnr"), bench.get("noisy_psnr")
    outcome.benchmark_ssim, outcome.ms_per_mpx = bench.get("ssim"), bench.get("ms_per_mpx")
    if result.alias == registry.CHAMPION:
        outcome.promoted, outcome.note = True, "first version: champion"
    elif result.alias == registry.CHALLENGER:
        try:
            promotion = registry.promote(cond, result.version, reason="pipeline: beats the champion")
            outcome.promoted = True
            outcome.note = (f"promoted over v{promotion.from_version} "
                            f"({promotion.to_psnr:.2f} > {promotion.from_psnr:.2f} dB)")
        except registry.PromotionRefused as refused:
            outcome.note = str(refused)
    outcome.champion = str(registry.resolve(cond, registry.CHAMPION).version)
    outcome.seconds = time.perf_counter() - started
    return outcome


def run_pipeline(conditions: list[str] | None = None, *, trials: int = 0, train: dict[str, Any] | None = None,
                 arch: dict[str, Any] | None = None, n_train: int = QUICK_N_TRAIN, n_val: int = QUICK_N_VAL,
                 seed: int = 0, tune_timeout_s: float | None = None, storage: str | None = None,
                 tune_budget: dict[str, Any] | None = None, size_px: int | None = None,
                 progress: bool = True) -> PipelineResult:
    """The main job over several conditions, in one parent MLflow run.

    Parameters
    ----------
    conditions
        Condition names (default: all built-in conditions).
    trials
        Optuna trials per condition (0: no search, the quick architecture).
    train
        Overrides of the quick training config (`epochs`, `steps_per_epoch`, ...).
    arch
        Architecture when not tuning (default :data:`QUICK_ARCHITECTURE`).
    n_train, n_val, seed
        Simulated data per condition.
    tune_timeout_s, storage, tune_budget
        Passed to `stemreg.tuning.run_study`.
    size_px
        Edge of the simulated training images (default: each condition's own).
    progress
        Show tqdm progress.

    Returns
    -------
    PipelineResult
    """
    import mlflow

    from stemreg.platform.benchmark import as_condition
    from stemreg.platform.store import configure

    started = time.perf_counter()
    names = list(conditions) if conditions else all_condition_names()
    if not names:
        raise BadInput("no conditions to run")
    resolved = [as_condition(name) for name in names]  # fail on a bad name before any work
    if trials < 0:
        raise BadInput(f"--trials must be >= 0 (got {trials})")
    configure()
    with mlflow.start_run(run_name="pipeline", tags={"stemreg.kind": "pipeline"}) as run:
        mlflow.log_params({"conditions": ",".join(c.name for c in resolved), "trials": trials,
                           "n_train": n_train, "n_val": n_val, "seed": seed,
                           "train": json.dumps({**QUICK_TRAIN, **(train or {})}),
                           "architecture": json.dumps(arch or QUICK_ARCHITECTURE)})
        out = PipelineResult(run_id=run.info.run_id)
        for cond in resolved:
            outcome = run_condition(cond, trials=trials, train=train, arch=arch, n_train=n_train, n_val=n_val,
                                    seed=seed, tune_timeout_s=tune_timeout_s, storage=storage,
                                    tune_budget=tune_budget, size_px=size_px, progress=progress)
            out.outcomes.append(outcome)
            if outcome.benchmark_psnr is not None:
                mlflow.log_metrics({f"{cond.name}.benchmark_psnr": outcome.benchmark_psnr,
                                    f"{cond.name}.noisy_psnr": outcome.noisy_psnr or 0.0,
                                    f"{cond.name}.seconds": outcome.seconds})
            log.info("%s: %s", cond.name, outcome.note)
        out.seconds = time.perf_counter() - started
        mlflow.log_dict(out.as_dict(), "pipeline_summary.json")
    return out
