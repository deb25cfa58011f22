"""`stemreg denoise` on series and huge scans: streamed, chunk by chunk, resumable, on Dask.

The options live here; :func:`stream_inputs` is what `denoise` calls for the inputs that stream
(a .zarr/.zspy store, a file over :data:`STREAM_ABOVE_BYTES`, or any series when one of these
options is given).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stemreg.platform.errors import BadInputError

#: Files above this size are streamed even without a streaming option (a whole read would not fit well).
STREAM_ABOVE_BYTES = 1 << 30
#: Suffixes that are always streamed (chunked stores).
STORE_SUFFIXES = (".zarr", ".zspy")


def stream_options(func: Any) -> Any:
    """The streaming options of `stemreg denoise`."""
    for option in reversed([
        click.option("--stream", is_flag=True,
                     help="Stream every input chunk by chunk into a .zspy store (bounded memory, resumable). "
                          f"Automatic for .zarr/.zspy inputs, files over {STREAM_ABOVE_BYTES >> 30} GiB, and with "
                          "the options below."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Run the chunks on a local Dask cluster of N worker processes."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run the chunks on a running Dask scheduler, e.g. tcp://host:8786 (its workers must "
                          "see the input, the -o folder and the model store at the same paths)."),
        click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                     help="Seconds to wait for --scheduler."),
        click.option("--align", is_flag=True,
                     help="Series: align the frames' drift first (rigid, whole pixels, as `train --frames`), "
                          "cropped to the area all frames share."),
        click.option("--sum", "want_sum", is_flag=True,
                     help="Series: also write the sum of the (aligned) denoised frames beside it, as NAME.sum.tif."),
        click.option("--chunk-frames", type=click.IntRange(min=1), default=None,
                     help="Frames per chunk (default about 64 MB of frames, a multiple of whole tile batches)."),
        click.option("--chunk-rows", type=click.IntRange(min=1), default=None,
                     help="A single scan: image rows per chunk (default about 64 MB of rows, whole rows of tiles "
                          "that start whole batches; a wrong number is refused with the step to use)."),
        click.option("--tile-px", type=click.IntRange(min=16), default=None,
                     help="Tile edge (px) of the model's tiled inference, as stemreg.denoise(params={'tile_px': N}) "
                          "(default: the whole image up to 1024 px, larger ones in 1024 px tiles)."),
        click.option("--as-input", is_flag=True,
                     help="Also write the result in the input's own format where it streams: a .tif series as "
                          "OUTDIR/NAME.tif, page by page, once the .zspy is complete."),
        click.option("--overwrite", is_flag=True, help="Replace a finished streamed output instead of refusing."),
    ]):
        func = option(func)
    return func


def tile_params(options: dict) -> dict | None:
    """The model's inference params the options ask for (None: its defaults)."""
    return {"tile_px": options["tile_px"]} if options.get("tile_px") else None


def wants_stream(path: Path, options: dict) -> bool:
    """Whether ``path`` goes through the streamed path."""
    if path.suffix.lower() in STORE_SUFFIXES or options.get("stream"):
        return True
    if any(options.get(k) for k in ("workers", "scheduler", "align", "want_sum", "chunk_frames", "chunk_rows",
                                    "as_input")):
        return True
    return path.is_file() and path.stat().st_size > STREAM_ABOVE_BYTES


def stream_output_path(path: Path, outdir: Path) -> Path:
    """``OUTDIR/<name>.zspy`` (a .zarr input stays .zarr)."""
    suffix = ".zarr" if path.suffix.lower() == ".zarr" else ".zspy"
    out = outdir / (path.stem + suffix)
    if out.resolve() == path.resolve():
        raise BadInputError(f"output {out} would overwrite its input; pick another -o OUTDIR")
    return out


def stream_inputs(pairs: list[tuple[Path, Path]], model: Any, options: dict, *, as_json: bool) -> list[dict]:
    """Denoise each ``(input, output)`` pair chunk by chunk; one report per pair.

    Raises
    ------
    BadInputError
        An input that cannot stream (truncated, not a series), an output that exists, an
        unreachable scheduler: before anything is written where possible.
    ChunkFailedError
        A chunk failed midway (finished chunks kept).
    """
    from tqdm import tqdm

    from stemreg.platform.dask_exec import open_executor
    from stemreg.platform.stream_job import plan_job, prepare_output, run_job, sum_path
    from stemreg.platform.stream_output import as_input_path

    jobs = []
    for path, out in pairs:  # every input planned (and refused) before any is run
        job = plan_job(path, out, model, params=tile_params(options), align=options.get("align", False),
                       want_sum=options.get("want_sum", False),
                       chunk_frames=options.get("chunk_frames"), chunk_rows=options.get("chunk_rows"))
        if options.get("as_input"):
            _ask_as_input(job, path, options.get("overwrite", False))
        jobs.append(prepare_output(job, overwrite=options.get("overwrite", False)))
    reports = []
    with open_executor(scheduler=options.get("scheduler"), workers=options.get("workers"),
                       connect_timeout_s=options.get("connect_timeout", 10.0)) as executor:
        for (path, out), (job, state) in zip(pairs, jobs):
            bars: list[Any] = []

            def started(done: int, total: int, name: str = path.name, unit: str = job.unit) -> None:
                bars.append(tqdm(total=total, initial=done, unit=unit, desc=name, disable=as_json,
                                 dynamic_ncols=True))
                if done and not as_json:
                    click.echo(f"{name}: resuming, {done} of {total} {unit}s already done", err=True)

            try:
                summary = run_job(job, executor, progress=lambda n: bars[0].update(n), on_start=started)
            finally:
                for bar in bars:
                    bar.close()
            report = {"input": str(path), "output": str(out), "shape": list(job.out_shape), "state": state,
                      "chunks": job.n_chunks, "chunk_frames": job.chunk_frames, **summary,
                      "workers": getattr(executor, "workers", 1)}
            if job.want_sum:
                report["sum"] = str(sum_path(job))
            if job.extra.get("as_input"):
                report["as_input"] = str(as_input_path(job))
            if job.align:
                report["crop"] = list(job.crop)
            reports.append(report)
    return reports


def _ask_as_input(job: Any, path: Path, overwrite: bool) -> None:
    """Mark ``job`` to be written in its input's format too; refused (nothing written) where that format
    does not stream, or where the file exists (unless ``overwrite``)."""
    from stemreg.platform.stream_output import as_input_path

    target = as_input_path(job)
    if target is None:
        raise BadInputError(f"{path}: --as-input writes .tif series only (a scan, or a {path.suffix} input, "
                            "stays .zspy)")
    if target.exists() and not overwrite:
        raise BadInputError(f"{target} already exists; remove it, give another -o, or pass --overwrite")
    job.extra["as_input"] = True


def report_text(report: dict) -> str:
    """One line per streamed input, for people."""
    unit = report.get("unit", "frame")
    rate = f"{report['frames_per_s']:.1f} {unit}s/s" if report.get("frames_per_s") else "-"
    skipped = f", {report['skipped_chunks']} chunk(s) from the killed run kept" if report["skipped_chunks"] else ""
    extra = f"; sum: {report['sum']}" if report.get("sum") else ""
    extra += f"; as input: {report['as_input']}" if report.get("as_input") else ""
    if report.get("trust"):
        from stemreg.platform.trust import trust_line

        extra += f" trust: {trust_line(report['trust'])}"
    return (f"{report['input']} -> {report['output']} ({report['frames']} {unit}s in {report['seconds']:.1f} s, "
            f"{rate}, {report['workers']} worker(s){skipped}){extra}")
