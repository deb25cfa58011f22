"""Streamed denoising: frames/s in-process and on 1 and 2 local Dask workers; peak memory vs series and scan size.

    nice -n 19 python benchmarks/bench_stream.py                  # every part, the defaults below
    nice -n 19 python benchmarks/bench_stream.py --part throughput --frames 128 --repeat 2
    nice -n 19 python benchmarks/bench_stream.py --part memory --sizes-mb 32 320 --cap-mb 32
    nice -n 19 python benchmarks/bench_stream.py --part scan --scan-rows 1000 10500 --cap-mb 32

Throughput: `stemreg denoise` of one .zarr series in-process (torch on every core), with
`--workers 1` and with `--workers 2` (dask.distributed LocalCluster, one thread per worker process),
with the model a fresh install uses (the shipped pretrained base, nothing registered). The rows run
one after another, ``--repeat`` times in turn (1 worker, 2 workers, in-process, 1 worker, ...), each
with the load average printed before it: on a shared machine the load moves under a run, and the
rows are only comparable within a round. frames/s is the job's own rate (the cluster's start-up is
printed apart; each worker loads the model inside the job, on its first chunk).

Memory: `stemreg denoise` on .zarr series of growing size (``--part memory``) and on single
.npy scans of growing size in row bands (``--part scan``: 8000 px wide, 256 px tiles, bands of one
tile row, ``--chunk-rows 250``), with a tiny registered model (the memory a run holds does not
depend on the network's size beyond one batch's activations). Each run is a child process that
first denoises a small input of the same kind (imports, model, stores: what any run holds), then
resets the kernel's peak-RSS counter (/proc/self/clear_refs) and streams the big one; it prints its
RSS before and its peak during (VmHWM). Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEMREG = str(Path(sys.executable).with_name("stemreg"))

_MEASURED_RUN = r"""
import json, sys
from stemreg.platform.cli import main
def status(key):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key))) * 1024
split = sys.argv.index("--then")
main(sys.argv[1:split], standalone_mode=False)
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS:")
main(sys.argv[split + 1:], standalone_mode=False)
print(json.dumps({"base_bytes": base, "peak_bytes": status("VmHWM:")}), file=sys.stderr)
"""


def _write_zarr(path: Path, n_frames: int, size_px: int, seed: int = 0) -> Path:
    import zarr

    array = zarr.open_array(str(path), mode="w", shape=(n_frames, size_px, size_px), dtype="float32",
                            chunks=(64, size_px, size_px), compressor=None)
    rng = np.random.default_rng(seed)
    block = rng.poisson(4.0, (64, size_px, size_px)).astype(np.float32)
    for start in range(0, n_frames, 64):
        stop = min(start + 64, n_frames)
        array[start:stop] = block[:stop - start] + start % 7
    return path


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def _steady(store: Path, workers: int) -> tuple[float, float]:
    """Frames/s from the chunk markers once every worker has finished its first chunk (the model loads
    and imports are behind it), and the median seconds a chunk took where it ran."""
    markers = sorted((p.stat().st_mtime, json.loads(p.read_text())) for p in (store / ".stemreg-job").glob("done-*"))
    later = markers[workers:]
    span = markers[-1][0] - markers[workers - 1][0]
    steady = sum(m["frames"] for _, m in later) / span if later and span > 0 else float("nan")
    return round(steady, 2), float(np.median([m["seconds"] for _, m in markers]))


def throughput(args: argparse.Namespace, work: Path) -> list[dict]:
    series = _write_zarr(work / "series.zarr", args.frames, args.size)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # no store here: the shipped base
    chunks = -(-args.frames // args.chunk_frames)
    print(f"series: {args.frames} frames of {args.size} px, {chunks} chunks of {args.chunk_frames} "
          f"({chunks // 2} per worker with 2 workers)", flush=True)
    modes = (("1 worker", ["--workers", "1"]), ("2 workers", ["--workers", "2"]), ("in-process", []))
    rows = []
    for round_ in range(1, args.repeat + 1):
        for label, extra in modes:
            out = work / f"out-{label.replace(' ', '-')}-{round_}"
            load = _load()
            began = time.perf_counter()
            child = subprocess.run([STEMREG, "denoise", "-c", "low-dose", str(series), "-o", str(out), "--json",
                                    "--chunk-frames", str(args.chunk_frames), *extra], capture_output=True,
                                   text=True, env=env, cwd=work)
            wall = time.perf_counter() - began
            if child.returncode:
                raise SystemExit(child.stderr[-2000:])
            report = json.loads(child.stdout)["files"][0]
            steady, chunk_s = _steady(Path(report["output"]), 2 if label == "2 workers" else 1)
            rows.append({"round": round_, "mode": label, "frames": report["frames"], "job_s": report["seconds"],
                         "frames_per_s": report["frames_per_s"], "steady_frames_per_s": steady,
                         "median_chunk_s": chunk_s, "wall_s": round(wall, 1), "load_before": load})
            print(f"round {round_} {label:>11}: {report['frames_per_s']:6.2f} frames/s, {steady:6.2f} after each "
                  f"worker's first chunk, median chunk {chunk_s:.2f} s ({report['frames']} frames in "
                  f"{report['seconds']:.1f} s; {wall:.1f} s with start-up; load before {load})", flush=True)
            subprocess.run(["rm", "-rf", str(out)], check=False)
    return rows


def _register_tiny(work: Path) -> dict:
    if (work / "tiny.env.json").is_file():  # registered by the other memory part of this run
        return json.loads((work / "tiny.env.json").read_text())
    import mlflow.pyfunc
    import torch

    from stemreg.models.architectures import build_model
    from stemreg.models.mlflow_model import log_model_args, model_signature

    uri = f"sqlite:///{work / 'tiny.db'}"
    torch.manual_seed(0)
    net = build_model({"kind": "reverse-hourglass", "depth": 3, "widths": [4, 4], "kernel_size": 3})
    mlflow.pyfunc.save_model(str(work / "tiny"), **log_model_args(net, work / "tiny-data"),
                             signature=model_signature(), pip_requirements=["torch==2.13.0"])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    code = ("from stemreg.platform import registry; import sys; "
            "registry.register_version(sys.argv[1], 'low-dose')")
    subprocess.run([sys.executable, "-c", code, str(work / "tiny")], check=True, env=env, capture_output=True)
    (work / "tiny.env.json").write_text(json.dumps(env))
    return env


def memory(args: argparse.Namespace, work: Path) -> list[dict]:
    env = _register_tiny(work)
    size = args.mem_size
    frame_bytes = 4 * size * size
    _write_zarr(work / "warm.zarr", args.chunk_frames, size)
    rows = []
    for mb in args.sizes_mb:
        n = max(args.chunk_frames, int(mb * 2**20 // frame_bytes) // args.chunk_frames * args.chunk_frames)
        series = _write_zarr(work / f"s{mb}.zarr", n, size)
        run = ["denoise", "-c", "low-dose", "--json", "--chunk-frames", str(args.chunk_frames), "-o",
               str(work / f"mem-{mb}")]
        began = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _MEASURED_RUN, *run, str(work / "warm.zarr"), "--then", *run,
                                str(series)], capture_output=True, text=True, env=env, cwd=work)
        if child.returncode:
            raise SystemExit(child.stderr[-2000:])
        figures = json.loads(child.stderr.strip().splitlines()[-1])
        grown = (figures["peak_bytes"] - figures["base_bytes"]) / 2**20
        row = {"series_mb": round(n * frame_bytes / 2**20), "frames": n, "rss_before_mb": figures["base_bytes"] / 2**20,
               "peak_rss_mb": figures["peak_bytes"] / 2**20, "added_mb": grown, "cap_mb": args.cap_mb,
               "under_cap": grown < args.cap_mb, "seconds": round(time.perf_counter() - began, 1)}
        rows.append(row)
        print(f"series {row['series_mb']:6d} MB ({n} frames of {size} px): RSS {row['rss_before_mb']:.0f} MB before, "
              f"peak {row['peak_rss_mb']:.0f} MB, +{grown:.1f} MB (cap {args.cap_mb} MB: "
              f"{'under' if row['under_cap'] else 'OVER'}) in {row['seconds']:.0f} s", flush=True)
        subprocess.run(["rm", "-rf", str(series), str(work / f"mem-{mb}")], check=False)
    return rows


def _write_scan(path: Path, rows: int, width: int, seed: int = 0) -> Path:
    scan = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 500):  # written in blocks: the benchmark does not hold the scan either
        stop = min(start + 500, rows)
        ramp = np.linspace(2, 40, rows, dtype=np.float32)[start:stop, None]
        scan[start:stop] = rng.poisson(np.broadcast_to(ramp, (stop - start, width))).astype(np.float32)
    scan.flush()
    del scan
    return path


def scans(args: argparse.Namespace, work: Path) -> list[dict]:
    env = _register_tiny(work)
    width = 8000  # 256 px tiles of the tiny model (overlap 3 px): 32 tiles of 250 px a row, 4 batches of 8
    _write_scan(work / "warm.npy", 500, width)
    rows = []
    for n in args.scan_rows:
        scan = _write_scan(work / f"scan{n}.npy", n, width)
        run = ["denoise", "-c", "low-dose", "--json", "--stream", "--tile-px", "256", "--chunk-rows", "250", "-o",
               str(work / f"scan-{n}")]
        began = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _MEASURED_RUN, *run, str(work / "warm.npy"), "--then", *run,
                                str(scan)], capture_output=True, text=True, env=env, cwd=work)
        if child.returncode:
            raise SystemExit(child.stderr[-2000:])
        figures = json.loads(child.stderr.strip().splitlines()[-1])
        text, decoder = child.stdout.strip(), json.JSONDecoder()
        while text:  # one JSON document per run: the big scan's is the last
            report, end = decoder.raw_decode(text)
            text = text[end:].strip()
        report = report["files"][0]
        grown = (figures["peak_bytes"] - figures["base_bytes"]) / 2**20
        row = {"scan_mb": round(n * width * 4 / 2**20), "shape": [n, width], "bands": report["chunks"],
               "rss_before_mb": figures["base_bytes"] / 2**20, "peak_rss_mb": figures["peak_bytes"] / 2**20,
               "added_mb": grown, "cap_mb": args.cap_mb, "under_cap": grown < args.cap_mb,
               "rows_per_s": report["frames_per_s"], "seconds": round(time.perf_counter() - began, 1)}
        rows.append(row)
        print(f"scan {row['scan_mb']:6d} MB ({n} x {width} px, {row['bands']} bands of 250 rows): RSS "
              f"{row['rss_before_mb']:.0f} MB before, peak {row['peak_rss_mb']:.0f} MB, +{grown:.1f} MB (cap "
              f"{args.cap_mb} MB: {'under' if row['under_cap'] else 'OVER'}) in {row['seconds']:.0f} s, load {_load()}",
              flush=True)
        subprocess.run(["rm", "-rf", str(scan), str(work / f"scan-{n}")], check=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "throughput", "memory", "scan"], default="all")
    parser.add_argument("--frames", type=int, default=128, help="Throughput: frames in the series.")
    parser.add_argument("--repeat", type=int, default=2, help="Throughput: rounds of the three rows, in turn.")
    parser.add_argument("--size", type=int, default=128, help="Throughput: frame edge (px).")
    parser.add_argument("--chunk-frames", type=int, default=8)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[64, 640], help="Memory: series sizes (MB).")
    parser.add_argument("--mem-size", type=int, default=256, help="Memory: frame edge (px).")
    parser.add_argument("--scan-rows", type=int, nargs="+", default=[1000, 10500],
                        help="Scan: rows of the 8000 px wide scans (multiples of 250; 10500 rows: 320 MiB).")
    parser.add_argument("--cap-mb", type=int, default=64, help="Memory: the cap on what a run may add.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at start",
          flush=True)
    result: dict = {"cores": os.cpu_count(), "load_at_start": load}
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        work = Path(tmp)
        if args.part in ("all", "throughput"):
            result["throughput"] = throughput(args, work)
        if args.part in ("all", "memory"):
            result["memory"] = memory(args, work)
        if args.part in ("all", "scan"):
            result["scan"] = scans(args, work)
    result["load_at_end"] = os.getloadavg()
    print(f"load average at end {result['load_at_end'][0]:.1f}")
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
