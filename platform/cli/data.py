"""stemreg CLI commands for data: `stemreg conditions` and `stemreg simulate`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from stemreg.platform.cli.common import command, load_condition
from stemreg.platform.errors import BadInputError, StemregError

log = logging.getLogger(__name__)


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:g}..{value[1]:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


@command("conditions")
@click.option("--json", "as_json", is_flag=True, help="Print the conditions as JSON (for scripts).")
def conditions_command(as_json: bool) -> None:
    """List the built-in acquisition conditions with their parameters.

    A parameter shown as LOW..HIGH is drawn uniformly per image. Describe your
    own microscope in a YAML file with the same keys and pass its path as
    --condition to the commands that take one.
    """
    from stemreg.acquisition import list_conditions

    conditions = list_conditions()
    if as_json:
        click.echo(json.dumps([{"name": c.name, "version": c.version, "hash": c.hash(),
                                "benchmark_id": c.benchmark_id(), "description": c.description,
                                "params": c.model_dump(mode="json", exclude={"name", "version", "description"})}
                               for c in conditions], indent=2))
        return
    for c in conditions:
        click.echo(f"{c.name}  v{c.version}  {c.hash()}")
        click.echo(f"  {c.description}")
        ranged = c.ranged_params()
        shown = {k: v for k, v in c.model_dump(mode="json").items() if k not in ("name", "version", "description")}
        varying = "  ".join(f"{k}={_format_value(v)}" for k, v in shown.items() if k in ranged)
        fixed = "  ".join(f"{k}={_format_value(v)}" for k, v in shown.items() if k not in ranged)
        click.echo(f"  drawn per image: {varying or '(none)'}")
        click.echo(f"  fixed: {fixed}")


def _tiles_from_images(directory: Path, size_px: int,
                       pixel_range_pm: tuple[float, float]) -> tuple[list, list[str], list[float | None]]:
    """Square tiles of ``size_px`` from every image in ``directory``, resampled to the condition's pixel size."""
    import numpy as np
    from scipy.ndimage import zoom

    from stemreg.acquisition import read_image
    from stemreg.acquisition.io import READ_SUFFIXES

    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in READ_SUFFIXES and p.is_file()
                   and not p.name.endswith(".npy.json"))
    if not files:
        raise BadInputError(f"--from-images {directory}: no image files (accepted: {', '.join(sorted(READ_SUFFIXES))})")
    tiles, sources, tile_pm = [], [], []
    for path in files:
        image = read_image(path, allow_stack=True)
        stack = image.data if image.data.ndim == 3 else image.data[None]
        file_pm = image.calibration.pixel_size_pm()
        target_pm = float(np.clip(file_pm, *pixel_range_pm)) if file_pm else None
        if file_pm and abs(file_pm / target_pm - 1) > 0.01:
            # Outside the condition's samplings: bring the image to the nearest one first.
            stack = np.stack([zoom(s, file_pm / target_pm, order=1) for s in stack])
            log.info("%s: resampled from %.3g pm to %.3g pm pixels", path, file_pm, target_pm)
        for k, frame in enumerate(stack):
            for r in range(0, frame.shape[0] - size_px + 1, size_px):
                for c in range(0, frame.shape[1] - size_px + 1, size_px):
                    tiles.append(frame[r:r + size_px, c:c + size_px])
                    sources.append(f"{path.name}[{k}]:{r},{c}")
                    tile_pm.append(target_pm)
    return tiles, sources, tile_pm


@command("simulate")
@click.option("--condition", "condition_name", required=True, metavar="NAME|FILE.yaml",
              help="A built-in condition (see `stemreg conditions`) or a condition YAML file.")
@click.option("--n", "n_images", type=int, required=True, help="Number of pairs to write.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write degraded/clean stacks and simulation.json into.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed gives the same bytes.")
@click.option("--size", "size_px", type=int, default=None, help="Image size in pixels [default: the condition's].")
@click.option("--from-images", "from_images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Tile your own high-dose images from this directory and degrade the tiles "
                                 "instead of simulating specimens.")
@click.option("--format", "file_format", type=click.Choice(["npy", "tif"]), default="npy", show_default=True,
              help="File format of the degraded/clean stacks.")
@click.option("--pixel-size-pm", "pixel_size_pm", type=float, default=None,
              help="Simulate every image at this sampling [default: each image's drawn from the condition's "
                   "range, listed in simulation.json].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary of what was written.")
def simulate_command(condition_name: str, n_images: int, out_dir: Path, seed: int, size_px: int | None,
                     from_images: Path | None, file_format: str, pixel_size_pm: float | None, as_json: bool) -> None:
    """Write N degraded/clean image pairs of a condition, with a JSON sidecar.

    OUT gets degraded.<fmt> and clean.<fmt> (stacks N x H x W, float32, same
    units, pixel size kept), raw.<fmt> (the same frames in ADU, whole numbers
    0..65535, as the microscope's detector writes them) and simulation.json (the condition, its hash, the
    seed, each image's drawn parameters and atomic-column positions in pixels
    (row, col)). With --from-images, your high-dose images are cut into tiles
    of --size pixels and degraded with the condition's physics.
    """
    import numpy as np

    from stemreg.acquisition import Calibration, write_image

    condition = load_condition(condition_name)
    if pixel_size_pm is not None:
        if not 0.5 <= pixel_size_pm <= 1000:
            raise BadInputError(f"--pixel-size-pm must be within 0.5..1000 pm, got {pixel_size_pm}")
        condition = condition.model_copy(update={"pixel_size_pm": float(pixel_size_pm)})
    if n_images < 1:
        raise BadInputError(f"--n must be at least 1, got {n_images}")
    size_px = size_px or condition.image_size_px
    if not 16 <= size_px <= 4096:
        raise BadInputError(f"--size must be between 16 and 4096 pixels, got {size_px}")
    if seed == condition.benchmark_seed:
        raise BadInputError(f"--seed {seed} is the benchmark seed of {condition.name}; choose another "
                       "(the benchmark set is never used for training)")
    if seed < 0:
        raise BadInputError(f"--seed must be >= 0, got {seed}")

    _writable_folder(out_dir)  # before the simulation: a bad --out costs nothing
    sources = None
    if from_images is not None:
        tiles, sources, tile_pm = _tiles_from_images(from_images, size_px, condition.pixel_size_range_pm())
        if len(tiles) < n_images:
            raise BadInputError(f"--from-images {from_images} holds only {len(tiles)} tile(s) of {size_px} px; "
                           f"lower --n or --size")
        chosen = np.sort(np.random.default_rng(seed).choice(len(tiles), n_images, replace=False))
        sources = [sources[i] for i in chosen]
        batch = condition.degrade(np.stack([tiles[i] for i in chosen]), seed=seed,
                                  pixel_size_pm=[tile_pm[i] for i in chosen])
    else:
        batch = condition.sample_pairs(n_images, size_px=size_px, seed=seed, progress=True)

    # A stack file holds one pixel size: written when every image shares it (--pixel-size-pm or a
    # condition with one sampling); simulation.json lists each image's.
    sizes = batch.pixel_sizes_pm
    calibration = Calibration(float(sizes[0]), "pm") if np.allclose(sizes, sizes[0], rtol=1e-6) else Calibration()
    try:
        degraded_path = write_image(out_dir / f"degraded.{file_format}", batch.degraded, calibration)
        clean_path = write_image(out_dir / f"clean.{file_format}", batch.clean, calibration)
        raw_path = write_image(out_dir / f"raw.{file_format}", batch.raw, calibration)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        raise StemregError(f"cannot write into --out {out_dir}: {exc.strerror or exc}") from None
    sidecar = {
        "condition": condition.model_dump(mode="json"),
        "condition_hash": condition.hash(),
        "seed": seed,
        "n": len(batch),
        "size_px": size_px,
        "pixel_size_pm": [float(v) for v in sizes],
        "units": "clean: in-focus noise-free HAADF signal / its 99.5th percentile; degraded: same units; "
                 "raw: ADU (degraded = (raw - dark_offset_adu) / (gain_adu_per_e x detected electrons per unit "
                 "signal) - the low-passed noise-bias flux)",
        "files": {"degraded": degraded_path.name, "clean": clean_path.name, "raw": raw_path.name},
        "images": [{"params": p, "columns_rc_px": np.round(c, 3).tolist(),
                    **({"source": sources[i]} if sources else {})}
                   for i, (p, c) in enumerate(zip(batch.params, batch.columns))],
    }
    sidecar_path = out_dir / "simulation.json"
    sidecar_path.write_text(json.dumps(sidecar, indent=1))
    summary = {"condition": condition.name, "condition_hash": condition.hash(), "n": len(batch), "seed": seed,
               "degraded": str(degraded_path), "clean": str(clean_path), "raw": str(raw_path),
               "sidecar": str(sidecar_path)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {len(batch)} {condition.name} pairs to {out_dir} "
                   f"({degraded_path.name}, {clean_path.name}, {raw_path.name}, {sidecar_path.name})")


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` and write a file in it, or refuse in one line (e.g. ``--out /proc/x``)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BadInputError(f"--out {folder}: cannot write there ({exc.strerror or exc}); give a writable "
                            "folder") from None


@command("multislice")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The library's folder (a cache: crystals already there are kept).")
@click.option("--phonons", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Frozen-phonon configurations averaged per image.")
@click.option("--scan-sampling-pm", type=click.FloatRange(5, 100), default=20.0, show_default=True,
              help="Probe positions across the unit cell (20 pm resolves a 30 mrad image).")
@click.option("--potential-sampling-pm", type=click.FloatRange(2, 20), default=6.0, show_default=True,
              help="Sampling of the potential and the waves (sets the largest angle simulated).")
@click.option("--crystal", "crystals", multiple=True, metavar="NAME",
              help="Only these crystals (repeatable); default all of acquisition.multislice.CRYSTALS.")
def multislice_command(out_dir: Path, phonons: int, scan_sampling_pm: float, potential_sampling_pm: float,
                       crystals: tuple[str, ...]) -> None:
    """Build the multislice library: HAADF and ABF images of a unit cell of several crystals and
    zone axes at several thicknesses (abTEM, frozen phonons), one .npz per crystal in OUT.

    Needs `pip install stemreg[multislice]`. Tens of CPU minutes per crystal: run it in the
    background (`nohup nice -n 19 stemreg multislice --out DIR &`). Train with it through
    `stemreg pretrain --library DIR`.
    """
    from stemreg.acquisition.multislice import CRYSTALS, build_library

    chosen = tuple(c for c in CRYSTALS if not crystals or c.name in crystals)
    unknown = set(crystals) - {c.name for c in CRYSTALS}
    if unknown:
        raise BadInputError(f"--crystal {', '.join(sorted(unknown))}: unknown; known: "
                            f"{', '.join(c.name for c in CRYSTALS)}")
    try:
        import abtem  # noqa: F401
    except ImportError:
        raise BadInputError("stemreg multislice needs abTEM: pip install 'stemreg[multislice]'") from None
    build_library(out_dir, chosen, phonons=phonons, scan_sampling_pm=scan_sampling_pm,
                  potential_sampling_pm=potential_sampling_pm,
                  on_done=lambda name, seconds: click.echo(f"{name}: {seconds:.0f} s", err=True))
    click.echo(f"library in {out_dir}")


COMMANDS: list[click.Command] = [conditions_command, simulate_command, multislice_command]
