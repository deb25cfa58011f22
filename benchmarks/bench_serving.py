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


def start_server(uri: str, condition: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(["stemreg", "serve", "--condition", condition, "--port", "0",
                             "--poll-seconds", "0", "--max-pixels", str(8 * SIZE_PX * SIZE_PX)],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--requests", type=int, default=30, help="sequential requests per format")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for throughput")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    parser.add_argument("--temp-model", action="store_true",
                        help="register an untrained default hourglass in a temp store and serve that")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
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
