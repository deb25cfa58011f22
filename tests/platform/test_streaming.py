"""Series and huge scans out of core: lazy in, lazy out; streamed, resumable, on Dask; bounded memory.

A tiny registered model (tests/platform/tiny_models.py) keeps every run short; workers and
subprocesses load it from the store through the verified path, as a lab's cluster would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import stemreg
from stemreg.acquisition.series_io import open_series
from stemreg.platform import registry
from stemreg.platform.cli import main
from stemreg.platform.lazy import _MODELS
from tiny_models import tiny_model_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_champion(mlflow_store, tmp_path):
    """The tiny model registered as low-dose's champion (sha256 tags recorded); loaded once."""
    version, _ = registry.register_version(str(tiny_model_folder(tmp_path / "tiny")), "low-dose")
    return stemreg.load_model("low-dose", alias=str(version.version))


def _series(n: int, h: int = 64, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(4.0, (n, h, w)).astype(np.float32)


def _drifting(n: int, h: int = 64, w: int = 48, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Noisy frames of one smooth random field, each moved by a known whole-pixel drift."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.random((h + 16, w + 16)), 2.0)
    field = 20 + 200 * (field - field.min()) / np.ptp(field)
    drift = np.stack([np.arange(n) % 5, np.arange(n) % 3], axis=1)  # rows, columns, px
    frames = np.stack([field[8 - dy:8 - dy + h, 8 - dx:8 - dx + w] for dy, dx in drift])
    return rng.poisson(frames).astype(np.float32), drift


def _zarr(path: Path, data: np.ndarray, chunk_frames: int = 16) -> Path:
    import zarr

    array = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(chunk_frames, *data.shape[1:]),
                            dtype="float32", compressor=None)
    for start in range(0, len(data), chunk_frames):
        array[start:start + chunk_frames] = data[start:start + chunk_frames]
    array.attrs.update({"pixel_size": 0.02, "unit": "nm"})
    return path


def _denoise(*args: str):
    return CliRunner().invoke(main, ["denoise", "-c", "low-dose", *args])


def test_lazy_signal_in_gives_lazy_signal_out_with_the_in_memory_values(tiny_champion):
    import dask
    import dask.array as da
    import hyperspy.api as hs

    frames = _series(20)
    reads = []

    def read() -> np.ndarray:  # a file read that has to happen when (and only when) the values are asked for
        reads.append(1)
        return frames

    lazy = hs.signals.Signal2D(da.from_delayed(dask.delayed(read)(), frames.shape, np.float32)).as_lazy()
    lazy.axes_manager[1].scale, lazy.axes_manager[1].units = 0.02, "nm"
    out = stemreg.denoise(lazy, model=tiny_champion)
    assert out._lazy and reads == []  # nothing computed yet
    assert (out.axes_manager[1].scale, out.axes_manager[1].units) == (0.02, "nm")
    assert out.data.shape == frames.shape
    values = out.data.compute()
    assert reads and np.array_equal(values, stemreg.denoise(frames, model=tiny_champion))
    # a bare Dask array, any chunking: a Dask array of the same values
    chunked = stemreg.denoise(da.from_array(frames, chunks=(3, 64, 48)), model=tiny_champion)
    assert isinstance(chunked, da.Array) and np.array_equal(chunked.compute(), values)


def test_a_worker_loads_the_pinned_model_itself(tiny_champion, tmp_path):
    from stemreg.platform.lazy import spec_of, worker_model
    from stemreg.platform.prediction import load_shipped_base

    for model in (tiny_champion, load_shipped_base("low-dose")):  # a registered version; the shipped base
        spec = spec_of(model)
        _MODELS.clear()  # a fresh worker: nothing loaded
        loaded = worker_model(spec)
        assert loaded is not model and loaded.model_uri == model.model_uri
    assert spec_of(tiny_champion, "sqlite:///mlflow.db").tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_two_local_workers_write_the_bytes_of_an_in_process_run(tiny_champion, tmp_path):
    from stemreg.platform.dask_exec import open_executor
    from stemreg.platform.stream_job import plan_job, prepare_output, run_job

    frames, drift = _drifting(48)
    source = _zarr(tmp_path / "s.zarr", frames)
    np.save(tmp_path / "scan.npy", _scan(700, 200))
    outputs, scans = {}, {}
    for name, workers in (("inproc", None), ("cluster", 2)):
        job, state = prepare_output(plan_job(source, tmp_path / name / "s.zspy", tiny_champion, chunk_frames=8,
                                             align=True, want_sum=True))
        scan_job, _ = prepare_output(plan_job(tmp_path / "scan.npy", tmp_path / name / "scan.zspy", tiny_champion,
                                              params={"tile_px": 64}, chunk_rows=108))
        _MODELS.clear()  # the workers load the model themselves, from the store, sha256 verified
        with open_executor(workers=workers, processes=False) as executor:
            summary = run_job(job, executor)
            assert run_job(scan_job, executor)["chunks"] == 6  # a scan's bands (and its statistics) too
        assert state == "new" and summary["chunks"] == 6
        assert np.array_equal(job.shifts, -drift)  # the drift undone, chunk by chunk, against frame 0
        outputs[name], scans[name] = open_series(job.output), open_series(scan_job.output).data.compute()
    assert np.array_equal(outputs["inproc"].data.compute(), outputs["cluster"].data.compute())
    assert np.array_equal(scans["inproc"], scans["cluster"])
    sums = [(tmp_path / name / "s.sum.tif").read_bytes() for name in ("inproc", "cluster")]
    assert sums[0] == sums[1]
    assert outputs["cluster"].calibration.pixel_size_pm() == pytest.approx(20.0)


def _scan(h: int, w: int, seed: int = 2) -> np.ndarray:
    """A noisy scan with slow structure (so its statistics are not those of any band alone)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(2.0, 40.0, h, dtype=np.float32)[:, None] + np.linspace(0, 9, w, dtype=np.float32)
    return rng.poisson(ramp).astype(np.float32)


def _band_rows(model, shape, tile_px, bands_per_step=1):
    """Image rows in ``bands_per_step`` of the smallest bands the tiling allows."""
    from stemreg.models.bands import row_step
    from stemreg.platform.scan_bands import band_plan_of

    tiles = band_plan_of(model, shape, {"tile_px": tile_px}).tiles
    return row_step(tiles) * tiles.core_h * bands_per_step


def test_a_scan_streams_in_row_bands_with_the_in_memory_bytes(tiny_champion, tmp_path):
    import dask.array as da
    import tifffile

    from stemreg.platform.stream_job import plan_job, prepare_output, run_job, InProcess

    scan = _scan(700, 200)  # 64 px tiles: 13 rows of 4 (whole batches of 8 every 2 tile rows)
    params = {"tile_px": 64}
    expected = stemreg.denoise(scan, model=tiny_champion, params=params)
    # lazy: a 2-D Dask array comes back in row bands (about as tall as its row chunks), same bytes
    lazy = stemreg.denoise(da.from_array(scan, chunks=(100, 200)), model=tiny_champion, params=params)
    assert lazy.numblocks[0] > 2 and np.array_equal(lazy.compute(), expected)
    # streamed from .npy and from a strip-compressed .tif, in bands of whole tile rows
    rows = _band_rows(tiny_champion, scan.shape, 64)
    np.save(tmp_path / "scan.npy", scan)
    tifffile.imwrite(tmp_path / "scan.tif", scan, compression="zlib", rowsperstrip=32)
    for name in ("scan.npy", "scan.tif"):
        result = _denoise(str(tmp_path / name), "-o", str(tmp_path / "o"), "--tile-px", "64", "--chunk-rows",
                          str(rows), "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)["files"][0]
        assert report["unit"] == "row" and report["frames"] == 700 and report["chunks"] >= 3
        assert report["trust"]["verdict"] in ("ok", "doubtful", "out of range")  # its central 192 px judged
        out = open_series(tmp_path / "o" / "scan.zspy").data
        assert out.chunks[0][0] == rows and np.array_equal(out.compute(), expected)
        (tmp_path / "o" / "scan.zspy").rename(tmp_path / "o" / f"{name}.done")
    # a run stopped after its first band resumes from the second; the statistics are not recomputed
    job, _ = prepare_output(plan_job(tmp_path / "scan.npy", tmp_path / "r" / "scan.zspy", tiny_champion,
                                     params=params, chunk_rows=rows))

    def stop(_):
        raise RuntimeError("stopped")  # as a chunk that fails after the first one finished

    with pytest.raises(Exception, match="1 of"):
        run_job(job, InProcess(), progress=stop)
    resumed, state = prepare_output(plan_job(tmp_path / "scan.npy", tmp_path / "r" / "scan.zspy", tiny_champion,
                                             params=params, chunk_rows=rows))
    assert state == "resumed" and resumed.extra["stats"] == job.extra["stats"]
    assert run_job(resumed, InProcess())["skipped_chunks"] == 1
    assert np.array_equal(open_series(tmp_path / "r" / "scan.zspy").data.compute(), expected)


def test_a_scan_of_a_model_that_repairs_defects_streams_in_bands_with_the_in_memory_bytes(mlflow_store, tmp_path):
    import dask.array as da

    from stemreg.models.impulses import NOISE_WINDOW_PX
    from stemreg.platform.scan_bands import band_plan_of

    # taller than the noise model's window: the repair's noise comes from the central window either way
    version, _ = registry.register_version(str(tiny_model_folder(tmp_path / "tiny", impulse_k=6.0)), "low-dose")
    model = stemreg.load_model("low-dose", alias=str(version.version))
    scan = _scan(NOISE_WINDOW_PX + 76, 96)
    hot = [(5, 7), (301, 40), (1099, 90)]  # one by the top edge, one inside, one on the last row
    for r, c in hot:
        scan[r, c] = 5000.0
    params = {"tile_px": 64}
    expected = stemreg.denoise(scan, model=model, params=params)
    assert all(expected[r, c] < 500 for r, c in hot)  # repaired before the network: no spike left
    lazy = stemreg.denoise(da.from_array(scan, chunks=(128, 96)), model=model, params=params)
    assert lazy.numblocks[0] > 2 and np.array_equal(lazy.compute(), expected)
    tiles = band_plan_of(model, scan.shape, params).tiles
    from stemreg.models.bands import row_step

    np.save(tmp_path / "scan.npy", scan)
    result = _denoise(str(tmp_path / "scan.npy"), "-o", str(tmp_path / "o"), "--tile-px", "64", "--chunk-rows",
                      str(row_step(tiles) * tiles.core_h), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"][0]["chunks"] >= 3
    assert np.array_equal(open_series(tmp_path / "o" / "scan.zspy").data.compute(), expected)


def test_a_tif_series_also_comes_back_as_a_tif_written_page_by_page(tiny_champion, tmp_path):
    import tifffile

    frames = _series(24)
    tifffile.imwrite(tmp_path / "s.tif", frames, imagej=True, resolution=(50, 50), metadata={"unit": "nm"})
    args = [str(tmp_path / "s.tif"), "-o", str(tmp_path / "o"), "--as-input", "--chunk-frames", "8"]
    result = _denoise(*args, "--json")
    assert result.exit_code == 0, result.output
    written = Path(json.loads(result.stdout)["files"][0]["as_input"])
    assert written == tmp_path / "o" / "s.tif" and len(tifffile.TiffFile(written).pages) == 24
    back = open_series(written)
    assert back.calibration.pixel_size_pm() == pytest.approx(20.0)
    assert np.array_equal(back.data.compute(), stemreg.denoise(frames, model=tiny_champion))
    # an existing .tif is refused before anything runs, and left as it was; a scan cannot be asked for
    before = written.stat().st_mtime_ns
    result = _denoise(*args)
    assert result.exit_code == 2 and "s.tif already exists" in result.output and written.stat().st_mtime_ns == before
    tifffile.imwrite(tmp_path / "scan.tif", frames[0])
    result = _denoise(str(tmp_path / "scan.tif"), "-o", str(tmp_path / "o2"), "--as-input")
    assert result.exit_code == 2 and "--as-input writes .tif series only" in result.output


def _markers(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (out / ".stemreg-job").glob("done-*.json")}


def test_a_killed_run_resumes_without_redoing_finished_chunks(tiny_champion, tmp_path):
    frames = _series(64, 128, 128)
    source = _zarr(tmp_path / "s.zarr", frames)
    out = tmp_path / "o" / "s.zarr"
    child = subprocess.Popen([str(Path(sys.executable).with_name("stemreg")), "denoise", "-c", "low-dose",
                              str(source), "-o", str(tmp_path / "o"), "--chunk-frames", "8", "--json"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _markers(out) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)  # as a power cut or the queue's time limit would
    finally:
        child.wait()
    finished = _markers(out)
    assert 0 < len(finished) < 8, "the run must be killed midway for this test to mean anything"
    result = _denoise(str(source), "-o", str(tmp_path / "o"), "--chunk-frames", "8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["files"][0]
    assert report["state"] == "resumed" and report["skipped_chunks"] == len(finished)
    assert report["chunks"] + report["skipped_chunks"] == 8
    # judged as in memory, the first frame of each chunk (the killed run's verdicts kept in its markers)
    assert [t["frame"] for t in report["trust"]] == list(range(0, 64, 8))
    assert {t["verdict"] for t in report["trust"]} <= {"ok", "doubtful", "out of range"}
    after = _markers(out)
    assert {name: after[name] for name in finished} == finished  # the killed run's chunks were not redone
    assert np.array_equal(open_series(out).data.compute(), stemreg.denoise(frames, model=tiny_champion))


#: The child runs a small series and a small scan first (imports, model, first forward passes, stores:
#: what any run holds), then each big run with the kernel's peak RSS (VmHWM) reset before it, and
#: reports what each added to the memory it held before it.
_MEASURED_RUN = r"""
import json, sys
from stemreg.platform.cli import main
def status(key):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key))) * 1024
runs, current = [], []
for arg in sys.argv[1:] + ["--then"]:
    if arg == "--then":
        runs.append(current)
        current = []
    else:
        current.append(arg)
for argv in runs[:2]:
    main(argv, standalone_mode=False)
grown = []
for argv in runs[2:]:
    open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
    base = status("VmRSS:")
    main(argv, standalone_mode=False)
    grown.append(status("VmHWM:") - base)
print(json.dumps({"grown_bytes": grown}), file=sys.stderr)
"""


def test_a_series_and_a_scan_larger_than_the_memory_cap_stream_under_it(tiny_champion, tmp_path):
    import zarr

    cap_bytes = 16 * 2**20  # what a run may add to a process that has run once (imports, model, stores)
    frames = 768  # of 128 x 128 float32: 48 MiB, three times the cap (runs add 3-10 MiB: allocator noise)
    source = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(frames, 128, 128), chunks=(32, 128, 128),
                             dtype="float32", compressor=None)
    block = _series(32, 128, 128)
    for start in range(0, frames, 32):
        source[start:start + 32] = block + start
    _zarr(tmp_path / "small.zarr", block)
    scan = np.lib.format.open_memmap(tmp_path / "scan.npy", mode="w+", dtype=np.float32, shape=(6466, 1952))
    for start in range(0, 6466, 1078):  # 48.1 MiB, three times the cap, written without holding it
        scan[start:start + 1078] = _scan(min(1078, 6466 - start), 1952, seed=start)
    scan.flush()
    np.save(tmp_path / "small.npy", _scan(610, 1952))  # the same tiling: rows of 16 tiles of 122 px
    assert source.nbytes >= 3 * cap_bytes and scan.nbytes >= 3 * cap_bytes
    series = ["denoise", "-c", "low-dose", "--chunk-frames", "16", "--json", "-o", str(tmp_path / "o")]
    rows = _band_rows(tiny_champion, scan.shape, 128)  # the smallest bands: one tile row, 122 rows of 7.6 kB
    scans = ["denoise", "-c", "low-dose", "--tile-px", "128", "--chunk-rows", str(rows), "--json", "--stream", "-o",
             str(tmp_path / "o")]
    child = subprocess.run([sys.executable, "-c", _MEASURED_RUN, *series, str(tmp_path / "small.zarr"), "--then",
                            *scans, str(tmp_path / "small.npy"), "--then", *series, str(tmp_path / "big.zarr"),
                            "--then", *scans, str(tmp_path / "scan.npy")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-2000:]
    grown = json.loads(child.stderr.strip().splitlines()[-1])["grown_bytes"]
    reports, text = [], child.stdout.strip()
    while text:  # one JSON document per run
        report, end = json.JSONDecoder().raw_decode(text)
        reports, text = [*reports, report], text[end:].strip()
    assert reports[2]["files"][0]["frames"] == frames and reports[3]["files"][0]["frames"] == 6466
    assert reports[3]["files"][0]["chunks"] > 20
    for what, added in zip(("series", "scan"), grown):
        assert added < cap_bytes, f"the {what} run added {added / 2**20:.1f} MiB, over the {cap_bytes >> 20} MiB cap"


def test_bad_input_is_one_line_and_loses_nothing(tiny_champion, tmp_path):
    frames = _series(24)
    # a truncated series: refused before any output exists
    np.save(tmp_path / "cut.npy", frames)
    whole = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[:len(whole) * 2 // 3])
    result = _denoise(str(tmp_path / "cut.npy"), "-o", str(tmp_path / "o1"), "--stream")
    assert result.exit_code == 2 and "truncated" in result.output
    assert len(result.output.strip().splitlines()[-1]) < 300 and not (tmp_path / "o1" / "cut.zspy").exists()
    # a chunk that fails midway (a frame of NaN in the third chunk): the two finished chunks are kept
    broken = frames.copy()
    broken[17, 3, 3] = np.nan
    _zarr(tmp_path / "nan.zarr", broken)
    result = _denoise(str(tmp_path / "nan.zarr"), "-o", str(tmp_path / "o2"), "--chunk-frames", "8")
    assert result.exit_code == 2 and "frames 16-23" in result.output and "2 of 3 chunks are finished" in result.output
    assert sorted(_markers(tmp_path / "o2" / "nan.zarr")) == ["done-0.json", "done-1.json"]
    # a scheduler that cannot be reached: nothing is created
    result = _denoise(str(tmp_path / "nan.zarr"), "-o", str(tmp_path / "o3"), "--scheduler", "tcp://127.0.0.1:9",
                      "--connect-timeout", "1")
    assert result.exit_code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.output
    assert not (tmp_path / "o3" / "nan.zarr").exists()
    # a scan with NaN in its middle: refused in the statistics pass, one line naming the rows, nothing written
    scan = _scan(700, 200)
    scan[400, 7] = np.nan
    np.save(tmp_path / "nan.npy", scan)
    result = _denoise(str(tmp_path / "nan.npy"), "-o", str(tmp_path / "o5"), "--stream", "--tile-px", "64")
    assert result.exit_code == 2 and "NaN" in result.output and "row 400" in result.output
    assert len(result.output.strip().splitlines()[-1]) < 300 and not (tmp_path / "o5" / "nan.zspy").exists()
    # a truncated scan: refused before anything is read or written
    np.save(tmp_path / "cut2d.npy", scan)
    whole = (tmp_path / "cut2d.npy").read_bytes()
    (tmp_path / "cut2d.npy").write_bytes(whole[:len(whole) // 2])
    result = _denoise(str(tmp_path / "cut2d.npy"), "-o", str(tmp_path / "o5"), "--stream", "--tile-px", "64")
    assert result.exit_code == 2 and "truncated" in result.output and not (tmp_path / "o5" / "cut2d.zspy").exists()
    # chunk sizes that would change the bytes are refused with the step to use
    result = _denoise(str(tmp_path / "nan.npy"), "-o", str(tmp_path / "o5"), "--tile-px", "64", "--chunk-rows", "100")
    assert result.exit_code == 2 and "--chunk-rows 100: give a multiple of 108" in result.output
    result = _denoise(str(tmp_path / "nan.zarr"), "-o", str(tmp_path / "o5"), "--chunk-rows", "108")
    assert result.exit_code == 2 and "--chunk-rows is for a single scan" in result.output
    # an output that already exists (a finished run) is refused and left as it was
    _zarr(tmp_path / "ok.zarr", frames)
    assert _denoise(str(tmp_path / "ok.zarr"), "-o", str(tmp_path / "o4")).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "o4").rglob("*")}
    result = _denoise(str(tmp_path / "ok.zarr"), "-o", str(tmp_path / "o4"))
    assert result.exit_code == 2 and "already exists (a finished run)" in result.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "o4").rglob("*")} == before
