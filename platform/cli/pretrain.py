"""`stemreg pretrain`: the committed command that makes the pretrained base shipped with the package."""
from __future__ import annotations

from pathlib import Path

import click

from stemreg.platform.cli.common import command, condition_option, emit, json_option, load_condition
from stemreg.platform.config import PRETRAIN  # the defaults' one home
from stemreg.platform.errors import BadInputError

@command("pretrain")
@condition_option
@click.option("--steps", type=click.IntRange(min=1), default=PRETRAIN.steps, show_default=True,
              help=f"Optimiser steps (batches of {PRETRAIN.batch_size} patches of {PRETRAIN.patch_px} px, fresh noise "
                   "every patch).")
@click.option("--seed", type=int, default=PRETRAIN.seed, show_default=True,
              help="Seeds the data stream, the initial weights and the patch order.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=PRETRAIN.lr, show_default=True,
              help="Peak learning rate (AdamW, 5 % warm-up, cosine decay).")
@click.option("--from-base", default=None, metavar="NAME",
              help="Continue from a pretrained model in --base-dir (default the package's) instead of from "
                   "scratch; its card is recorded as the parent.")
@click.option("--base-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder holding the --from-base model [default: the package's models/pretrained/].")
@click.option("--name", default=None, help="Name of the files written.  [default: the shipped base's, low-dose-base]")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0: torch's default).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write <name>.pth and <name>.json [default: the package's models/pretrained/].")
@click.option("--library", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A multislice library (`stemreg multislice --out DIR`) whose fields are mixed into the training "
                   "stream.")
@click.option("--library-fraction", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Share of the patches cut from the --library fields.")
@click.option("--fields", type=click.IntRange(min=1), default=PRETRAIN.n_fields, show_default=True,
              help="Rendered fields in the training pool (one re-rendered per step); fewer start sooner.")
@click.option("--perfect-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of the pool's fields drawn as perfect crystals (no vacancies, substitutions or "
                   "amorphous background).")
@click.option("--low-dose-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of the patches dosed from the bottom quarter of the condition's dose range.")
@json_option
def pretrain_command(condition_name: str, steps: int, seed: int, lr: float, from_base: str | None,
                     base_dir: Path | None, name: str | None, threads: int, out_dir: Path | None,
                     library: Path | None, library_fraction: float, fields: int, perfect_fraction: float,
                     low_dose_fraction: float, as_json: bool) -> None:
    """Train the pretrained base over the condition's whole range and write its weights and card.

    The base is what `stemreg denoise` uses before anything is registered, and
    what the main job fine-tunes every condition from. The card records the
    architecture, the condition's hash, the steps and recipe, the commit and
    the benchmark per bin. At the defaults (4000 steps) this takes about 15
    minutes on 2 unshared CPU cores, an hour when they are shared (a few minutes
    on a GPU). The shipped base is these 4000 steps followed by 12000 more with
    `--from-base low-dose-base --steps 12000 --seed 111 --lr 1e-3` (its card
    records both commands).
    """
    from stemreg.platform.pretrain import pretrain_base

    cond = load_condition(condition_name)

    def show(epoch: int, metrics: dict[str, float]) -> None:
        if not as_json:
            click.echo(f"epoch {epoch}: val PSNR {metrics['val_psnr']:.2f} dB, SSIM {metrics['val_ssim']:.3f}, "
                       f"lr {metrics['lr']:.2g} ({metrics['seconds']:.0f} s)", err=True)

    from stemreg.models.pretrained import PretrainedMissingError

    try:
        card = pretrain_base(cond, steps=steps, seed=seed, lr=lr, threads=threads or None, directory=out_dir,
                             **({"name": name} if name else {}), from_base=from_base, from_directory=base_dir, on_epoch=show,
                             progress=not as_json, library=library, library_fraction=library_fraction,
                             n_fields=fields, perfect_fraction=perfect_fraction,
                             low_dose_fraction=low_dose_fraction)
    except PretrainedMissingError as exc:
        raise BadInputError(f"--from-base: {exc}") from None
    bench = card["benchmark"]
    emit(card, as_json, f"wrote {card['weights_file']} (sha256 {card['weights_sha256'][:12]}...): benchmark mean over "
                        f"bins {bench['model_psnr_mean']:.2f} dB PSNR against {bench['noisy_psnr_mean']:.2f} dB noisy")


COMMANDS: list[click.Command] = [pretrain_command]
