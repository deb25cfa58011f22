"""`stemreg pipeline`: the main job (what `mlflow run .` runs)."""
from __future__ import annotations

import click

from stemreg.platform.cli.common import command, emit, fmt, json_option, load_condition

#: Students per condition in the main job: what fits its 10 minutes on 2 CPU cores (docs/RESULTS.md).
DEFAULT_STUDENTS = 3


@command("pipeline")
@click.option("--conditions", default=None, metavar="A,B,...",
              help="Comma-separated condition names, or 'all' (the default: every built-in condition).")
@click.option("--trials", type=click.IntRange(min=0), default=DEFAULT_STUDENTS, show_default=True,
              help="Distilled students per condition: an Optuna search (benchmark PSNR vs ms per megapixel) of "
                   "students of the condition's champion; the best is registered as challenger and gated, the "
                   "fastest within 0.5 dB of the champion gets alias `fast` (0: no search).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (quick default).")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None, help="Steps per epoch.")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Simulated training images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the training data.")
@click.option("--tune-timeout", type=click.FloatRange(min=1), default=None, help="Seconds per study at most.")
@click.option("--storage", default=None, metavar="URL", help="Optuna storage (default sqlite:///optuna.db).")
@click.option("--share-base/--no-share-base", default=True, show_default=True,
              help="Fine-tune conditions from a shared base: the shipped pretrained base, or with "
                   "--from-scratch the low-dose champion (--no-share-base: every condition from scratch).")
@click.option("--from-scratch", is_flag=True,
              help="Do not start from the pretrained base that ships with stemreg: train low-dose from scratch "
                   "and fine-tune the others from its champion.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch CPU threads (default: torch's choice, one per core). On a machine busy with other "
                   "work, 1 avoids threads waiting on each other for busy cores.")
@json_option
def pipeline_command(conditions: str | None, trials: int, epochs, steps_per_epoch, n_train, seed: int,
                     tune_timeout: float | None, storage: str | None, share_base: bool, from_scratch: bool,
                     threads: int | None, as_json: bool) -> None:
    """The main job: register the shipped pretrained base and fine-tune every condition from it (with
    --trials: search first), register, score on the range benchmark and promote if better."""
    from stemreg.models.config import FINE_TUNE_BUDGET, QUICK_BUDGET
    from stemreg.platform.pipeline import run_pipeline

    if threads:
        import torch

        torch.set_num_threads(threads)
    names = [c.strip() for c in (conditions or "").split(",") if c.strip() and c.strip() != "all"] or None
    for name in names or []:
        load_condition(name)
    train = {k: v for k, v in {"epochs": epochs, "steps_per_epoch": steps_per_epoch}.items() if v is not None}
    n_train = n_train or (QUICK_BUDGET.n_train if from_scratch else FINE_TUNE_BUDGET.n_train)
    result = run_pipeline(names, trials=trials, train=train, n_train=n_train, seed=seed,
                          tune_timeout_s=tune_timeout, storage=storage, share_base=share_base,
                          from_scratch=from_scratch, progress=not as_json)
    lines = [f"{o.condition}: v{o.version} ({o.alias or 'no alias'}), benchmark PSNR {fmt(o.benchmark_psnr)} dB "
             f"vs noisy {fmt(o.noisy_psnr)} dB; champion v{o.champion}"
             + (f"; fast v{o.fast}" if o.fast else "") + f"; {o.note} [{o.seconds:.0f} s]"
             for o in result.outcomes]
    lines.append(f"pipeline run {result.run_id} finished in {result.seconds:.0f} s")
    emit(result.as_dict(), as_json, "\n".join(lines))


COMMANDS: list[click.Command] = [pipeline_command]
