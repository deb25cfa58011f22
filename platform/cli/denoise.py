"""stemreg CLI command: denoise (image files in memory; series and huge scans streamed, see streaming.py).

Heavy imports (torch, mlflow) stay inside the command function so that `stemreg --help` answers at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stemreg.platform.cli.common import command, condition_option, emit, json_option, load_condition
from stemreg.platform.cli.streaming import (STORE_SUFFIXES, report_text, stream_inputs, stream_options,
                                            stream_output_path, tile_params, wants_stream)
from stemreg.platform.errors import BadInputError

# --------------------------------------------------------------------------- denoise

def _output_path(path: Path, outdir: Path) -> Path:
    from stemreg.acquisition.io import WRITE_SUFFIXES

    out = outdir / path.name
    if path.suffix.lower() not in WRITE_SUFFIXES:
        # Digital Micrograph files cannot be written (rosettasciio reads them only): HyperSpy's
        # format keeps the calibration.
        out = out.with_suffix(".hspy")
    if out.resolve() == path.resolve():
        raise BadInputError(f"output {out} would overwrite its input; pick another -o OUTDIR")
    return out


def _refuse_collisions(inputs: tuple[Path, ...], outs: list[Path]) -> None:
    """Two inputs that would be written to one output file (same name from two folders, or the same
    file given twice) are refused before anything is computed."""
    seen: dict[Path, Path] = {}
    for path, out in zip(inputs, outs):
        key = out.resolve()
        if key in seen:
            raise BadInputError(f"{seen[key]} and {path} would both be written to {out}; denoise them "
                                "in separate runs with different -o OUTDIR, or rename one")
        seen[key] = path


@command("denoise")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@condition_option
@click.option("--alias", default="champion", show_default=True,
              help="Registered alias (or version number) of the condition's model to use.")
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the denoised files (same names and formats as the inputs).")
@click.option("--trust-map", is_flag=True,
              help="Also write each output's trust map beside it (<name>.trust.tif: residual structure as "
                   "z-scores; |z| > 4 marks signal removed or added).")
@stream_options
@json_option
def denoise_command(inputs: tuple[Path, ...], condition_name: str, alias: str, outdir: Path, trust_map: bool,
                    as_json: bool, **stream: Any) -> None:
    """Denoise image files with a condition's registered model (default its champion).

    Reads .tif/.tiff/.png/.npy/.dm3/.dm4/.emd/.hspy and writes the same format,
    keeping the input's calibration (pixel size); .dm3/.dm4, which cannot be
    written, come out as .hspy.

    Each file gets a trust verdict, judged from its input and output alone:
    `ok` (the residual looks like the input's noise), `doubtful` (it holds
    structure: signal removed, dots added, noise left) or `out of range`
    (sampling, dose, contrast or noise the model was not trained on); --json
    gives every figure.

    Series and huge scans (.zarr/.zspy stores, files over 1 GiB, or any input
    with a streaming option below) are streamed: read and denoised chunk by
    chunk of whole frames (a single scan: bands of whole tile rows, with the
    bytes of a whole-image run), in bounded memory, into OUTDIR/NAME.zspy (a
    .zarr stays .zarr; --as-input: a .tif series also as OUTDIR/NAME.tif),
    with a progress bar. A killed run
    resumes where it stopped when run again; --workers N or --scheduler
    tcp://host:8786 spread the chunks over Dask workers, each loading the
    model once through the verified path.
    """
    import time

    import numpy as np
    from tqdm import tqdm

    from stemreg.acquisition import read_image, write_image
    from stemreg.acquisition.io import READ_SUFFIXES
    from stemreg.platform.prediction import denoise, load_model, sampling_warning
    from stemreg.platform.trust import map_path, report_for, trust_line

    for path in inputs:
        if not path.exists():
            raise BadInputError(f"no such file: {path}")
        if path.suffix.lower() not in (*READ_SUFFIXES, *STORE_SUFFIXES) or (
                path.is_dir() and path.suffix.lower() not in STORE_SUFFIXES):
            raise BadInputError(f"{path}: unsupported format {path.suffix or '(none)'}; accepted: "
                                f"{', '.join((*READ_SUFFIXES, *STORE_SUFFIXES))}")
    cond = load_condition(condition_name)
    streamed = [path for path in inputs if wants_stream(path, stream)]
    whole = [path for path in inputs if path not in streamed]
    outs = [_output_path(path, outdir) for path in whole]
    stream_outs = [stream_output_path(path, outdir) for path in streamed]
    _refuse_collisions((*whole, *streamed), [*outs, *stream_outs])
    model = load_model(cond, alias=alias)  # read only: no store or experiment is created
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create the output directory {outdir}: {exc.strerror or exc}; "
                            "give a writable -o OUTDIR") from None
    streamed_reports = stream_inputs(list(zip(streamed, stream_outs)), model, stream, as_json=as_json) if streamed else []
    report = []
    for path, out in tqdm(list(zip(whole, outs)), desc="denoise", disable=as_json or len(whole) < 2):
        image = read_image(path, allow_stack=True)
        warning = sampling_warning(model, image.calibration.pixel_size_pm())
        if warning:
            click.echo(f"warning: {path}: {warning}", err=True)
        start = time.perf_counter()
        try:
            denoised = denoise(image, model=model, params=tile_params(stream))
        except BadInputError as exc:  # e.g. channels last, (H, W, 3): name the file
            raise BadInputError(f"{path}: {exc}") from None
        seconds = time.perf_counter() - start
        trust = report_for(model, image.data, denoised.data, pixel_size_pm=image.calibration.pixel_size_pm(),
                           with_map=trust_map)
        trusts = trust if isinstance(trust, list) else [trust]
        replaced = out.exists()
        try:
            write_image(out, denoised.data, denoised.calibration)  # atomic: a temporary name, then renamed
            if trust_map:
                maps = np.stack([t.map for t in trusts]) if len(trusts) > 1 else trusts[0].map
                write_image(map_path(out), maps, denoised.calibration)
        except OSError as exc:
            raise BadInputError(f"cannot write {out}: {exc.strerror or exc}; give a writable -o OUTDIR") from None
        report.append({"input": str(path), "output": str(out), "shape": list(denoised.data.shape),
                       "seconds": round(seconds, 3), "replaced": replaced, **({"warning": warning} if warning else {}),
                       "trust": [t.to_dict() for t in trusts] if len(trusts) > 1 else trusts[0].to_dict(),
                       **({"trust_map": str(map_path(out))} if trust_map else {})})
    text = "\n".join([*(f"{r['input']} -> {r['output']} ({r['seconds']:.2f} s"
                       + ("; replaced the existing file)" if r["replaced"] else ")") + f" trust: {trust_line(r['trust'])}"
                       for r in report), *map(report_text, streamed_reports)])
    used = (f"{model.name} v{model.version}, {alias}" if model.version is not None else
            f"{model.name}: nothing is registered for {cond.name} yet; train or run the main job for a "
            f"model of its own")
    emit({"model": model.model_uri, "version": model.version, "files": report + streamed_reports}, as_json,
         f"{text}\n(denoised with {used})")


COMMANDS: list[click.Command] = [denoise_command]
