"""stemreg CLI commands (tune): search a condition's architecture, retrain the best, register it.

Heavy imports (torch, optuna, mlflow) live inside the command so that
`stemreg --help` stays fast.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from stemreg.platform.cli.common import (command, load_condition, load_targets_option, target_fraction_option,
                                         targets_option)
from stemreg.platform.errors import BadInputError
from stemreg.tuning.budget import SEARCH_BUDGETS

log = logging.getLogger(__name__)

#: The retrain of the winner gets this many times the trials' epochs, steps and images.
#: Defaults of a `stemreg tune` trial: the named search budget, written once in stemreg.tuning.budget.
_TUNE = SEARCH_BUDGETS["tune"]
RETRAIN_EPOCH_FACTOR = 3
RETRAIN_DATA_FACTOR = 2


def _parent_architecture(model_uri: str) -> dict:
    """Fail fast (before the search) when --from does not resolve."""
    from stemreg.platform.training import load_parent

    _, arch = load_parent(model_uri, None)
    return arch


@command("tune")
@click.option("--condition", "condition_name", required=True, metavar="NAME",
              help="Acquisition condition: a built-in name (see `stemreg conditions`) or a YAML file.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Finished trials the study holds when this worker stops (default 10 unless --timeout is "
                   "given). Finished means complete or pruned, by any worker or earlier run; failed trials do "
                   "not count. A rerun after an interruption, or another worker on the same study, runs only "
                   "the missing ones; a study that holds them already starts none.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop starting new trials after S seconds (alone: trials until then, however many the "
                   "study holds).")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna study database (SQLAlchemy URL). Default sqlite:///optuna.db or "
                   "$STEMREG_OPTUNA_STORAGE; a postgresql+psycopg2:// URL lets many workers share one study.")
@click.option("--study", "study_name", default=None, metavar="NAME",
              help="Study name (default <condition>-<condition hash>). Workers with the same name share it.")
@click.option("--objective", type=click.Choice(["quality", "quality-latency"]), default=None,
              help="Maximise PSNR (with pruning), or PSNR vs ms per megapixel (default: quality-latency when "
                   "distilling, else quality).")
@click.option("--distill/--no-distill", default=True, show_default=True,
              help="Every trial a student of the condition's champion (with nothing registered: the shipped "
                   "pretrained base), trained on the condition's stream against the teacher's output plus the "
                   "clean target and scored on a slice of its benchmark; the best-quality student is registered "
                   "(challenger) and the fastest within 0.5 dB of the teacher gets alias `fast`. "
                   "--no-distill: trials train from scratch and the best is retrained.")
@click.option("--epochs", type=click.IntRange(min=1), default=_TUNE.epochs, show_default=True,
              help="Epochs per trial.")
@click.option("--steps", "steps_per_epoch", type=click.IntRange(min=1), default=_TUNE.steps_per_epoch,
              show_default=True,
              help="Optimiser steps per epoch.")
@click.option("--n-train", type=click.IntRange(min=1), default=_TUNE.n_train, show_default=True,
              help="Simulated training images per trial (with --targets: the simulated fields they mix with).")
@click.option("--n-val", type=click.IntRange(min=1), default=_TUNE.n_val, show_default=True,
              help="Simulated validation images per trial.")
@click.option("--image-px", type=click.IntRange(min=16), default=_TUNE.image_px, show_default=True,
              help="Edge of the simulated images of the search.")
@click.option("--patch-px", type=click.IntRange(min=8), default=_TUNE.patch_px, show_default=True,
              help="Edge of the training patches.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_TUNE.batch_size, show_default=True)
@click.option("--retrain-epochs", type=click.IntRange(min=1), default=None,
              help=f"Epochs of the best architecture's retrain (default {RETRAIN_EPOCH_FACTOR}x --epochs).")
@click.option("--no-register", is_flag=True, help="Only search; do not retrain and register the best.")
@click.option("--from", "init_from", default=None, metavar="MODEL_URI",
              help="Fine-tune the retrain from this model (e.g. models:/stem-denoiser-low-dose@champion) "
                   "when its architecture matches the best one; otherwise the retrain starts from scratch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the trials' training.")
@click.option("--min-receptive-cells", type=click.FloatRange(min=0), default=_TUNE.min_receptive_cells,
              show_default=True, help="Prune, before training, every architecture whose receptive field spans "
                                      "fewer unit cells at the finest sampling of the condition (0: no rule).")
@targets_option
@target_fraction_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def tune_command(condition_name: str, trials: int | None, timeout_s: float | None, storage: str | None,
                 study_name: str | None, objective: str | None, distill: bool, epochs: int, steps_per_epoch: int, n_train: int,
                 n_val: int, image_px: int, patch_px: int, batch_size: int, retrain_epochs: int | None,
                 no_register: bool, init_from: str | None, seed: int, min_receptive_cells: float,
                 targets_dir: Path | None, target_fraction: float, as_json: bool, progress: bool) -> None:
    """Search the reverse-hourglass architecture for one condition with Optuna.

    Every trial is an MLflow run nested under this worker's parent run. Then
    (unless --no-register) the best architecture is retrained with a larger
    budget and registered as a new version of stem-denoiser-<condition> with
    alias `challenger`. Run the same command in several shells (or machines,
    with a PostgreSQL --storage) to search one study in parallel; run it again
    after an interruption to resume: --trials N counts the study's finished
    (complete or pruned) trials, so the workers together stop at N (a few
    over when several finish at once) and a rerun runs only the missing ones.
    A study that already holds N starts no trial; its best is still retrained
    and registered unless --no-register.

    With --targets DIR the trials (and the retrain) train, as `stemreg train
    --targets` does, on your high-dose images degraded on the fly under the
    condition, mixed with simulated fields (--target-fraction of the patches);
    validation stays on simulated images. The parent run records the files
    (tags lab_targets, training_data; artifact lab_targets.json).
    """
    from stemreg.tuning import SearchBudget, StorageError, check_storage_url, default_storage

    if patch_px > image_px:
        raise BadInputError(f"--patch-px ({patch_px}) must not exceed --image-px ({image_px})")
    if trials is None and timeout_s is None:
        trials = 10
    condition = load_condition(condition_name)
    targets = load_targets_option(targets_dir, patch_px=patch_px)  # before anything is stored
    target_fraction = target_fraction if targets else 0.0
    # An empty --storage is a mistake to report, not a reason to fall back to the default.
    storage_url = storage if storage is not None else default_storage()
    try:
        check_storage_url(storage_url)
    except StorageError as exc:
        raise BadInputError(f"--storage: {exc}") from None
    budget = SearchBudget(epochs=epochs, steps_per_epoch=steps_per_epoch, n_train=n_train, n_val=n_val,
                          image_px=image_px, patch_px=patch_px, batch_size=batch_size, seed=seed,
                          min_receptive_cells=min_receptive_cells or None)

    from stemreg.platform.store import configure

    configure()
    parent_arch = _parent_architecture(init_from) if (init_from and not no_register) else None
    teacher = None
    if distill:
        from stemreg.platform.training.students import teacher_for

        teacher = teacher_for(condition)
        if teacher is None:
            raise click.ClickException(f"no teacher for {condition.name}: no champion registered and no pretrained "
                                       "base in the package; run `stemreg train` first or pass --no-distill")
    objective = objective or ("quality-latency" if teacher is not None else "quality")

    from stemreg.tuning import NoCompletedTrialError, default_study_name, finished_trials, run_study
    from stemreg.tuning.space import distill_points, first_point

    name = study_name or default_study_name(condition)
    try:
        finished = finished_trials(storage_url, name)  # reachability first: exit 2 with the driver's reason
    except StorageError as exc:
        raise BadInputError(f"--storage: {exc}") from None
    missing = None if trials is None else max(0, trials - finished)
    if missing == 0:
        click.echo(f"study {name} already holds {finished} finished trial(s) (--trials {trials}): no new trial"
                   + ("" if no_register else "; its best is retrained and registered"), err=True)
    elif finished and missing is not None:
        click.echo(f"study {name} holds {finished} finished trial(s): {missing} more to reach --trials {trials}",
                   err=True)
    from stemreg.platform.plan import plan_tune  # the whole plan up front, with a measured step time

    plan = plan_tune(budget, trials=missing, timeout_s=timeout_s, retrain_steps_per_epoch=RETRAIN_DATA_FACTOR * steps_per_epoch,
                     retrain_epochs=None if (no_register or teacher is not None)
                     else (retrain_epochs or RETRAIN_EPOCH_FACTOR * epochs))
    click.echo(plan.describe(), err=True)
    try:
        result = run_study(condition, n_trials=trials, timeout_s=timeout_s, storage=storage_url,
                           study_name=study_name, objective=objective, budget=budget, progress=progress,
                           study_total=True, targets=targets, target_fraction=target_fraction,
                           # tried first: a point the receptive-field rule admits, so a study always trains one
                           enqueue=(distill_points(condition, budget.min_receptive_cells, teacher.architecture)
                                    if teacher is not None else [first_point(condition, budget.min_receptive_cells)]),
                           teacher=teacher)
    except StorageError as exc:
        raise BadInputError(f"--storage: {exc}") from None
    except NoCompletedTrialError as exc:
        raise click.ClickException(f"{exc} (pruned trials count towards --trials: raise it)"
                                   if trials is not None else str(exc)) from None
    except ValueError as exc:  # e.g. a --study that exists with other objectives
        raise BadInputError(str(exc)) from None

    summary = {"study": result.to_dict(), "registered": None, "plan": plan.to_dict()}
    if not no_register and teacher is not None:
        from stemreg.platform.training.students import register_front

        front = register_front(condition, result, progress=progress)
        summary["registered"], summary["fast"], summary["notes"] = front["challenger"], front["fast"], front["notes"]
    elif not no_register:
        summary["registered"] = _retrain_best(condition, result, budget, retrain_epochs=retrain_epochs,
                                              init_from=init_from, parent_arch=parent_arch, progress=progress,
                                              targets=targets, target_fraction=target_fraction)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)


def _retrain_best(condition, result, budget, *, retrain_epochs: int | None, init_from: str | None,
                  parent_arch: dict | None, progress: bool, targets: list | None, target_fraction: float) -> dict:
    """Retrain the study's best architecture on the full budget (and the search's targets); register it."""
    from stemreg.models import TrainConfig
    from stemreg.platform.training import train_and_register

    fine_tune = init_from is not None and parent_arch == result.best_architecture
    if init_from is not None and not fine_tune:
        log.warning("--from %s has architecture %s, the search's best is %s: retraining from scratch",
                    init_from, json.dumps(parent_arch), json.dumps(result.best_architecture))
    config = TrainConfig(epochs=retrain_epochs or RETRAIN_EPOCH_FACTOR * budget.epochs,
                         steps_per_epoch=RETRAIN_DATA_FACTOR * budget.steps_per_epoch,
                         batch_size=budget.batch_size, patch_px=budget.patch_px, lr=result.best_lr,
                         seed=budget.seed)
    run = train_and_register(
        condition, arch=result.best_architecture, config=config,
        n_train=RETRAIN_DATA_FACTOR * budget.n_train, n_val=budget.n_val, seed=budget.seed,
        init_from=init_from if fine_tune else None, run_name=f"retrain-{result.study_name}",
        register=True, alias_policy="challenger", progress=progress, targets=targets,
        target_fraction=target_fraction,
        extra_tags={"optuna.study": result.study_name, "optuna.trial_number": str(result.best_trial_number),
                    "optuna.parent_run_id": result.parent_run_id})
    return {"model_uri": run.model_uri, "version": run.version, "alias": run.alias, "run_id": run.run_id,
            "architecture": run.architecture, "metrics": run.metrics, "benchmark": run.benchmark,
            "fine_tuned_from": init_from if fine_tune else None, "seconds": round(run.seconds, 1)}


def _number(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _print_summary(summary: dict) -> None:
    """The study's trials (PSNR, ms/Mpx, kFLOP/px, receptive field), its best, and what was registered."""
    from stemreg.tuning.space import describe_architecture

    study = summary["study"]
    click.echo(f"study {study['study_name']} ({study['storage']}): {study['n_trials_done']} trial(s) run here, "
               f"{study['n_trials_finished']} finished in all")
    front = {p["trial"] for p in study.get("pareto_front") or []}
    click.echo("trial  state     PSNR dB  ms/Mpx  kFLOP/px  field px  architecture")
    for row in study.get("trials") or []:
        mark = "*" if row["trial"] == study["best_trial_number"] else ("+" if row["trial"] in front else " ")
        arch = describe_architecture(row["architecture"]) if row.get("architecture") else "-"
        click.echo(f"{mark}{row['trial']:>4}  {row['state']:<8} {_number(row['val_psnr'], '8.2f')} "
                   f"{_number(row['ms_per_mpx'], '7.0f')} {_number(row['kflop_per_px'], '9.1f')} "
                   f"{_number(row['receptive_field_px'], '9d')}  {arch}")
    click.echo(f"best trial #{study['best_trial_number']} (*): PSNR {study['best_value']:.2f} dB, "
               f"{describe_architecture(study['best_architecture'])}, lr {study['best_lr']:.2e}"
               + (f", {study['best_ms_per_mpx']:.0f} ms/Mpx" if study.get("best_ms_per_mpx") else "")
               + (" (+: the Pareto front)" if front else ""))
    if study.get("teacher_uri"):
        click.echo(f"teacher {study['teacher_uri']}: PSNR {_number(study.get('teacher_psnr'), '.2f')} dB on the same "
                   f"benchmark slice, {_number(study.get('teacher_ms_per_mpx'), '.0f')} ms/Mpx")
    click.echo(f"MLflow parent run: {study['parent_run_id']}")
    reg = summary.get("registered")
    if reg:
        bench = reg.get("benchmark") or {}
        psnr = bench.get("psnr")
        click.echo(f"registered {reg['model_uri']} (alias {reg['alias']})"
                   + (f", benchmark PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float)) else "")
                   + (f", fine-tuned from {reg['fine_tuned_from']}" if reg.get("fine_tuned_from") else ""))
    fast = summary.get("fast")
    if fast:
        bench = fast.get("benchmark") or {}
        click.echo(f"registered {fast['model_uri']} (alias {fast['alias']}): trial #{fast['trial']}, "
                   f"benchmark PSNR {_number(bench.get('psnr'), '.2f')} dB, {_number(bench.get('ms_per_mpx'), '.0f')} "
                   "ms/Mpx; serve it with `stemreg serve --alias fast`")
    for note in summary.get("notes") or []:
        click.echo(note)


COMMANDS: list[click.Command] = [tune_command]
