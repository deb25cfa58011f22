"""Throughput and latency of `stemreg serve` for a 256 x 256 image.

Starts the real `stemreg serve` in a subprocess (so the client's work does not
share the server's interpreter), then measures

- sequential latency (mean, p50, p95) of POST /denoise with .npy and .tif
  bodies, and of POST /invocations with the same image as JSON;
- throughput (requests/s) of /denoise (.npy) with several concurrent clients;
- the bare model: `mlflow.pyfunc.load_model(...).predict` on the same image
  in this process, so the server's own overhead shows.

By default it serves the champion of --condition from the store in force
(MLFLOW_TRACKING_URI, else ./mlflow.db). With --temp-model (or when that
store has no champion) it registers an untrained default 8-layer reverse
hourglass in a temporary store: speed does not depend on the weights.

    python benchmarks/bench_serving.py [--condition low-dose] [--requests 30]
        [--clients 4] [--seconds 10] [--temp-model] [--json]

With --compare-mlflow it instead runs `stemreg serve` and `mlflow models serve`
(same model, same interpreter) one after the other, 8 clients posting the same
/invocations JSON for 256^2 and 1024^2 images (and stemreg's binary /denoise
path beside), and prints frames/s, their ratio, p50/p95 latency and each
server's RSS (its whole process tree).
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZE_PX = 256


def register_temp_model(root: Path) -> str:
    """Register an untrained default reverse hourglass as stem-denoiser-low-dose@champion."""
    import mlflow

    from stemreg.models.hourglass import ReverseHourglass
    from stemreg.models.mlflow_model import log_model_args, model_signature

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.chdir(root)
    mlflow.set_experiment("bench-serving")
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **log_model_args(ReverseHourglass(), tmp),
                                       signature=model_signature(), pip_requirements=["torch==2.13.0"])
    version = mlflow.register_model(info.model_uri, "stem-denoiser-low-dose")
    mlflow.MlflowClient().set_registered_model_alias("stem-denoiser-low-dose", "champion", version.version)
    return uri


def has_champion(uri: str, condition: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return False  # don't create an empty store just to look in it

    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
            f"stem-denoiser-{condition}", "champion")
        return True
    except MlflowException:
        return False


def start_server(uri: str, condition: str, max_pixels: int = 8 * SIZE_PX * SIZE_PX) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from stemreg.platform.cli import main; main()", "serve",
                             "--condition", condition,
                             "--port", "0", "--poll-seconds", "0", "--max-pixels", str(max_pixels)],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    port = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"stemreg serve exited with {proc.returncode}")
        if port is None and (found := re.search(r"http://127\.0\.0\.1:(\d+)", line)):
            port = int(found.group(1))
        if "ready, serving" in line:
            break
    if port is None:
        raise RuntimeError("stemreg serve did not start within 180 s")
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, port


def post(conn: http.client.HTTPConnection, path: str, body: bytes, content_type: str) -> bytes:
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path} answered {resp.status}: {data[:300]!r}")
    return data


def latency_ms(port: int, path: str, body: bytes, content_type: str, n: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(2):  # warm-up
        post(conn, path, body, content_type)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        post(conn, path, body, content_type)
        times.append((time.perf_counter() - start) * 1e3)
    conn.close()
    times.sort()
    return {"mean_ms": statistics.fmean(times), "p50_ms": times[len(times) // 2],
            "p95_ms": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))],
            "requests": n}


def throughput(port: int, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop:
            post(conn, "/denoise", body, "application/x-npy")
            done[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "seconds": elapsed, "requests": sum(done),
            "requests_per_s": sum(done) / elapsed}


def bare_model_ms(uri: str, condition: str, image: np.ndarray, n: int) -> float:
    import mlflow.pyfunc

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/stem-denoiser-{condition}@champion")
    model.predict(image[None])
    start = time.perf_counter()
    for _ in range(n):
        model.predict(image[None])
    return (time.perf_counter() - start) / n * 1e3


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(uri: str, condition: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    """`mlflow models serve` (1 worker, local env) whose uvicorn is this interpreter's."""
    shim = workdir / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "uvicorn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    (shim / "uvicorn").chmod(0o755)
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                             f"models:/stem-denoiser-{condition}@champion", "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("mlflow models serve did not answer /ping within 180 s")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (from /proc), MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def load(port: int, path: str, body: bytes, content_type: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` keep-alive clients posting `body` for `seconds`: frames/s, p50/p95 latency."""
    times: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while time.monotonic() < stop:
            start = time.perf_counter()
            post(conn, path, body, content_type)
            with lock:
                times.append((time.perf_counter() - start) * 1e3)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    times.sort()
    return {"frames_per_s": len(times) / elapsed, "requests": len(times),
            "p50_ms": times[len(times) // 2] if times else float("nan"),
            "p95_ms": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))] if times else float("nan")}


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def compare_mlflow(uri: str, condition: str, workdir: Path, sizes: list[int], clients: int,
                   seconds: float) -> dict:
    rng = np.random.default_rng(0)
    images = {n: (rng.poisson(20.0, size=(n, n)) / 20.0).astype(np.float32) for n in sizes}
    bodies = {n: json.dumps({"inputs": img[None].tolist()}).encode() for n, img in images.items()}
    npys = {}
    for n, img in images.items():
        buf = io.BytesIO()
        np.save(buf, img)
        npys[n] = buf.getvalue()
    out: dict = {"clients": clients, "seconds_per_case": seconds}
    for server in ("stemreg", "mlflow"):
        proc, port = (start_server(uri, condition, max_pixels=4096 * 4096) if server == "stemreg"
                      else start_mlflow_server(uri, condition, workdir))
        try:
            for n in sizes:
                post(http.client.HTTPConnection("127.0.0.1", port, timeout=300), "/invocations", bodies[n],
                     "application/json")  # warm-up
                out[f"{server}_invocations_{n}"] = load(port, "/invocations", bodies[n], "application/json",
                                                        clients, seconds)
                out[f"{server}_invocations_{n}"]["rss_mb"] = tree_rss_mb(proc.pid)
                if server == "stemreg":
                    out[f"stemreg_denoise_npy_{n}"] = load(port, "/denoise", npys[n], "application/x-npy",
                                                           clients, seconds)
                    out[f"stemreg_denoise_npy_{n}"]["rss_mb"] = tree_rss_mb(proc.pid)
        finally:
            _stop(proc)
    for n in sizes:
        base = out[f"mlflow_invocations_{n}"]["frames_per_s"]
        out[f"ratio_invocations_{n}"] = out[f"stemreg_invocations_{n}"]["frames_per_s"] / base if base else None
        out[f"ratio_denoise_npy_{n}"] = out[f"stemreg_denoise_npy_{n}"]["frames_per_s"] / base if base else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--requests", type=int, default=30, help="sequential requests per format")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for throughput")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    parser.add_argument("--temp-model", action="store_true",
                        help="register an untrained default hourglass in a temp store and serve that")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--compare-mlflow", action="store_true",
                        help="frames/s of stemreg serve vs mlflow models serve, 256^2 and 1024^2, --clients 8")
    parser.add_argument("--sizes", default="256,1024", help="image sizes for --compare-mlflow")
    args = parser.parse_args()

    from stemreg.acquisition import write_image
    from stemreg.platform.store import tracking_uri

    tmp = tempfile.TemporaryDirectory(prefix="bench-serving-")
    uri = tracking_uri()
    if args.temp_model or not has_champion(uri, args.condition):
        args.condition = "low-dose"
        uri = register_temp_model(Path(tmp.name))
        source = "untrained default 8-layer reverse hourglass (temp store)"
    else:
        source = f"stem-denoiser-{args.condition}@champion in {uri}"

    if args.compare_mlflow:
        sizes = [int(n) for n in args.sizes.split(",")]
        figures = compare_mlflow(uri, args.condition, Path(tmp.name), sizes, args.clients, args.seconds)
        figures["model"] = source
        if args.json:
            print(json.dumps(figures, indent=2))
            return
        print(f"stemreg serve vs mlflow models serve, {args.clients} clients, {args.seconds:.0f} s per case, "
              f"model: {source}")
        for n in sizes:
            for key in (f"stemreg_invocations_{n}", f"stemreg_denoise_npy_{n}", f"mlflow_invocations_{n}"):
                f = figures[key]
                print(f"  {key:28s} {f['frames_per_s']:7.2f} frames/s  p50 {f['p50_ms']:8.0f} ms  "
                      f"p95 {f['p95_ms']:8.0f} ms  RSS {f['rss_mb']:6.0f} MB  ({f['requests']} requests)")
            print(f"  {n}^2 ratio stemreg/mlflow: /invocations {figures[f'ratio_invocations_{n}']:.2f}x, "
                  f"/denoise npy {figures[f'ratio_denoise_npy_{n}']:.2f}x")
        return

    rng = np.random.default_rng(0)
    image = (rng.poisson(20.0, size=(SIZE_PX, SIZE_PX)) / 20.0).astype(np.float32)
    npy = io.BytesIO()
    np.save(npy, image)
    tif_path = Path(tmp.name) / "bench.tif"
    write_image(tif_path, image)
    bodies = {"npy": (npy.getvalue(), "application/x-npy"),
              "tiff": (tif_path.read_bytes(), "image/tiff")}
    invocations = json.dumps({"inputs": image[None].tolist()}).encode()

    proc, port = start_server(uri, args.condition)
    try:
        figures = {"image_px": [SIZE_PX, SIZE_PX], "model": source, "cpu_count": os.cpu_count(),
                   "torch_threads": __import__("torch").get_num_threads()}
        for fmt, (body, ctype) in bodies.items():
            figures[f"denoise_{fmt}"] = latency_ms(port, "/denoise", body, ctype, args.requests)
        figures["invocations_json"] = latency_ms(port, "/invocations", invocations, "application/json",
                                                 max(5, args.requests // 3))
        figures["throughput_denoise_npy"] = throughput(port, bodies["npy"][0], args.clients, args.seconds)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    figures["bare_model_predict_ms"] = bare_model_ms(uri, args.condition, image, max(5, args.requests // 3))

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"stemreg serve, {SIZE_PX}x{SIZE_PX} float32 image, model: {source}")
    print(f"  cores {figures['cpu_count']}, torch threads {figures['torch_threads']}")
    for key in ("denoise_npy", "denoise_tiff", "invocations_json"):
        f = figures[key]
        print(f"  {key:18s} mean {f['mean_ms']:7.1f} ms  p50 {f['p50_ms']:7.1f} ms  "
              f"p95 {f['p95_ms']:7.1f} ms  ({f['requests']} sequential requests)")
    t = figures["throughput_denoise_npy"]
    print(f"  throughput /denoise npy: {t['requests_per_s']:.2f} requests/s "
          f"({t['requests']} in {t['seconds']:.1f} s, {t['clients']} clients)")
    print(f"  bare pyfunc predict (same image, in-process): {figures['bare_model_predict_ms']:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
