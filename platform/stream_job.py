"""Denoise a series (or a large image) that does not fit in memory: chunk by chunk, resumable, on Dask.

A job is planned once (:func:`plan_job`): the input opened lazily, chunks of whole frames, the model
pinned (:class:`~stemreg.platform.lazy.ModelSpec`), and, with ``align``, every frame's drift. Its
output is a chunked store (.zspy or .zarr) whose chunks are the job's chunks. A chunk
(:func:`process_chunk`) runs wherever the executor puts it: it reads its frames from the input,
denoises them with the model its process loaded once, writes its chunk of the store, and only then
writes its completion marker. The marker, not the chunk, says "done": a run killed while writing a
chunk leaves no marker, and the rerun redoes that chunk (same bytes) and skips every chunk that has
one. The job's manifest (``.stemreg-job/job.json`` in the store) says which input, model and options
the chunks were made with; a rerun with anything else is refused rather than mixed in.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from stemreg.platform.errors import BadInputError, StemregError
from stemreg.platform.lazy import CHUNK_BYTES, ModelSpec, frames_per_chunk, run_frames, spec_of, tiles_per_frame

JOB_DIR = ".stemreg-job"
#: Manifest fields that must match for a rerun to resume (and not mix two jobs in one output).
_SAME_JOB = ("input", "input_bytes", "input_mtime_ns", "shape", "chunk_frames", "model_uri", "params", "align",
             "want_sum")


class ChunkFailedError(StemregError):
    """A chunk could not be denoised; the finished chunks are kept for the rerun."""


@dataclass
class StreamJob:
    """Everything a chunk needs, in plain data (it travels to workers; the model does not)."""

    input: str
    output: str
    shape: tuple[int, ...]  # the input's (N, H, W); an image (H, W) is one frame
    chunk_frames: int
    model: ModelSpec
    model_uri: str
    params: dict | None = None
    align: bool = False
    want_sum: bool = False
    shifts: list[list[int]] | None = None
    crop: tuple[int, int, int, int] | None = None
    input_bytes: int = 0
    input_mtime_ns: int = 0
    complete: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def banded(self) -> bool:
        """A single scan in row bands (:mod:`stemreg.platform.scan_bands`): its chunks count rows."""
        return bool(self.extra.get("tiling"))

    @property
    def unit(self) -> str:
        return "row" if self.banded else "frame"

    @property
    def n_frames(self) -> int:
        """Frames of a series; rows of a scan in bands; 1 for a scan in one chunk."""
        return int(self.shape[0]) if len(self.shape) == 3 or self.banded else 1

    @property
    def n_chunks(self) -> int:
        if self.banded:
            return len(self.extra["tiling"]["bands"])
        return -(-self.n_frames // self.chunk_frames)

    def frames_of(self, index: int) -> tuple[int, int]:
        """The frames (of a scan in bands: the rows) chunk ``index`` writes."""
        if self.banded:
            from stemreg.platform.scan_bands import plan_from_json

            return plan_from_json(self.extra["tiling"]).owned(index)
        return index * self.chunk_frames, min((index + 1) * self.chunk_frames, self.n_frames)

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.crop is None:
            return tuple(self.shape)
        r0, r1, c0, c1 = self.crop
        return (self.shape[0], r1 - r0, c1 - c0)

    @property
    def job_dir(self) -> Path:
        return Path(self.output) / JOB_DIR

    def to_json(self) -> dict:
        data = asdict(self)
        data["model"] = asdict(self.model)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "StreamJob":
        data = dict(data)
        data["model"] = ModelSpec(**data["model"])
        data["shape"] = tuple(data["shape"])
        data["crop"] = tuple(data["crop"]) if data.get("crop") else None
        return cls(**data)


def _input_stamp(path: Path) -> tuple[int, int]:
    """Size and modification time of a file, or of a store's files together."""
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def plan_job(input_path: str | Path, output: str | Path, model: Any, *, params: dict | None = None,
             align: bool = False, want_sum: bool = False, chunk_frames: int | None = None,
             chunk_rows: int | None = None, tracking_uri: str | None = None) -> StreamJob:
    """The job for ``input_path`` -> ``output`` (no pixel read yet; alignment is planned by :func:`run_job`).

    Raises
    ------
    ImageReadError
        The input cannot stream (see :func:`stemreg.acquisition.series_io.open_series`).
    BadInputError
        ``align`` or ``want_sum`` on a single image; ``chunk_rows`` on a series, or not a whole
        number of band steps.
    """
    from stemreg.acquisition.series_io import open_series

    series = open_series(input_path)
    shape = series.shape
    if (align or want_sum) and len(shape) != 3:
        raise BadInputError(f"{input_path}: --align and --sum need a series (N, H, W); this is one image {shape}")
    if chunk_rows is not None and len(shape) == 3:
        raise BadInputError(f"{input_path}: --chunk-rows is for a single scan (H, W); a series {shape} takes "
                            "--chunk-frames")
    extra = {"calibration": series.calibration.to_dict(), "format": series.format}
    if len(shape) == 2:
        from stemreg.platform.scan_bands import plan_scan

        tiling = plan_scan(model, shape, params, chunk_rows=chunk_rows, band_bytes=CHUNK_BYTES)
        if tiling is not None:
            extra.update(tiling=tiling, stats=None)
    per_frame = tiles_per_frame(model, shape, params)
    if chunk_frames is not None:
        batch = int((params or {}).get("batch_size") or 8)
        step = frames_per_chunk(shape, params, chunk_bytes=0, tiles_per_frame=per_frame)
        if chunk_frames % step:
            raise BadInputError(f"--chunk-frames {chunk_frames}: give a multiple of {step} (whole batches of "
                                f"{batch} tiles, so the chunks compute what the in-memory run computes)")
    per = chunk_frames or frames_per_chunk(shape, params, tiles_per_frame=per_frame)
    size, mtime = _input_stamp(Path(input_path))
    spec = spec_of(model, tracking_uri)
    if len(shape) == 2:  # rows per chunk (the band height) or the whole scan in one
        from stemreg.platform.scan_bands import plan_from_json

        per = plan_from_json(extra["tiling"]).rows if extra.get("tiling") else 1
    return StreamJob(input=str(Path(input_path).resolve()), output=str(Path(output).resolve()), shape=shape,
                     chunk_frames=per, model=spec, model_uri=spec.model_uri, params=params,
                     align=align, want_sum=want_sum, input_bytes=size, input_mtime_ns=mtime, extra=extra)


# -- what runs on a worker ----------------------------------------------------------------------------
def _source(job: StreamJob) -> Any:
    """The input as a lazy array, opened once per process."""
    from stemreg.acquisition.series_io import open_series_once

    return open_series_once(job.input).data


def _read_frames(job: StreamJob, start: int, stop: int) -> np.ndarray:
    data = _source(job)
    block = data[start:stop] if data.ndim == 3 else data[None]
    return np.asarray(block.compute(scheduler="synchronous"), dtype=np.float32)


def drift_chunk(job: StreamJob, index: int) -> list[list[int]]:
    """Whole-pixel shifts of the chunk's frames against the series' first frame."""
    from stemreg.acquisition.frames import estimate_drift

    start, stop = job.frames_of(index)
    frames = np.concatenate([_read_frames(job, 0, 1), _read_frames(job, start, stop)])
    return estimate_drift(frames)[1:].tolist()


def process_chunk(job: StreamJob, index: int) -> dict:
    """Denoise chunk ``index`` and write it, then its marker (and its partial sum before that)."""
    from stemreg.acquisition.frames import apply_shifts
    from stemreg.acquisition.series_io import open_series_array

    began = time.perf_counter()
    start, stop = job.frames_of(index)
    if job.banded:
        from stemreg.platform.lazy import worker_model
        from stemreg.platform.scan_bands import band_of

        _, out = band_of(job, index, worker_model)
    else:
        frames = _read_frames(job, start, stop)
        if job.crop is not None:
            frames = apply_shifts(frames, np.asarray(job.shifts[start:stop]), job.crop)
        try:
            out = run_frames(job.model, frames, job.params)
        except ValueError as exc:  # NaN/Inf pixels, a frame too small: the input's fault
            raise BadInputError(f"frames {start}-{stop - 1}: {str(exc).splitlines()[0]}") from None
    array = open_series_array(job.output)
    if len(job.shape) == 3 or job.banded:
        array[start:stop] = out
    else:
        array[...] = out[0] if out.ndim == 3 else out
    if job.want_sum:
        _atomic_write(job.job_dir / f"sum-{index}.npy", lambda f: np.save(f, out.sum(axis=0, dtype=np.float64)))
    marker = {job.unit + "s": stop - start, "pid": os.getpid()}
    if not job.banded:  # each frame judged as `stemreg denoise` judges in memory (a scan: once, when complete)
        from stemreg.platform.stream_trust import chunk_trust

        marker["trust"] = chunk_trust(job, index, frames, out)
    seconds = marker["seconds"] = round(time.perf_counter() - began, 3)
    _atomic_write(job.job_dir / f"done-{index}.json", lambda f: f.write(json.dumps(marker).encode()))
    return {"index": index, "frames": stop - start, "seconds": seconds}


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- the job's state on disk ----------------------------------------------------------------------------
def done_chunks(job: StreamJob) -> set[int]:
    """Chunks whose completion marker exists."""
    if not job.job_dir.is_dir():
        return set()
    return {int(p.stem.split("-", 1)[1]) for p in job.job_dir.glob("done-*.json")}


def _manifest(job: StreamJob) -> Path:
    return job.job_dir / "job.json"


def save_manifest(job: StreamJob) -> None:
    _atomic_write(_manifest(job), lambda f: f.write(json.dumps(job.to_json(), indent=1).encode()))


def prepare_output(job: StreamJob, *, overwrite: bool = False) -> tuple[StreamJob, str]:
    """Create the output store, or find the one a killed run of the same job left, to resume.

    Returns the job (with the drift of a resumed aligned job) and ``"new"`` or ``"resumed"``.

    Raises
    ------
    BadInputError
        The output exists and is a finished job, another job, or not a stemreg job: nothing is
        touched (``overwrite`` replaces a finished or foreign stemreg output).
    """
    import shutil

    out = Path(job.output)
    if out.exists():
        manifest = _manifest(job)
        if not manifest.is_file():
            raise BadInputError(f"{out} already exists and is not a stemreg run's output; remove it or give another -o")
        old = StreamJob.from_json(json.loads(manifest.read_text()))
        mine, theirs = job.to_json(), old.to_json()
        differs = [k for k in _SAME_JOB if json.dumps(mine[k]) != json.dumps(theirs[k])]
        if old.complete or differs:
            if not overwrite:
                why = "a finished run" if not differs else f"a run with another {', '.join(differs)}"
                raise BadInputError(f"{out} already exists ({why}); remove it, give another -o, or pass --overwrite")
            shutil.rmtree(out)
        else:
            return old, "resumed"
    return job, "new"


def create_output(job: StreamJob) -> None:
    from stemreg.acquisition.io import Calibration
    from stemreg.acquisition.series_io import create_series_store

    shape = job.out_shape if len(job.shape) == 3 else tuple(job.shape)
    chunks = (job.chunk_frames, *shape[1:]) if len(shape) == 3 else shape
    if job.banded:  # a band writes whole rows of chunks; columns of 2048 px keep a window's read small
        chunks = (job.chunk_frames, min(int(shape[1]), 2048))
    create_series_store(job.output, shape, chunks, Calibration(**job.extra["calibration"]))
    job.job_dir.mkdir(exist_ok=True)
    save_manifest(job)


# -- running ----------------------------------------------------------------------------------------------
class InProcess:
    """Runs chunks one after another in this process (torch uses this machine's cores within a chunk)."""

    workers = 1

    def map(self, fn: Callable, job: StreamJob, indices: Iterable[int]) -> Iterator[tuple[int, Any]]:
        """``(index, fn(job, index))`` for each index, in order."""
        for index in indices:
            yield index, fn(job, index)


def run_job(job: StreamJob, executor: Any, *, progress: Callable[[int], None] | None = None,
            on_start: Callable[[int, int], None] | None = None) -> dict:
    """Run what is missing of ``job`` (created or resumed by :func:`prepare_output`).

    Returns a summary: chunks and frames done in this run, skipped (finished before), seconds,
    frames per second. ``progress(frames)`` is called as chunks finish; ``on_start(done, total)``
    once, with the frames already done.

    Raises
    ------
    ChunkFailedError
        A chunk failed: one line naming its frames and the cause; finished chunks are kept.
    """
    began = time.perf_counter()
    if job.align and job.shifts is None:
        _plan_alignment(job, executor)
    if job.banded and job.extra.get("stats") is None:  # two passes over the rows, before any band
        from stemreg.platform.scan_bands import scan_stats

        try:
            job.extra["stats"] = scan_stats(job, executor)
        except Exception as exc:  # noqa: BLE001 - as a chunk's error below
            kind = BadInputError if isinstance(exc, BadInputError) else ChunkFailedError
            raise kind(f"{Path(job.input).name}: {_line(exc)}; nothing was written") from None
    if not Path(job.output).exists():
        create_output(job)
    done = done_chunks(job)
    todo = [i for i in range(job.n_chunks) if i not in done]
    done_frames = sum(b - a for a, b in map(job.frames_of, done))
    if on_start:
        on_start(done_frames, job.n_frames)
    frames = 0
    try:
        for _, result in executor.map(process_chunk, job, todo):
            frames += result["frames"]
            if progress:
                progress(result["frames"])
    except Exception as exc:  # noqa: BLE001 - a worker's error, whatever it is, becomes one line
        kept = len(done_chunks(job))
        kind = BadInputError if isinstance(exc, BadInputError) else ChunkFailedError
        raise kind(f"{Path(job.input).name}: a chunk failed: {_line(exc)}; {kept} of {job.n_chunks} chunks are "
                   f"finished and kept in {job.output}: rerun the same command to resume") from None
    if job.want_sum:
        _write_sum(job)
    if job.extra.get("as_input"):  # a .tif series also as a .tif, page by page, once the store is whole
        from stemreg.platform.stream_output import write_as_input

        write_as_input(job)
    from stemreg.platform.stream_trust import job_trust

    trust = job_trust(job)
    job.complete = True
    save_manifest(job)
    seconds = time.perf_counter() - began
    return {"chunks": len(todo), "skipped_chunks": len(done), "unit": job.unit, "frames": frames,
            "skipped_frames": done_frames, "trust": trust, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 3) if seconds > 0 else None}


def _line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _plan_alignment(job: StreamJob, executor: Any) -> None:
    from stemreg.acquisition.frames import shared_area

    shifts: dict[int, list[list[int]]] = {}
    chunks = list(range(job.n_chunks))
    for index, result in executor.map(drift_chunk, job, chunks):
        shifts[index] = result
    job.shifts = [s for i in chunks for s in shifts[i]]
    try:
        job.crop = tuple(shared_area(job.shape[1:], np.asarray(job.shifts)))
    except ValueError as exc:
        raise BadInputError(f"{job.input}: {exc}") from None


def sum_path(job: StreamJob) -> Path:
    """Where the sum of the aligned, denoised frames goes: beside the series, ``<name>.sum.tif``."""
    out = Path(job.output)
    return out.with_name(out.stem + ".sum.tif")


def _write_sum(job: StreamJob) -> None:
    from stemreg.acquisition.io import Calibration, write_image

    total = None
    for index in range(job.n_chunks):  # in chunk order: the same sum on every rerun
        part = np.load(job.job_dir / f"sum-{index}.npy")
        total = part if total is None else total + part
    write_image(sum_path(job), total.astype(np.float32), Calibration(**job.extra["calibration"]))
