"""stemreg CLI command (adapt): fine-tune a condition's champion on a lab's own raw noisy files.

Heavy imports (torch, mlflow) stay inside the command function so that `stemreg --help` answers at once.
"""
from __future__ import annotations

from pathlib import Path

import click

from stemreg.platform.cli.common import command, condition_option, emit, fmt, json_option, load_condition


@command("adapt")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@condition_option
@click.option("--frames", is_flag=True, help="FILES is one stack file or folder of repeated frames of one area "
                                            "(noise2noise after drift alignment) instead of single frames.")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(1, 1000))
@click.option("--steps", "steps_per_epoch", default=30, show_default=True, type=click.IntRange(1, 100000),
              help="Optimiser steps per epoch.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(2, 1024),
              help="Patches per step, lab and synthetic together.")
@click.option("--patch-px", default=64, show_default=True, type=click.IntRange(32, 1024))
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(1e-7, 1e-1, min_open=False),
              help="Learning rate of the fine-tune (after a 10 % warm-up).")
@click.option("--held-out", "held_out_fraction", default=0.25, show_default=True, type=click.FloatRange(0.05, 0.5),
              help="Share of the files held out for validation and the trust check (at least one file).")
@click.option("--synthetic-fraction", default=0.5, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Share of each batch drawn fresh from the condition's simulation, against forgetting.")
@click.option("--struct-px", default=None, type=click.IntRange(0, 8),
              help="Neighbours masked either side along x (default: from the measured noise correlation).")
@click.option("--keep-impulses", is_flag=True,
              help="Do not repair defective pixels (hot, dead, impulse) of the lab frames, nor make the adapted "
                   "model repair its input; for sampling so coarse that a lone pixel can be a real column.")
@click.option("--promote", is_flag=True, help="Make it champion if it passes the gate (benchmark within "
                                             "--tolerance-db of the champion, held-out trust no worse).")
@click.option("--tolerance-db", default=0.5, show_default=True, type=click.FloatRange(0.0, 10.0))
@click.option("--no-score", is_flag=True, help="Do not score the version on the condition's benchmark (faster; "
                                              "then it cannot be promoted).")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option
def adapt_command(files: tuple[Path, ...], condition_name: str, frames: bool, epochs: int, steps_per_epoch: int,
                  batch_size: int, patch_px: int, lr: float, held_out_fraction: float, synthetic_fraction: float, struct_px: int | None,
                  keep_impulses: bool, promote: bool,
                  tolerance_db: float, no_score: bool, seed: int, as_json: bool) -> None:
    """Fine-tune the condition's champion on a lab's raw noisy FILES; no clean image is needed.

    Single frames train with a blind-spot loss whose mask covers the noise's correlated neighbours
    along the fast-scan axis (structN2V); --frames trains noise2noise on aligned repeats. Part of the
    files is held out: the held-out self-supervised loss picks the epoch and the trust report over
    them is compared with the champion's. The version is registered with the files in its tags and
    card; --promote makes it champion when it passes the gate.
    """
    from dataclasses import fields

    from stemreg.platform.training.adapt import adapt

    cond = load_condition(condition_name)
    result = adapt(cond, list(files), frames=frames, held_out_fraction=held_out_fraction, epochs=epochs,
                   steps_per_epoch=steps_per_epoch, batch_size=batch_size, patch_px=patch_px, lr=lr,
                   synthetic_fraction=synthetic_fraction, struct_px=struct_px, impulses=not keep_impulses,
                   seed=seed, score=not no_score, promote=promote and not no_score, tolerance_db=tolerance_db,
                   progress=not as_json)
    t = result.trust
    text = (f"{result.name} version {result.version}: {result.mode} on {len(result.lab_files)} lab file(s)"
            + (f" (blind spot +-{result.struct_px} px along x; noise lag-1 correlation "
               f"{result.noise_corr_x[0]:.2f})" if result.mode == "blind-spot" else "")
            + f"; held-out loss {result.val_loss:.4f}; held-out trust {t['adapted']['ok']}/{t['adapted']['n']} ok "
              f"(champion {t['champion']['ok']}/{t['champion']['n']}), residual structure "
              f"{t['adapted']['residual_structure']:.3f} (champion {t['champion']['residual_structure']:.3f})"
            + (f"; benchmark PSNR {fmt((result.benchmark or {}).get('psnr'))} dB" if result.benchmark else "")
            + (f"\n{result.gate}" if result.gate else ""))
    payload = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in ("history", "network")}
    emit(payload, as_json, text)


COMMANDS: list[click.Command] = [adapt_command]
