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
store has no champion) it registers --model in a temporary store: the shipped
pretrained base (default; the network every condition is fine-tuned from, so
the speed a served model has) or an untrained default 8-layer hourglass.

    python benchmarks/bench_serving.py [--condition low-dose] [--requests 30]
        [--clients 4] [--seconds 10] [--temp-model] [--model shipped|untrained] [--json]

With --compare-mlflow it instead runs `stemreg serve` and `mlflow models serve`
(same model, same interpreter, each with its own defaults) one after the other,
8 clients posting the same /invocations JSON for 256^2 and 1024^2 images (and
stemreg's binary /denoise path beside), and prints frames/s, their ratio,
p50/p95 latency and each server's RSS (its whole process tree).
--parallel-sweep 1,2 also times /denoise under `stemreg serve --parallel K`.

    python benchmarks/bench_serving.py --temp-model --compare-mlflow --seconds 60 [--parallel-sweep 1,2]

--busy N keeps N CPU-bound processes (a busy loop each) running beside the servers while measuring.

With --soak-seconds S it soaks `stemreg serve` for S seconds (600: the
10-minute soak): 8 clients, /denoise .npy at the --sizes in turn plus one
client on /invocations JSON, and prints p50/p95 (whole run, first and last
30 s) and the server's RSS at start and end (sampled every 30 s).

    python benchmarks/bench_serving.py --temp-model --soak-seconds 600
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


def temp_network(kind: str):
    """The network a temp store serves: the shipped pretrained base, or an untrained default hourglass."""
    if kind == "shipped":
        from stemreg.models.pretrained import available, load_pretrained

        if available():
            return load_pretrained()[0], "the shipped pretrained base (low-dose-base), temp store"
    from stemreg.models.hourglass import ReverseHourglass

    return ReverseHourglass(), "untrained default 8-layer reverse hourglass, temp store"


def register_temp_model(root: Path, network=None) -> str:
    """Register ``network`` (default: an untrained default hourglass) as stem-denoiser-low-dose@champion."""
    import mlflow

    from stemreg.models.hourglass import ReverseHourglass
    from stemreg.models.mlflow_model import log_model_args, model_signature

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.chdir(root)
    mlflow.set_experiment("bench-serving")
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **log_model_args(network or ReverseHourglass(), tmp),
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


#: What `stemreg serve` said about its thread settings, per port (the last server started).
SERVER_SETTINGS: dict[int, str] = {}
#: Extra environment for every `stemreg serve` started (--server-env), e.g. glibc allocator tunables.
SERVER_ENV: dict[str, str] = {}


def start_server(uri: str, condition: str, max_pixels: int = 8 * SIZE_PX * SIZE_PX,
                 extra: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1", **SERVER_ENV}
    proc = subprocess.Popen([sys.executable, "-c", "from stemreg.platform.cli import main; main()", "serve",
                             "--condition", condition,
                             "--port", "0", "--poll-seconds", "0", "--max-pixels", str(max_pixels),
                             *(extra or [])],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    port = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"stemreg serve exited with {proc.returncode}")
        if port is None and (found := re.search(r"http://127\.0\.0\.1:(\d+)", line)):
            port = int(found.group(1))
            settings = re.search(r"(\d+ forward call\(s\) at once x \d+ torch thread\(s\)(?:, malloc: [^(]*[^(\s])?)", line)
            SERVER_SETTINGS[port] = settings.group(1) if settings else "?"
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
    """`mlflow models serve` as a user runs it: its defaults (1 uvicorn worker; requests predicted on
    asyncio's default thread pool; torch's default threads), local env, uvicorn from this interpreter."""
    shim = workdir / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "uvicorn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    (shim / "uvicorn").chmod(0o755)
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                             f"models:/stem-denoiser-{condition}@champion", "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)],
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


def _percentile(times: list[float], q: float) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, int(round(q * (len(times) - 1))))] if times else float("nan")


#: Requests a server refused with its own time limit (504), per port; they count as no frames.
TIMED_OUT: dict[int, int] = {}


def run_clients(port: int, cases: list[tuple[str, bytes, str]], seconds: float, *, warmup: int = 1,
                on_tick=None, tick_s: float = 30.0) -> list[list[tuple[float, float]]]:
    """One keep-alive client per case posting its body for ``seconds`` after ``warmup`` untimed requests
    each (all clients start timing together); returns each client's (finish time, latency ms) pairs.
    ``on_tick(elapsed)`` is called every ``tick_s`` seconds meanwhile."""
    records: list[list[tuple[float, float]]] = [[] for _ in cases]
    failures: list[BaseException] = []
    ready = threading.Barrier(len(cases) + 1)
    stop = [float("inf")]

    def client(i: int) -> None:
        path, body, ctype = cases[i]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            for _ in range(warmup):
                try:
                    post(conn, path, body, ctype)
                except RuntimeError as exc:  # the server's own time limit: the timed run counts them
                    if " answered 504" not in str(exc):
                        raise
                    conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            failures.append(exc)
        ready.wait()
        conn.close()  # a fresh connection: the wait for the others' warm-up may outlast the server's idle timeout
        try:
            while time.perf_counter() < stop[0]:
                start = time.perf_counter()
                try:
                    post(conn, path, body, ctype)
                except RuntimeError as exc:  # a server's own time limit (mlflow: 504 after 60 s): counted
                    if " answered 504" not in str(exc):
                        raise
                    TIMED_OUT[port] = TIMED_OUT.get(port, 0) + 1
                    conn.close()
                    continue
                records[i].append((time.perf_counter(), (time.perf_counter() - start) * 1e3))
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(cases))]
    for t in threads:
        t.start()
    ready.wait()
    begin = time.perf_counter()
    stop[0] = begin + seconds
    next_tick = begin + tick_s
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if on_tick and time.perf_counter() >= next_tick:
            on_tick(next_tick - begin)
            next_tick += tick_s
    if failures:
        raise RuntimeError(f"{len(failures)} client(s) failed; first: {failures[0]}")
    for recs in records:
        recs[:] = [(t - begin, ms) for t, ms in recs]
    return records


def load(port: int, path: str, body: bytes, content_type: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` keep-alive clients posting `body` for `seconds`: frames/s, p50/p95 latency (ms)."""
    records = run_clients(port, [(path, body, content_type)] * clients, seconds)
    times = [ms for recs in records for _, ms in recs]
    elapsed = max([seconds] + [t for recs in records for t, _ in recs])
    return {"frames_per_s": len(times) / elapsed, "requests": len(times),
            "p50_ms": _percentile(times, 0.5), "p95_ms": _percentile(times, 0.95)}


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _bodies(sizes: list[int]) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """The same noisy image per size as MLflow JSON (`inputs`, a stack of one) and as .npy bytes."""
    rng = np.random.default_rng(0)
    images = {n: (rng.poisson(20.0, size=(n, n)) / 20.0).astype(np.float32) for n in sizes}
    jsons = {n: json.dumps({"inputs": img[None].tolist()}).encode() for n, img in images.items()}
    npys = {}
    for n, img in images.items():
        buf = io.BytesIO()
        np.save(buf, img)
        npys[n] = buf.getvalue()
    return jsons, npys


def compare_mlflow(uri: str, condition: str, workdir: Path, sizes: list[int], clients: int,
                   seconds: float, parallel_sweep: list[int] | None = None, rounds: int = 1) -> dict:
    """stemreg serve (defaults) vs mlflow models serve (defaults), same model, same run.

    Every server is started first and the cases take turns (size by size: stemreg /denoise, mlflow
    /invocations, stemreg /invocations, then the sweep), ``rounds`` times, so a change in the
    machine's load falls on both servers alike; a case's figures add up its rounds."""
    jsons, npys = _bodies(sizes)
    out: dict = {"clients": clients, "seconds_per_case": seconds * rounds, "rounds": rounds,
                 "cores": os.cpu_count(), "load_average_start": os.getloadavg(),
                 "mlflow_settings": "1 uvicorn worker (its default), predict on asyncio's default thread "
                                    f"pool, torch default threads ({__import__('torch').get_num_threads()})"}
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        servers["stemreg"] = start_server(uri, condition, max_pixels=4096 * 4096)
        servers["mlflow"] = start_mlflow_server(uri, condition, workdir)
        for k in parallel_sweep or []:
            servers[f"stemreg_parallel{k}"] = start_server(uri, condition, max_pixels=4096 * 4096,
                                                           extra=["--parallel", str(k)])
        for name, (_, port) in servers.items():
            if name != "mlflow":
                out[f"{name}_settings"] = SERVER_SETTINGS.get(port)
        totals: dict[str, list] = {}
        for _ in range(rounds):
            for n in sizes:
                cases = [("stemreg", "denoise_npy", "/denoise", npys[n], "application/x-npy"),
                         ("mlflow", "invocations", "/invocations", jsons[n], "application/json"),
                         ("stemreg", "invocations", "/invocations", jsons[n], "application/json")]
                cases += [(f"stemreg_parallel{k}", "denoise_npy", "/denoise", npys[n], "application/x-npy")
                          for k in parallel_sweep or []]
                for server, label, path, body, ctype in cases:
                    proc, port = servers[server]
                    key = f"{server}_{label}_{n}"
                    records = run_clients(port, [(path, body, ctype)] * clients, seconds)
                    total = totals.setdefault(key, [0.0, []])
                    total[0] += max([seconds] + [t for recs in records for t, _ in recs])
                    total[1] += [ms for recs in records for _, ms in recs]
                    times = total[1]
                    out[key] = {"frames_per_s": len(times) / total[0], "requests": len(times),
                                "timed_out_504": TIMED_OUT.pop(port, 0) + out.get(key, {}).get("timed_out_504", 0),
                                "p50_ms": _percentile(times, 0.5), "p95_ms": _percentile(times, 0.95),
                                "rss_mb": tree_rss_mb(proc.pid)}
                    print(f"  {key}: {out[key]}", file=sys.stderr, flush=True)
    finally:
        for proc, _ in servers.values():
            _stop(proc)
    out["load_average_end"] = os.getloadavg()
    for n in sizes:
        base = out[f"mlflow_invocations_{n}"]["frames_per_s"]
        out[f"ratio_invocations_{n}"] = out[f"stemreg_invocations_{n}"]["frames_per_s"] / base if base else None
        out[f"ratio_denoise_npy_{n}"] = out[f"stemreg_denoise_npy_{n}"]["frames_per_s"] / base if base else None
    return out


def soak(uri: str, condition: str, sizes: list[int], clients: int, seconds: float,
         window_s: float = 30.0, sample_s: float = 5.0) -> dict:
    """`clients` clients on stemreg serve (defaults) for ``seconds``: /denoise .npy, the sizes taken in
    turn, and one client on /invocations JSON (the smallest size). The server's RSS every ``sample_s``
    (summarised per minute: it swings with the requests in flight, so a trend shows in the medians);
    p50/p95 of the first and the last ``window_s`` seconds."""
    jsons, npys = _bodies(sizes)
    cases = [(f"denoise_npy_{sizes[i % len(sizes)]}", "/denoise", npys[sizes[i % len(sizes)]],
              "application/x-npy") for i in range(max(1, clients - 1))]
    cases.append((f"invocations_{min(sizes)}", "/invocations", jsons[min(sizes)], "application/json"))
    proc, port = start_server(uri, condition, max_pixels=4096 * 4096)
    rss: list[tuple[float, float]] = []
    try:
        run_clients(port, [c[1:] for c in cases], min(10.0, seconds / 10))  # warm-up: every path, every size
        rss.append((0.0, tree_rss_mb(proc.pid)))
        print(f"  soak: start RSS {rss[0][1]:.0f} MB", file=sys.stderr, flush=True)

        def tick(elapsed: float) -> None:
            rss.append((elapsed, tree_rss_mb(proc.pid)))
            if round(elapsed / sample_s) % round(window_s / sample_s) == 0:
                recent = [r for t, r in rss if t > elapsed - window_s]
                print(f"  soak: {elapsed:5.0f} s RSS {rss[-1][1]:.0f} MB (last {window_s:.0f} s: "
                      f"{min(recent):.0f}-{max(recent):.0f})", file=sys.stderr, flush=True)

        records = run_clients(port, [c[1:] for c in cases], seconds, warmup=0, on_tick=tick, tick_s=sample_s)
        rss.append((seconds, tree_rss_mb(proc.pid)))
    finally:
        settings = SERVER_SETTINGS.get(port)
        _stop(proc)
    minutes = []
    for m in range(max(1, int(round(seconds / 60)))):
        inside = [r for t, r in rss if 60 * m < t <= 60 * (m + 1)] or [rss[-1][1]]
        minutes.append({"minute": m + 1, "median_mb": round(statistics.median(inside), 1),
                        "max_mb": round(max(inside), 1)})
    out: dict = {"seconds": seconds, "clients": len(cases), "stemreg_settings": settings,
                 "rss_mb_start": rss[0][1], "rss_mb_end": rss[-1][1], "rss_mb_max": max(r for _, r in rss),
                 "rss_per_minute": minutes, "rss_mb_samples": [[round(t), round(r, 1)] for t, r in rss]}
    for label in dict.fromkeys(c[0] for c in cases):
        recs = [rec for (name, *_), client in zip(cases, records) if name == label for rec in client]
        first = [ms for t, ms in recs if t <= window_s]
        last = [ms for t, ms in recs if t > seconds - window_s]
        out[label] = {"requests": len(recs), "frames_per_s": len(recs) / seconds,
                      "p50_ms": _percentile([ms for _, ms in recs], 0.5),
                      "p95_ms": _percentile([ms for _, ms in recs], 0.95),
                      "first_p50_ms": _percentile(first, 0.5), "first_p95_ms": _percentile(first, 0.95),
                      "last_p50_ms": _percentile(last, 0.5), "last_p95_ms": _percentile(last, 0.95)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--requests", type=int, default=30, help="sequential requests per format")
    parser.add_argument("--clients", type=int, default=None,
                        help="concurrent clients (default 4; 8 with --compare-mlflow and --soak-seconds)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    parser.add_argument("--temp-model", action="store_true",
                        help="serve --model from a temp store, not the store in force's champion")
    parser.add_argument("--model", choices=("shipped", "untrained"), default="shipped",
                        help="what a temp store serves: the shipped pretrained base (the network conditions "
                             "are fine-tuned from) or an untrained default 8-layer hourglass")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--compare-mlflow", action="store_true",
                        help="frames/s of stemreg serve vs mlflow models serve, 256^2 and 1024^2, --clients 8")
    parser.add_argument("--sizes", default="256,1024", help="image sizes for --compare-mlflow and --soak-seconds")
    parser.add_argument("--parallel-sweep", default="",
                        help="with --compare-mlflow, also time /denoise under `stemreg serve --parallel K` "
                             "for each K listed (e.g. 1,2): the thread settings, measured")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare-mlflow, run the cases in turn this many times (--seconds each)")
    parser.add_argument("--soak-seconds", type=float, default=0.0,
                        help="soak stemreg serve this long (600: ten minutes) with --clients clients: "
                             "p50/p95 and the server's RSS at start and end")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set this in the environment of every `stemreg serve` started (repeatable), "
                             "e.g. MALLOC_ARENA_MAX=2 to compare allocator settings")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N CPU-bound processes running (a busy-loop each, at normal priority) "
                             "while measuring, as when users run other work beside the server")
    args = parser.parse_args()
    hogs = start_cpu_hogs(args.busy)
    try:
        _main(args)
    finally:
        stop_cpu_hogs(hogs)


def start_cpu_hogs(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (pure-Python loop) until stopped."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(max(0, n))]
    if hogs:
        print(f"  {len(hogs)} CPU-bound process(es) running beside the servers: "
              f"{', '.join(str(h.pid) for h in hogs)}", file=sys.stderr, flush=True)
    return hogs


def stop_cpu_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait()


def _main(args: argparse.Namespace) -> None:
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--server-env {item!r}: give NAME=VALUE")
        SERVER_ENV[name] = value

    from stemreg.acquisition import write_image
    from stemreg.platform.store import tracking_uri

    tmp = tempfile.TemporaryDirectory(prefix="bench-serving-")
    uri = tracking_uri()
    if args.temp_model or not has_champion(uri, args.condition):
        args.condition = "low-dose"
        network, source = temp_network(args.model)
        uri = register_temp_model(Path(tmp.name), network)
    else:
        source = f"stem-denoiser-{args.condition}@champion in {uri}"
    sizes = [int(n) for n in args.sizes.split(",")]
    args.clients = args.clients or (8 if args.compare_mlflow or args.soak_seconds > 0 else 4)

    if args.soak_seconds > 0:
        figures = soak(uri, args.condition, sizes, args.clients, args.soak_seconds)
        figures["model"] = source
        if args.json:
            print(json.dumps(figures, indent=2))
            return
        print(f"stemreg serve soak, {figures['seconds']:.0f} s, {figures['clients']} clients "
              f"({figures['stemreg_settings']}), model: {source}")
        print(f"  server RSS: start {figures['rss_mb_start']:.0f} MB, end {figures['rss_mb_end']:.0f} MB, "
              f"max {figures['rss_mb_max']:.0f} MB")
        print("  per minute, median / max MB: " + ", ".join(
            f"{m['median_mb']:.0f}/{m['max_mb']:.0f}" for m in figures["rss_per_minute"]))
        for label, f in figures.items():
            if isinstance(f, dict):
                print(f"  {label:22s} {f['frames_per_s']:6.2f} frames/s  p50 {f['p50_ms']:6.0f} ms  p95 "
                      f"{f['p95_ms']:6.0f} ms  (first 30 s p50/p95 {f['first_p50_ms']:.0f}/{f['first_p95_ms']:.0f}"
                      f", last 30 s {f['last_p50_ms']:.0f}/{f['last_p95_ms']:.0f}; {f['requests']} requests)")
        return

    if args.compare_mlflow:
        sweep = [int(k) for k in args.parallel_sweep.split(",") if k.strip()]
        figures = compare_mlflow(uri, args.condition, Path(tmp.name), sizes, args.clients, args.seconds, sweep,
                                 rounds=args.rounds)
        figures["model"], figures["busy_processes"] = source, args.busy
        if args.json:
            print(json.dumps(figures, indent=2))
            return
        print(f"stemreg serve vs mlflow models serve, {args.clients} clients, {args.rounds} x {args.seconds:.0f} s "
              f"per case, {figures['cores']} cores (load average {figures['load_average_start'][0]:.1f} at start, "
              f"{figures['load_average_end'][0]:.1f} at end), {args.busy} CPU-bound process(es) beside, model: {source}")
        print(f"  stemreg serve: {figures['stemreg_settings']} (its defaults); mlflow models serve: "
              f"{figures['mlflow_settings']}")
        for n in sizes:
            keys = [f"stemreg_invocations_{n}", f"stemreg_denoise_npy_{n}", f"mlflow_invocations_{n}"]
            keys += [f"stemreg_parallel{k}_denoise_npy_{n}" for k in sweep]
            for key in keys:
                f = figures[key]
                print(f"  {key:34s} {f['frames_per_s']:7.2f} frames/s  p50 {f['p50_ms']:8.0f} ms  "
                      f"p95 {f['p95_ms']:8.0f} ms  RSS {f['rss_mb']:6.0f} MB  ({f['requests']} requests, "
                      f"{f['timed_out_504']} answered 504)")
            print(f"  {n}^2 ratio stemreg/mlflow: /invocations {figures[f'ratio_invocations_{n}']:.2f}x, "
                  f"/denoise npy {figures[f'ratio_denoise_npy_{n}']:.2f}x")
        for k in sweep:
            print(f"  stemreg_parallel{k}: {figures[f'stemreg_parallel{k}_settings']}")
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
