"""stemreg CLI commands (models): train, models, promote, rollback, pipeline.

Heavy imports (torch, mlflow) stay inside the command functions so that
`stemreg --help` answers at once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from stemreg.platform.cli.common import (command, condition_option, emit, fmt, json_option, load_condition,
                                         load_targets_option, target_fraction_option, targets_option)
from stemreg.platform.errors import BadInputError

# --------------------------------------------------------------------------- train

@command("train")
@condition_option
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None, help="Optimiser steps per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Patches per step.")
@click.option("--patch-px", type=click.IntRange(min=8), default=None, help="Training patch edge (pixels).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam learning rate.")
@click.option("--mode", type=click.Choice(["supervised", "noise2noise", "blind-spot"]), default=None,
              help="Training mode: supervised (simulated clean targets, the default), noise2noise "
                   "(repeated noisy frames; with --frames, the lab's own), blind-spot (single noisy "
                   "images; with --images, the lab's own).")
@click.option("--frames", "frames_path", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="Train noise2noise on your own repeated low-dose frames of one area: a stack file (N, H, W) "
                   "or a folder of frames; drift is aligned first (whole pixels). No clean image is used.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Train blind-spot on your own single noisy images from DIR. No clean image is used.")
@click.option("--no-align", is_flag=True, help="With --frames: the frames are already aligned; skip the drift "
                                               "correction.")
@targets_option
@target_fraction_option
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Simulated training fields.")
@click.option("--n-val", type=click.IntRange(min=1), default=None, help="Simulated validation images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the training data.")
@click.option("--arch", default=None, metavar="JSON",
              help='Architecture JSON, e.g. \'{"kind": "reverse-hourglass", "depth": 8, '
                   '"widths": [16,32,48,64,48,32,16], "kernel_size": 3}\'.')
@click.option("--from", "init_from", default=None, metavar="MODEL_URI",
              help="Start from a registered model's weights, e.g. models:/stem-denoiser-low-dose@champion "
                   "(the architecture must match).")
@click.option("--alias", "alias_policy", type=click.Choice(["auto", "challenger", "champion", "none"]),
              default="auto", show_default=True,
              help="Alias for the new version: auto = champion if none yet, else challenger.")
@click.option("--no-register", is_flag=True, help="Log the run and model but do not register a version.")
@json_option
def train_command(condition_name: str, epochs, steps_per_epoch, batch_size, patch_px, lr, mode,
                  frames_path: Path | None, images_dir: Path | None, no_align: bool, targets_dir: Path | None,
                  target_fraction: float, n_train, n_val, seed: int, arch: str | None, init_from: str | None,
                  alias_policy: str, no_register: bool, as_json: bool) -> None:
    """Train a denoiser for a condition, log it to MLflow, register and score it.

    By default on data simulated for the condition (supervised). A lab
    without clean images trains on its own files instead: `--frames PATH`
    (noise2noise on repeated frames of one area) or `--images DIR`
    (blind-spot on single noisy images); the bottom rows of every frame are
    then held out and the held-out self-supervised loss picks the best epoch.
    Defaults are the pipeline's quick budget. The new version becomes
    `champion` if the condition has none, else `challenger` (promote it with
    `stemreg promote`). Every version is scored on the condition's simulated
    benchmark set.
    """
    from stemreg.models.config import QUICK_BUDGET, ArchitectureName
    from stemreg.models.config import architecture as preset
    from stemreg.platform.training import canonical_architecture, train_and_register

    cond = load_condition(condition_name)
    quick = QUICK_BUDGET
    config = quick.train_options()
    overrides = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
                 "patch_px": patch_px, "lr": lr, "mode": mode}
    config.update({k: v for k, v in overrides.items() if v is not None})
    architecture = canonical_architecture(arch) if arch else (None if init_from else preset(ArchitectureName.QUICK))
    if targets_dir is not None and (frames_path is not None or images_dir is not None):
        raise BadInputError("--targets (clean high-dose images, supervised) cannot go with --frames or --images "
                            "(noisy files, self-supervised); give one kind")
    if frames_path is not None or images_dir is not None:
        _train_on_lab_files(cond, config, architecture, mode=mode, frames_path=frames_path, images_dir=images_dir,
                            align=not no_align, n_given=(n_train, n_val), seed=seed, init_from=init_from,
                            alias_policy=alias_policy, register=not no_register, as_json=as_json)
        return
    if no_align:
        raise BadInputError("--no-align goes with --frames (it skips their drift correction)")
    targets = load_targets_option(targets_dir, patch_px=config["patch_px"])
    result = train_and_register(cond, arch=architecture, config=config,
                                n_train=n_train or quick.n_train, n_val=n_val or quick.n_val, seed=seed,
                                init_from=init_from, register=not no_register, alias_policy=alias_policy,
                                targets=targets, target_fraction=target_fraction if targets else 0.0)
    bench = result.benchmark
    _emit_training(result, as_json, f"run {result.run_id}: validation PSNR {result.metrics['val_psnr']:.2f} dB, "
                                    f"SSIM {result.metrics['val_ssim']:.3f} in {result.seconds:.0f} s",
                   bench and (f"benchmark PSNR {fmt(bench.get('psnr'))} dB (noisy {fmt(bench.get('noisy_psnr'))} dB), "
                              f"SSIM {fmt(bench.get('ssim'), '.3f')}, {fmt(bench.get('ms_per_mpx'), '.0f')} ms/Mpx"))


def _emit_training(result, as_json: bool, head: str, bench_line: str | None, **extra: Any) -> None:
    """Report a training run: what it reached, the version it registered, its benchmark figures."""
    text = head
    if result.version:
        text += f"\nregistered {result.name} version {result.version}" + (f" as {result.alias}" if result.alias else "")
    if bench_line:
        text += f"\n{bench_line}"
    emit({"run_id": result.run_id, "model_uri": result.model_uri, "name": result.name, "version": result.version,
          "alias": result.alias, "architecture": result.architecture, **extra, "metrics": result.metrics,
          "benchmark": result.benchmark, "seconds": result.seconds}, as_json, text)


def _train_on_lab_files(cond, config: dict[str, Any], architecture, *, mode: str | None, frames_path: Path | None,
                        images_dir: Path | None, align: bool, n_given: tuple, seed: int, init_from: str | None,
                        alias_policy: str, register: bool, as_json: bool) -> None:
    """`stemreg train --frames/--images`: self-supervised on the lab's own noisy files."""
    from stemreg.platform.training import train_from_lab_files

    if frames_path is not None and images_dir is not None:
        raise BadInputError("give --frames (noise2noise on repeated frames) or --images (blind-spot on single "
                       "images), not both")
    if any(n is not None for n in n_given):
        raise BadInputError("--n-train / --n-val size simulated data; with --frames / --images the files are the data")
    mode = mode or ("noise2noise" if frames_path is not None else "blind-spot")
    if mode == "supervised":
        raise BadInputError("--mode supervised needs clean targets, which lab files do not have; use --mode "
                       "noise2noise with --frames, or --mode blind-spot with --images")
    for given in (frames_path, images_dir):
        if given is not None and not given.exists():
            raise BadInputError(f"no such file or folder: {given}")
    config = {**config, "mode": mode, "seed": seed}  # no data to draw: the seed drives patches and weights
    result = train_from_lab_files(cond, mode=mode, frames=frames_path, images=images_dir, arch=architecture,
                                  config=config, init_from=init_from, align=align, register=register,
                                  alias_policy=alias_policy, progress=not as_json)
    m, bench = result.metrics, result.benchmark
    floor = f" (a perfect denoiser: {m['val_noise_floor']:.4f})" if m["val_noise_floor"] == m["val_noise_floor"] else ""
    _emit_training(result, as_json, f"run {result.run_id}: held-out {mode} loss {m['val_loss']:.4f}{floor}, best "
                                    f"epoch {int(m['best_epoch'])}, in {result.seconds:.0f} s; no clean image used",
                   bench and (f"simulated benchmark PSNR {fmt(bench.get('psnr'))} dB "
                              f"(noisy {fmt(bench.get('noisy_psnr'))} dB), SSIM {fmt(bench.get('ssim'), '.3f')}"),
                   mode=mode)


# --------------------------------------------------------------------------- models

@command("models")
@click.option("--condition", "-c", "condition_name", default=None, metavar="NAME",
              help="Only this condition's model.")
@json_option
def models_command(condition_name: str | None, as_json: bool) -> None:
    """List registered condition models: versions, aliases, champion and challenger with benchmark figures.

    Benchmark figures are means over the benchmark's sampling x dose bins; a table gives the PSNR
    per bin of the noisy input, the champion and the challenger. --json has every per-bin figure
    under `benchmark.by_bin`.
    """
    from stemreg.platform.registry import list_condition_models
    from stemreg.platform.store import configure

    configure()
    if condition_name:
        condition_name = load_condition(condition_name).name  # an unknown name exits 2, listing the known ones
    models = list_condition_models()
    if condition_name:
        models = [m for m in models if m["condition"] == condition_name]
    if as_json:
        click.echo(json.dumps(models, indent=2, default=str))
        return
    if not models:
        click.echo("no condition models registered yet (train one: stemreg train --condition low-dose)")
        return
    for model in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in model["aliases"].items()) or "none"
        click.echo(f"{model['name']}  versions: {', '.join(model['versions'])}  aliases: {aliases}")
        for role in ("champion", "challenger"):
            entry = model[role]
            if entry is None:
                continue
            bench = entry["benchmark"]
            click.echo(f"  {role:<10} v{entry['version']}: benchmark PSNR {fmt(bench.get('psnr'))} dB "
                       f"(noisy {fmt(bench.get('noisy_psnr'))}), SSIM {fmt(bench.get('ssim'), '.3f')} (means over "
                       f"bins), {fmt(bench.get('ms_per_mpx'), '.0f')} ms/Mpx; val PSNR {fmt(entry.get('val_psnr'))} dB")
        table = _bin_table(model)
        if table:
            click.echo(table)


def _bin_table(model: dict[str, Any]) -> str:
    """Benchmark PSNR per bin (rows) for the noisy input, the champion and the challenger (columns)."""
    entries = [(role, model[role]) for role in ("champion", "challenger") if model[role] is not None]
    columns = []
    for role, entry in entries:
        by_bin = entry["benchmark"].get("by_bin", {})
        if not columns and by_bin.get("noisy_psnr"):
            columns.append(("noisy", by_bin["noisy_psnr"], entry["benchmark"].get("noisy_psnr")))
        if by_bin.get("psnr"):
            columns.append((f"{role} v{entry['version']}", by_bin["psnr"], entry["benchmark"].get("psnr")))
    if len(columns) < 2:
        return ""
    bins = list(dict.fromkeys(name for _, values, _ in columns for name in values))
    width = max(len(b) for b in [*bins, "mean over bins"]) + 2
    heads = [max(len(head), 7) for head, _, _ in columns]
    lines = ["  PSNR (dB) per bin".ljust(width + 2) + "  ".join(h.rjust(w) for (h, _, _), w in zip(columns, heads))]
    for name in [*bins, None]:
        cells = [fmt(mean if name is None else values.get(name)).rjust(w)
                 for (_, values, mean), w in zip(columns, heads)]
        lines.append("  " + ("mean over bins" if name is None else name).ljust(width) + "  ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------- promote / rollback

def _promotion_text(result) -> str:
    verb = {"rollback": "rolled back", "force-promote": "force-promoted", "promote": "promoted"}[result.kind]
    return (f"{result.model}: {verb} champion v{result.from_version} ({fmt(result.from_psnr)} dB) -> "
            f"v{result.to_version} ({fmt(result.to_psnr)} dB)" + (f"; reason: {result.reason}" if result.reason else ""))


@command("promote")
@condition_option
@click.option("--version", "version", default=None, metavar="V",
              help="Version to promote (default: the challenger).")
@click.option("--force", is_flag=True, help="Promote even if it does not beat the champion (needs --reason).")
@click.option("--reason", default=None, metavar="TEXT", help="Why; recorded in the promotion history.")
@click.option("--rescore", is_flag=True,
              help="First re-score the candidate and the champion on the condition's current benchmark where "
                   "they were scored on another one (loads both models; tens of seconds).")
@json_option
def promote_command(condition_name: str, version: str | None, force: bool, reason: str | None, rescore: bool,
                    as_json: bool) -> None:
    """Move the `champion` alias to the challenger (or --version) if it beats the champion over the whole range.

    The candidate's benchmark PSNR, the mean over the benchmark's sampling x dose
    bins, must beat the champion's, and it must not lose more than 1 dB to the
    champion in any one bin. Refuses (exit 1) with the figures otherwise, and when
    the two were scored on different benchmarks (--rescore scores both on the
    current one); --force --reason overrides and records who and why.
    """
    from dataclasses import asdict

    from stemreg.platform import registry
    from stemreg.platform.store import configure

    if version is not None and not version.isdigit():
        raise BadInputError(f"--version takes a version number (got {version!r})")
    cond = load_condition(condition_name)
    configure()
    try:
        result = registry.promote(cond, version, force=force, reason=reason, rescore=rescore)
    except registry.RegistryError as exc:
        if as_json:
            click.echo(json.dumps({"promoted": False, "reason": str(exc)}))
        raise
    emit({"promoted": True, **asdict(result)}, as_json, _promotion_text(result))


@command("rollback")
@condition_option
@click.option("--reason", default=None, metavar="TEXT", help="Why; recorded in the promotion history.")
@json_option
def rollback_command(condition_name: str, reason: str | None, as_json: bool) -> None:
    """Move `champion` back to the previous champion (from the recorded promotion history)."""
    from dataclasses import asdict

    from stemreg.platform import registry
    from stemreg.platform.store import configure

    cond = load_condition(condition_name)
    configure()
    result = registry.rollback(cond, reason=reason)
    emit(asdict(result), as_json, _promotion_text(result))


# --------------------------------------------------------------------------- pipeline

COMMANDS: list[click.Command] = [train_command, models_command, promote_command,
                                 rollback_command]
