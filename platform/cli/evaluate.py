"""stemreg CLI commands (evaluate): the leaderboard of every denoiser on one condition.

Heavy imports (torch, mlflow, skimage) stay inside the command function so
that `stemreg --help` answers at once.
"""
from __future__ import annotations

import json
import math
import sys

import click

from stemreg.platform.cli.common import command, load_condition

_METHOD_NAMES = ("hourglass, hourglass-family, autoencoder, sdndti, n2v, gaussian, nlm, tv, wavelet, bm3d, "
                 "bm3d-wiener, bm3d-rl (blur, defocus), align-bm3d (hysteresis)")


@command("evaluate")
@click.option("--condition", "-c", "condition_name", required=True, metavar="NAME",
              help="Acquisition condition name (see `stemreg conditions`) or a YAML file.")
@click.option("--methods", default=None, metavar="M1,M2,...",
              help=f"Comma-separated methods (default all that apply): {_METHOD_NAMES}. The noisy input is always row 1.")
@click.option("--budget", type=click.Choice(["tiny", "quick", "full", "converged"]), default="quick",
              show_default=True,
              help="Training data and steps for the CNNs, the same for all of them: "
                   "tiny (smoke test), quick (CPU, minutes), full (GPU), converged (until every validation "
                   "curve is flat: hours, resumes where it stopped).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=str), default="converged",
              show_default=True, help="--budget converged: where each CNN's checkpoints are kept and resumed from.")
@click.option("--time-limit-min", type=click.FloatRange(min=0, min_open=True), default=None,
              help="--budget converged: stop training after the round that passes this many minutes "
                   "(the next call resumes) and score what is reached.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch CPU threads (default: torch's choice).")
@click.option("--no-cache", is_flag=True, help="Recompute the classical rows even when the store holds them for "
                                               "this benchmark id.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes computing the classical rows in parallel.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              metavar="DIR", help="Score on your own high-dose images from DIR, degraded by the condition's "
                                  "physics, instead of the frozen benchmark set (no column metrics).")
@click.option("--raw", is_flag=True,
              help="DIR (--images) holds a lab's raw noisy images, no clean image: print the trust report's "
                   "figures per method (champion, challenger, bm3d, n2v) instead of PSNR.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the training/validation draws (never the benchmark's).")
@click.option("--device", default="auto", show_default=True, help="Torch device for the CNNs: auto, cpu, cuda.")
@click.option("--no-registry", is_flag=True,
              help="Train the hourglass here even when the condition has a registered champion.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also write the table, bar chart and gallery here.")
@click.option("--no-log", is_flag=True, help="Do not log an MLflow run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def evaluate_command(condition_name: str, methods: str | None, budget: str, checkpoint_dir: str,
                     time_limit_min: float | None, threads: int | None, no_cache: bool, workers: int,
                     images_dir: str | None, raw: bool, seed: int, device: str, no_registry: bool,
                     output_dir: str | None, no_log: bool, as_json: bool) -> None:
    """Run every denoiser on a condition's benchmark and print the leaderboard.

    Methods: the reverse hourglass (the registered champion, else trained
    here), the family's multi-scale member trained at the same budget as the
    other CNNs (hourglass-family), the STEM autoencoder (Gambini et al.), an
    SDnDTI-style DnCNN trained noise2noise, a blind-spot (Noise2Void)
    hourglass, and Gaussian, non-local means, total variation, wavelet and
    BM3D filters fitted on a validation set (the GAT-based ones with each
    image's own noise model: on the benchmark the simulation's exact one).
    Metrics: PSNR, SSIM, atom-column F1 and position error (pm), and
    inference ms per megapixel, per benchmark bin (sampling x dose) and as
    the unweighted mean over bins; the table shows the means and a few key
    bins, --json every bin. BM3D takes 1-3 s per 256 px image on a CPU: pick
    methods with --methods to go faster. One MLflow run holds the tables
    (CSV, JSON, per bin), heat maps of the PSNR gain per bin, a bar chart and
    a before/after gallery.
    """
    from stemreg.platform import evaluation

    if threads:
        import torch

        torch.set_num_threads(threads)
    condition = load_condition(condition_name)
    if raw:
        _evaluate_raw(condition, images_dir, methods, budget, seed, as_json)
        return
    try:
        method_list = evaluation.parse_methods(methods) if methods else evaluation.default_methods(condition)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--methods") from None
    if images_dir is not None:
        try:
            evaluation.user_test_set(condition, images_dir, seed=seed)  # validate the folder before any training
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--images") from None
        except Exception as exc:  # noqa: BLE001 - unreadable files are bad input, reported as such
            raise click.BadParameter(f"{images_dir}: {exc}", param_hint="--images") from None
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise click.BadParameter(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N",
                                 param_hint="--device")

    try:
        board = evaluation.evaluate(condition, methods=method_list, budget=budget, images_dir=images_dir,
                                    seed=seed, device=device, use_registry=not no_registry,
                                    log_to_mlflow=not no_log, progress=not as_json and sys.stderr.isatty(),
                                    output_dir=output_dir, checkpoint_dir=checkpoint_dir,
                                    time_limit_s=None if time_limit_min is None else 60 * time_limit_min,
                                    use_cache=not no_cache, workers=workers)
    except ValueError as exc:  # e.g. CUDA asked for where there is none
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)

    if as_json:
        click.echo(json.dumps(board.to_dict(), indent=2))
        return
    click.echo(f"{board.condition}: {board.test_set}, {board.n_images} image(s) "
               f"{board.image_shape[0]}x{board.image_shape[1]} px in {len(board.bins)} bin(s), budget "
               f"{board.budget.name} ({board.seconds:.0f} s)")
    click.echo("Figures: unweighted mean over bins; gain: PSNR over the noisy input; then PSNR / SSIM in key "
               "bins (--json: every bin).")
    click.echo(board.markdown())
    for row in board.rows():
        if row["method"] != evaluation.NOISY:
            click.echo(f"  {row['method']}: {row['source']}")
    if any(m in evaluation.CLASSICAL and m != "gaussian" for m in method_list):
        click.echo(f"  GAT filters (nlm, tv, wavelet, bm3d): {board.noise_source}"
                   + (" - the most favourable setting for BM3D" if "oracle" in board.noise_source else ""))
    if all(not math.isfinite(r["column_f1"]) for r in board.rows()):
        click.echo("  (no column metrics: the images have no simulated column positions)")
    if board.run_id:
        click.echo(f"MLflow run {board.run_id} (artifacts: {', '.join(board.artifacts)})")


def _evaluate_raw(condition, images_dir: str | None, methods: str | None, budget: str, seed: int,
                  as_json: bool) -> None:
    """`--raw`: trust figures per method on raw images (no clean image, so no PSNR)."""
    from stemreg.platform.evaluation.raw import RAW_METHODS, evaluate_raw, raw_table
    from stemreg.platform.store import configure

    if images_dir is None:
        raise click.BadParameter("--raw judges a lab's raw images: give them with --images DIR", param_hint="--raw")
    names = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else RAW_METHODS
    configure()
    rows = evaluate_raw(condition, images_dir, methods=names, budget=budget, seed=seed)
    if as_json:
        click.echo(json.dumps({"condition": condition.name, "images": images_dir,
                               "rows": [r.to_dict() for r in rows]}, indent=2))
        return
    click.echo(f"{condition.name}: trust figures on the raw images of {images_dir} (no clean image: judged from each "
               "input and its output alone; residual variance ~1 and structure ~0 when only noise was removed)")
    click.echo(raw_table(rows))
    for r in rows:
        click.echo(f"  {r.method}: {r.source}" + (f"; e.g. {r.reasons[0]}" if r.reasons else ""))


COMMANDS: list[click.Command] = [evaluate_command]
