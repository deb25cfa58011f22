"""The main job: per condition, tune (optional), train, register, score, promote if better.

`stemreg pipeline` and MLproject's `main` entry point run :func:`run_pipeline`.
Everything lands in one parent MLflow run (the `mlflow run` run when there is
one) with a nested run per training and per study.

Retraining from a shared base. By default the base is the pretrained network
that ships with the package (`stemreg.models.pretrained`): it is registered
once as a version of `stem-denoiser-low-dose` (tagged `pretrained`, with its
card), and every condition, low-dose included, is fine-tuned from it on
:data:`~stemreg.models.config.FINE_TUNE_BUDGET` (fresh noise every step over the
condition's range). With `from_scratch` (or when the package holds no base)
the base condition (low-dose) is trained first, and every other condition whose
architecture matches is fine-tuned from its champion for a fraction of the
epochs. With a search, the base's architecture is tried first; a different
winner trains from scratch. The version records its parent (`parent` tag).
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import mlflow
import optuna
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from tqdm.auto import tqdm

from stemreg.acquisition import list_conditions
from stemreg.models.config import (FINE_TUNE_BUDGET, FINE_TUNE_EPOCH_FRACTION, FINE_TUNE_LR_FACTOR, QUICK_BUDGET,
                                   ArchitectureName, architecture)
from stemreg.models.pretrained import available as pretrained_available
from stemreg.platform import registry
from stemreg.platform.errors import BadInputError
from stemreg.platform.plan import describe_pipeline
from stemreg.platform.registry import as_condition
from stemreg.platform.store import configure
from stemreg.platform.training import canonical_architecture, train_and_register
from stemreg.platform.training.pretrained import register_pretrained
from stemreg.tuning import SearchBudget, default_study_name, run_study
from stemreg.tuning.budget import PIPELINE_BUDGET_FIELDS
from stemreg.platform.training.students import register_front, teacher_for
from stemreg.tuning.space import distill_points

log = logging.getLogger(__name__)

#: The main job's defaults, written once in stemreg.models.config / stemreg.tuning.budget.
QUICK_TRAIN: dict[str, Any] = QUICK_BUDGET.train_options()
QUICK_N_TRAIN = QUICK_BUDGET.n_train
QUICK_N_VAL = QUICK_BUDGET.n_val
QUICK_ARCHITECTURE: dict[str, Any] = architecture(ArchitectureName.QUICK)
QUICK_TUNE_BUDGET: dict[str, Any] = dict(PIPELINE_BUDGET_FIELDS)
#: The condition the others may be fine-tuned from.
BASE_CONDITION = "low-dose"
#: Suffix of the main job's study names: its trials' values are comparable only to each other
#: (same budget), not to those of a `stemreg tune` study with its own budget.
STUDY_SUFFIX = "pipeline"


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
    fast: str | None = None
    parent: str | None = None
    note: str = ""
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
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

    return [c if isinstance(c, str) else c.name for c in list_conditions()]


@dataclass(frozen=True)
class SharedBase:
    """A registered model other conditions may be fine-tuned from.

    Attributes
    ----------
    uri
        `models:/stem-denoiser-<condition>/<version>` (a fixed version, so the
        `parent` tag keeps pointing at the weights actually used).
    architecture
        Its canonical architecture dict.
    params
        Its search-space parameters (`depth`, `base_width`, `growth`,
        `kernel_size`, `lr`) when it came out of a search, else None.
    """

    uri: str
    architecture: dict[str, Any]
    params: dict[str, Any] | None = None
    pretrained: bool = False


def shared_base(condition: str = BASE_CONDITION) -> SharedBase | None:
    """The champion of `condition` as a base for the others, or None when there is none."""

    try:
        version = registry.resolve(condition, registry.CHAMPION)
    except registry.NotRegisteredError:
        return None
    try:
        architecture = json.loads(version.tags["architecture"])
    except (KeyError, json.JSONDecodeError):
        return None  # a version registered by hand without its architecture tag: no base
    params = version.tags.get("tuning.params")
    return SharedBase(uri=f"models:/{registry.model_name(condition)}/{version.version}",
                      architecture=architecture, params=json.loads(params) if params else None)


def pretrained_base(progress: bool = False) -> SharedBase | None:
    """The shipped pretrained base, registered (once) as a version of the base condition; None without one."""
    if not pretrained_available():
        return None
    version, arch, _ = register_pretrained(BASE_CONDITION, progress=progress)
    return SharedBase(uri=f"models:/{registry.model_name(BASE_CONDITION)}/{version}",
                      architecture=canonical_architecture(arch), pretrained=True)


def sampler_seed(seed: int, condition_name: str) -> int:
    """The main job's TPE seed for one condition: repeatable, and different for each condition."""
    return (seed + zlib.crc32(condition_name.encode())) % 2**31


def _distill(cond, trials: int, *, timeout_s: float | None, storage: str | None,
             budget: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    """Students of the condition's champion: the search, its front registered, the challenger gated."""
    teacher = teacher_for(cond)
    search_budget = SearchBudget(**{**QUICK_TUNE_BUDGET, **(budget or {})})
    # One study per teacher: the students' figures compare only with those of the same teacher.
    teacher_tag = teacher.uri.rsplit("/", 1)[-1].replace(":", "-")
    # One worker here, so a seeded sampler makes the main job repeatable (`stemreg tune` leaves
    # it unseeded: workers sharing a study must not all draw the same random start-up trials).
    # The seed differs per condition: one seed for all made every condition's first TPE draw the same
    # architecture (pruned by FLOPs in each, a wasted trial).
    study = run_study(cond, n_trials=trials, timeout_s=timeout_s, storage=storage,
                      study_name=f"{default_study_name(cond)}-{STUDY_SUFFIX}-v{teacher_tag}", budget=search_budget,
                      objective="quality-latency", sampler=optuna.samplers.TPESampler(seed=sampler_seed(search_budget.seed, cond.name)),
                      # the fast student first, then a pruned copy of the teacher (a copy of its own
                      # shape would only be the champion again)
                      enqueue=distill_points(cond, search_budget.min_receptive_cells, teacher.architecture,
                                             copy=False),
                      teacher=teacher, progress=progress)
    front = register_front(cond, study, progress=False)
    out = {"study": study.study_name, "teacher": teacher.uri, "trials": study.n_trials_done,
           "teacher_psnr": study.teacher_psnr, "teacher_ms_per_mpx": study.teacher_ms_per_mpx,
           "front": [{k: row[k] for k in ("trial", "val_psnr", "ms_per_mpx", "kflop_per_px")}
                     for row in study.trials if row["state"] == "complete"],
           "parent_run_id": study.parent_run_id, "challenger": None, "fast": None, "notes": list(front["notes"])}
    challenger = front["challenger"]
    if challenger is not None:
        out["challenger"] = {"version": challenger["version"], "trial": challenger["trial"],
                             "psnr": (challenger.get("benchmark") or {}).get("psnr"), "promoted": False}
        if challenger["alias"] == registry.CHALLENGER:
            try:
                promotion = registry.promote(cond, challenger["version"], reason="pipeline: student beats the champion")
                out["challenger"]["promoted"] = True
                out["notes"].append(f"student v{challenger['version']} promoted over v{promotion.from_version}")
            except registry.PromotionRefused as refused:
                out["notes"].append(f"student v{challenger['version']} stays challenger: {refused}")
    if front["fast"] is not None:
        fast = front["fast"]
        out["fast"] = {"version": fast["version"], "trial": fast["trial"],
                       "psnr": (fast.get("benchmark") or {}).get("psnr"),
                       "ms_per_mpx": (fast.get("benchmark") or {}).get("ms_per_mpx")}
    return out


def run_condition(condition: Any, *, trials: int = 0, train: dict[str, Any] | None = None,
                  arch: dict[str, Any] | None = None, n_train: int = QUICK_N_TRAIN, n_val: int = QUICK_N_VAL,
                  seed: int = 0, tune_timeout_s: float | None = None, storage: str | None = None,
                  tune_budget: dict[str, Any] | None = None, size_px: int | None = None,
                  base: SharedBase | None = None, progress: bool = True) -> ConditionOutcome:
    """Train, register, score and gate-promote one condition; then (`trials` > 0) distil students of its
    champion, register the front's best (challenger, gated) and fastest within 0.5 dB (alias `fast`).

    With a `base` whose architecture is the one chosen, the condition is
    fine-tuned from the base's weights for :data:`FINE_TUNE_EPOCH_FRACTION` of
    the epochs at :data:`FINE_TUNE_LR_FACTOR` of the learning rate; otherwise
    it is trained from scratch. Other parameters as in
    :func:`run_pipeline`.
    """

    started = time.perf_counter()
    cond = as_condition(condition)
    outcome = ConditionOutcome(condition=cond.name)
    architecture = canonical_architecture(dict(arch or QUICK_ARCHITECTURE))
    config: dict[str, Any] = dict(QUICK_TRAIN)
    tags = {"stemreg.pipeline": "1"}
    config.update(train or {})
    if base is not None and base.pretrained:
        architecture = base.architecture
    init_from = base.uri if base is not None and base.architecture == architecture else None
    if init_from and base.pretrained:
        config = {**FINE_TUNE_BUDGET.train_options(), **(train or {})}
        n_train, n_val = FINE_TUNE_BUDGET.n_train, FINE_TUNE_BUDGET.n_val
    elif init_from:
        config["epochs"] = max(1, math.ceil(config["epochs"] * FINE_TUNE_EPOCH_FRACTION))
        config["lr"] = config["lr"] * FINE_TUNE_LR_FACTOR
    outcome.parent = init_from
    result = train_and_register(cond, arch=None if init_from else architecture, config=config,
                                n_train=n_train, n_val=n_val, seed=seed, init_from=init_from, nested=True,
                                run_name=f"train-{cond.name}", alias_policy="auto", progress=progress,
                                extra_tags=tags, size_px=size_px)
    outcome.phase_seconds["train"] = float(result.metrics.get("train_seconds", 0.0))
    outcome.phase_seconds["data_log_register_score"] = result.seconds - outcome.phase_seconds["train"]
    promoting = time.perf_counter()
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
    if init_from:
        outcome.note += f"; fine-tuned from {init_from}"
    outcome.phase_seconds["promote"] = time.perf_counter() - promoting
    if trials > 0:
        distilling = time.perf_counter()
        outcome.tuned = _distill(cond, trials, timeout_s=tune_timeout_s, storage=storage, budget=tune_budget,
                                 progress=progress)
        outcome.fast = (outcome.tuned["fast"] or {}).get("version")
        outcome.note += "; students: " + ("; ".join(outcome.tuned["notes"]) or "registered")
        outcome.phase_seconds["students"] = time.perf_counter() - distilling
    outcome.champion = str(registry.resolve(cond, registry.CHAMPION).version)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _description(conditions: list[Any], trials: int, share_base: bool, from_scratch: bool = False) -> str:
    """The pipeline run's description in the MLflow UI: what it does, in one paragraph."""
    names = ", ".join(c.name for c in conditions)
    search = "the quick default architecture trained"
    if share_base and not from_scratch and pretrained_available():
        search = (f"{search}; the shipped pretrained base is registered once as a `stem-denoiser-{BASE_CONDITION}` "
                  f"version and every condition is fine-tuned from it (`parent` version tag)")
        shared = ""
    else:
        shared = (f" Conditions other than {BASE_CONDITION} fine-tune from its champion when they end up with its "
                  f"architecture (`parent` version tag)." if share_base else "")
    # Markdown in the UI: names with <...> go in backticks or they vanish as HTML.
    return (f"stemreg main job over {names}. Per condition: {search}, registered as "
            f"`stem-denoiser-<condition>`, scored on the frozen benchmark set and promoted to champion "
            f"only if it beats the current one.{shared}"
            + (f" Then an Optuna search of {trials} distilled student(s) of the champion per condition (one nested "
               f"study run each, trials nested under it): the best-quality student is registered as challenger and "
               f"gated, the fastest within 0.5 dB of the champion gets alias `fast`." if trials else "")
            + " Metrics `<condition>.benchmark_psnr` etc. below; "
            f"the nested runs hold each condition's training and search.")


def run_pipeline(conditions: list[str] | None = None, *, trials: int = 0, train: dict[str, Any] | None = None,
                 arch: dict[str, Any] | None = None, n_train: int = QUICK_N_TRAIN, n_val: int = QUICK_N_VAL,
                 seed: int = 0, tune_timeout_s: float | None = None, storage: str | None = None,
                 tune_budget: dict[str, Any] | None = None, size_px: int | None = None,
                 share_base: bool = True, from_scratch: bool = False, progress: bool = True) -> PipelineResult:
    """The main job over several conditions, in one parent MLflow run.

    Parameters
    ----------
    conditions
        Condition names (default: all built-in conditions).
    trials
        Distilled students per condition (0: no search), each on :data:`QUICK_TUNE_BUDGET`: after the
        condition's champion is decided, an Optuna quality-latency search of students of it
        (:mod:`stemreg.tuning.distill`); the first tries the fast student of the space.
    train
        Overrides of the quick training config (`epochs`, `steps_per_epoch`, ...).
    arch
        Architecture when not tuning (default :data:`QUICK_ARCHITECTURE`).
    n_train, n_val, seed
        Simulated data per condition.
    tune_timeout_s, storage
        Passed to `stemreg.tuning.run_study` (seconds per study at most; Optuna storage URL).
    tune_budget
        Overrides of :data:`QUICK_TUNE_BUDGET` (`stemreg.tuning.SearchBudget` fields).
    share_base
        Fine-tune conditions from a shared base: the shipped pretrained base (registered once), or
        with ``from_scratch`` the :data:`BASE_CONDITION` champion trained first, when the
        architectures match.
    from_scratch
        Do not start from the shipped pretrained base.
    size_px
        Edge of the simulated training images (default: each condition's own).
    progress
        Show tqdm progress.

    Returns
    -------
    PipelineResult
    """

    started = time.perf_counter()
    names = list(conditions) if conditions else all_condition_names()
    if not names:
        raise BadInputError("no conditions to run")
    resolved = [as_condition(name) for name in names]  # fail on a bad name before any work
    if trials < 0:
        raise BadInputError(f"--trials must be >= 0 (got {trials})")
    if tune_budget:
        try:
            SearchBudget(**{**QUICK_TUNE_BUDGET, **tune_budget})
        except Exception as exc:  # pydantic's ValidationError names the bad fields
            raise BadInputError(f"bad tuning budget: {exc}") from None
    # The base condition first, so the others can start from its champion.
    resolved.sort(key=lambda c: c.name != BASE_CONDITION)
    configure()
    with mlflow.start_run(run_name="pipeline", tags={"stemreg.kind": "pipeline"}) as run:
        # Prefixed: under `mlflow run` this is the project's run, which already holds the entry
        # point's parameters as given (conditions=all, ...); MLflow refuses to change a param.
        params = {"conditions": ",".join(c.name for c in resolved), "trials": trials,
                  "n_train": n_train, "n_val": n_val, "seed": seed,
                  "train": json.dumps({**QUICK_TRAIN, **(train or {})}),
                  "architecture": json.dumps(arch or QUICK_ARCHITECTURE),
                  "tune_budget": json.dumps({**QUICK_TUNE_BUDGET, **(tune_budget or {})}),
                  "tune_timeout_s": tune_timeout_s, "share_base": share_base, "from_scratch": from_scratch}
        mlflow.log_params({f"pipeline.{key}": value for key, value in params.items()})
        mlflow.set_tag(MLFLOW_RUN_NOTE, _description(resolved, trials, share_base, from_scratch))
        out = PipelineResult(run_id=run.info.run_id)
        pretrained = pretrained_base(progress) if share_base and not from_scratch else None
        if pretrained is not None:
            mlflow.set_tag("pretrained_base", pretrained.uri)
        if progress:
            plan_config = {**(FINE_TUNE_BUDGET.train_options() if pretrained else QUICK_TRAIN), **(train or {})}
            plan_arch = pretrained.architecture if pretrained else (arch or QUICK_ARCHITECTURE)
            tqdm.write(describe_pipeline([c.name for c in resolved], arch=plan_arch, config=plan_config,
                                         pretrained=pretrained is not None, trials=trials), file=sys.stderr)
        for index, cond in enumerate(resolved, 1):
            if progress:
                tqdm.write(f"[{index}/{len(resolved)}] {cond.name}", file=sys.stderr)
            if pretrained is not None:
                base = pretrained
            else:
                base = shared_base() if share_base and cond.name != BASE_CONDITION else None
            outcome = run_condition(cond, trials=trials, train=train, arch=arch, n_train=n_train, n_val=n_val,
                                    seed=seed, tune_timeout_s=tune_timeout_s, storage=storage,
                                    tune_budget=tune_budget, size_px=size_px, base=base, progress=progress)
            out.outcomes.append(outcome)
            if outcome.benchmark_psnr is not None:
                mlflow.log_metrics({f"{cond.name}.benchmark_psnr": outcome.benchmark_psnr,
                                    f"{cond.name}.noisy_psnr": outcome.noisy_psnr or 0.0,
                                    f"{cond.name}.seconds": outcome.seconds,
                                    **{f"{cond.name}.{phase}_seconds": value
                                       for phase, value in outcome.phase_seconds.items()}})
            log.info("%s: %s [%s]", cond.name, outcome.note,
                     ", ".join(f"{phase} {value:.0f} s" for phase, value in outcome.phase_seconds.items()))
        out.seconds = time.perf_counter() - started
        mlflow.log_dict(out.as_dict(), "pipeline_summary.json")
    return out
