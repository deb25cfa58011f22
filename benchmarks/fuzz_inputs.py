"""Throw bad inputs at `stemreg serve` (HTTP), the `stemreg` CLI and the Python API; classify outcomes.

Every case is an input a user or client could send by mistake (or on purpose); the inputs live in
`benchmarks/fuzz_cases.py`. Each outcome is one of

- ``clear``:   a refusal naming the problem: HTTP 4xx/501/505 with a JSON ``error`` of one line, no
  absolute path or exception class; CLI exit 1 or 2 with one line and no traceback; an API exception
  of a documented kind (ValueError, TypeError, FileNotFoundError, stemreg's own errors) of one line;
- ``unclear``: a traceback, a 5xx, an undocumented exception, a message of several lines;
- ``silent``:  accepted (HTTP 2xx, exit 0, a returned value) although the input is bad, or code from
  the artifact store ran;
- ``hung``:    no answer within the case's time limit;
- ``lost``:    the connection dropped without an answer, or stored data or an input file changed.

While the HTTP cases run, 300 slow clients each send one header line every 5 s (reconnecting when
answered), 4 clients declare 536 MB bodies and send 1 KB, 3 clients trickle a 40-byte body one byte
every 4 s, and /ping is timed every 0.2 s. The server (`stemreg serve`, its defaults, a tiny
untrained model in a temporary store) runs in its own process, so its RSS is its own.

    python benchmarks/fuzz_inputs.py [--verbose]

Prints the outcome classes and the figures; exits 1 unless every case is ``clear``.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as cases  # noqa: E402

TIMEOUT_S = 40.0
NAME = "stem-denoiser-low-dose"
_PROGRESS = re.compile(r"\d+%\|.*\|")  # a progress bar on stderr is no message
_INTERNALS = re.compile(r"(/tmp/|/work/|/root/|/home/|Traceback|\w+Error:|\w+Exception:)")
_CLI = [sys.executable, "-c", "from stemreg.platform.cli import main; main()"]
#: What the CLI printed for unclear outcomes (shown with --verbose).
CLI_SAID: dict[str, str] = {}


# --------------------------------------------------------------------------- the store

_EVIL = '''from pathlib import Path
Path(__file__).resolve().parents[3].joinpath("PWNED").write_text("foreign code ran")
def _load_pyfunc(path):
    Path(__file__).resolve().parents[3].joinpath("PWNED").write_text("foreign code ran")
    raise RuntimeError("evil")
'''


def register_models(root: Path) -> str:
    """A tiny untrained model (champion) and damaged or foreign versions, each behind its alias."""
    import mlflow
    import torch
    import yaml
    from mlflow.artifacts import download_artifacts

    from stemreg.models.architectures import build_model
    from stemreg.models.mlflow_model import log_model_args, model_signature

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.chdir(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("fuzz")
    client = mlflow.MlflowClient()
    torch.manual_seed(0)
    net = build_model({"kind": "reverse-hourglass", "depth": 3, "widths": [4, 4], "kernel_size": 3})
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **log_model_args(net, tmp), signature=model_signature(),
                                       pip_requirements=["torch"])
    good = mlflow.register_model(info.model_uri, NAME)
    client.set_registered_model_alias(NAME, "champion", good.version)
    local = Path(download_artifacts(f"models:/{NAME}/{good.version}", dst_path=str(root / "v1")))

    def variant(alias: str, edit) -> None:
        folder = root / "variants" / alias / "model"
        shutil.copytree(local, folder)
        edit(folder)
        with mlflow.start_run():
            mlflow.log_artifacts(str(folder), "model")
            run_id = mlflow.active_run().info.run_id
        version = client.create_model_version(NAME, f"runs:/{run_id}/model", run_id=run_id)
        client.set_registered_model_alias(NAME, alias, version.version)
        for key, value in client.get_model_version(NAME, good.version).tags.items():
            if key.endswith("sha256"):
                client.set_model_version_tag(NAME, version.version, key, value)
        if alias == "badsha":
            client.set_model_version_tag(NAME, version.version, "weights_sha256", "0" * 64)

    def foreign(folder: Path, code_path: bool = False) -> None:
        (folder / "code").mkdir(exist_ok=True)
        (folder / "code" / "fuzz_evil_loader.py").write_text(_EVIL)
        meta = yaml.safe_load((folder / "MLmodel").read_text())
        meta["flavors"]["python_function"]["loader_module"] = "fuzz_evil_loader"
        meta["flavors"]["python_function"]["code"] = "code"
        if code_path:
            meta["flavors"]["python_function"]["model_code_path"] = "code/fuzz_evil_loader.py"
        (folder / "MLmodel").write_text(yaml.safe_dump(meta))

    def truncate(folder: Path) -> None:
        weights = next(folder.rglob("weights.pt"))
        weights.write_bytes(weights.read_bytes()[:100])

    variant("foreign", foreign)
    variant("foreign-codepath", lambda f: foreign(f, code_path=True))
    variant("badsha", lambda f: None)
    variant("truncated", truncate)
    return uri


# --------------------------------------------------------------------------- classification

def classify_http(status: int | None, body: bytes) -> str:
    if status is None:
        return "lost"
    if status >= 500 and status not in (501, 503, 505):  # 501/505: protocol refusals; 503: busy, retry
        return "unclear"
    if status < 400:
        return "silent"
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return "unclear"  # a refusal no client can read is no clear error
    return "clear" if "\n" not in error and not _INTERNALS.search(json.dumps(json.loads(body))) else "unclear"


def classify_cli(exit_code: int, text: str, exception: BaseException | None = None) -> str:
    text = text.strip()
    if exit_code == 0:
        return "silent"
    if exit_code not in (1, 2) or "Traceback" in text or (exception is not None
                                                         and not isinstance(exception, SystemExit)):
        return "unclear"
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip() and not line.startswith("Usage:")
             and not line.startswith("Try ") and not _PROGRESS.search(line)
             and not line.startswith("stemreg serve: ")]  # serve's own start-up log on stderr
    return "clear" if len(lines) == 1 else "unclear"


def classify_api(result: object, exc: BaseException | None) -> str:
    if exc is None:
        return "silent"
    documented = isinstance(exc, (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                  PermissionError)) or any(c.__name__ == "StemregError" for c in type(exc).__mro__)
    message = str(exc).strip()
    if isinstance(exc, KeyError) or not documented or not message or "\n" in message or "Traceback" in message \
            or re.search(r"\b\w+(Error|Exception): ", message):
        return "unclear"
    return "clear"


# --------------------------------------------------------------------------- HTTP

def http_exchange(port: int, method: str, path: str, body: bytes | None, ctype: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        if method == "HEAD":  # an answer to HEAD has no body: its status says it all
            return "clear" if 400 <= resp.status < 500 or resp.status == 501 else classify_http(resp.status, b"")
        return classify_http(resp.status, resp.read())
    except TimeoutError:
        return "hung"
    except (ConnectionError, http.client.HTTPException):
        return "lost"
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes) -> str:
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                reply += chunk
        except TimeoutError:
            return "hung"
        except ConnectionError:
            if not reply:
                return "lost"
    answers = [(int(m.group(1)), m.end()) for m in re.finditer(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n", reply)]
    answers = [(s, end) for s, end in answers if s >= 200]  # 100 Continue is no answer
    if not answers:
        return "lost"
    outcomes = []
    for status, end in answers:
        body = reply[end:].partition(b"\r\n\r\n")[2]
        length = re.search(rb"Content-Length: (\d+)", reply[end:end + 2000])
        outcomes.append(classify_http(status, body[:int(length.group(1))] if length else body))
    order = ["lost", "hung", "silent", "unclear", "clear"]
    return min(outcomes, key=order.index)


class Pressure:
    """Slow and lying clients and a /ping timer, in background threads, while the HTTP cases run."""

    def __init__(self, port: int, slow: int = 300) -> None:
        self.port, self.slow = port, slow
        self.stop = threading.Event()
        self.pings: list[tuple[int, float]] = []
        self.slow_answers: collections.Counter = collections.Counter()
        self.held_max = 0
        self.trickles: list[tuple[int | None, float]] = []
        self.liars: list[int | None] = []
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._ping, self._slowloris, self._trickle, self._trickle, self._trickle,
                                  self._liar, self._liar, self._liar, self._liar)]

    def start(self) -> "Pressure":
        for t in self.threads:
            t.start()
        return self

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S)

    def _ping(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/ping")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            self.pings.append((status, time.monotonic() - started))
            time.sleep(0.2)

    def _slowloris(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        socks: set[socket.socket] = set()

        def opened() -> None:
            sock = self._connect()
            sock.setblocking(False)
            sock.send(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
            sel.register(sock, selectors.EVENT_READ)
            socks.add(sock)

        for _ in range(self.slow):
            opened()
        next_line = time.monotonic() + 5
        while not self.stop.is_set():
            self.held_max = max(self.held_max, len(socks))
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                try:
                    reply = sock.recv(4096)
                except OSError:
                    reply = b""
                match = re.match(rb"HTTP/1\.1 (\d{3})", reply)
                self.slow_answers[int(match.group(1)) if match else "closed"] += 1
                sel.unregister(sock)
                socks.discard(sock)
                sock.close()
                opened()  # keep 300 slow clients at the server
            if time.monotonic() >= next_line:
                for sock in list(socks):
                    try:
                        sock.send(b"X-Slow: y\r\n")
                    except OSError:
                        pass
                next_line = time.monotonic() + 5
        for sock in socks:
            sock.close()

    def _trickle(self) -> None:
        body = json.dumps({"inputs": [[1.0, 2.0], [3.0, 4.0]]}).encode().ljust(40)
        started = time.monotonic()
        with self._connect() as sock:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode())
            sock.setblocking(False)
            status = None
            for i in range(len(body)):
                try:
                    reply = sock.recv(4096)
                    match = re.match(rb"HTTP/1\.1 (\d{3})", reply)
                    status = int(match.group(1)) if match else None
                    break
                except BlockingIOError:
                    pass
                except OSError:
                    break
                try:
                    sock.send(body[i:i + 1])
                except OSError:
                    pass
                if self.stop.wait(4.0):
                    break
        self.trickles.append((status, time.monotonic() - started))

    def _liar(self) -> None:
        with self._connect() as sock:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 536000000\r\n\r\n" + b"[" * 1024)
            try:
                reply = sock.recv(4096)
            except OSError:
                reply = b""
        match = re.match(rb"HTTP/1\.1 (\d{3})", reply)
        self.liars.append(int(match.group(1)) if match else None)

    def finish(self) -> None:
        deadline = time.monotonic() + 60  # the tricklers' whole-request deadline (30 s) and more
        while len(self.trickles) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def tree_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_server(uri: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(_CLI + ["serve", "--condition", "low-dose", "--port", str(port), "--poll-seconds", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("stemreg serve did not become healthy within 180 s")


def run_http(uri: str, outcomes: list, figures: dict) -> None:
    proc, port = start_server(uri)
    rss = [tree_rss_mb(proc.pid)]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            rss.append(tree_rss_mb(proc.pid))

    threading.Thread(target=sample, daemon=True).start()
    pressure = Pressure(port).start()
    try:
        for name, body in cases.json_cases():
            outcomes.append(("http /invocations", name, http_exchange(port, "POST", "/invocations", body,
                                                                      "application/json")))
        outcomes.append(("http /invocations", "wrong content type",
                         http_exchange(port, "POST", "/invocations", b"abc", "text/plain")))
        for name, _, body in cases.image_cases():
            outcomes.append(("http /denoise", name, http_exchange(port, "POST", "/denoise", body,
                                                                  "application/octet-stream")))
        outcomes.append(("http /denoise", "unknown ?format", http_exchange(port, "POST", "/denoise?format=gif",
                                                                          b"abc", "image/gif")))
        for name, _, body in cases.accepted_cases():  # valid: must be answered 200
            answer = http_exchange(port, "POST", "/denoise", body, "application/octet-stream")
            figures.setdefault("accepted_by_design", []).append(f"{name}: {'200' if answer == 'silent' else answer}")
        raw = cases.raw_cases()
        results: dict[str, str] = {}
        threads = [threading.Thread(target=lambda n=n, d=d: results.__setitem__(n, raw_exchange(port, d)))
                   for n, d in raw]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcomes.extend(("http raw", name, results[name]) for name, _ in raw)
        for name, method, path in cases.method_cases():
            outcomes.append(("http method", name, http_exchange(port, method, path, b"", "application/json")))
        pressure.finish()
        for status, seconds in pressure.trickles:
            outcomes.append(("http slow", f"40-byte body, 1 byte / 4 s ({seconds:.0f} s)",
                             "clear" if status == 408 and seconds < 40 else "hung" if status is None else "unclear"))
        for status in pressure.liars:
            outcomes.append(("http slow", "536 MB declared, 1 KB sent, then silence",
                             "clear" if status == 408 else "lost" if status is None else "unclear"))
        outcomes.append(("http slow", f"{pressure.slow} clients, one header line / 5 s",
                         "clear" if pressure.slow_answers and set(pressure.slow_answers) <= {408, 503} else "unclear"))
        sampling.set()
        pings = [s for s, _ in pressure.pings]
        latencies = sorted(t for _, t in pressure.pings)
        figures.update({
            "server_rss_start_mb": round(rss[0]), "server_rss_peak_mb": round(max(rss)),
            "server_rss_end_mb": round(tree_rss_mb(proc.pid)),
            "pings": len(pings), "pings_200": pings.count(200),
            "ping_max_s": round(max(latencies), 3) if latencies else None,
            "ping_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
            "slow_clients_held_max": pressure.held_max, "slow_clients_answers": dict(pressure.slow_answers),
            "trickle_408_after_s": [round(s, 1) for _, s in pressure.trickles],
        })
    finally:
        sampling.set()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------- CLI

def run_cli(uri: str, root: Path, outcomes: list, figures: dict) -> None:
    from click.testing import CliRunner

    from stemreg.platform.cli import main as cli

    runner = CliRunner()
    env = {"MLFLOW_TRACKING_URI": uri}
    files = root / "files"
    files.mkdir()
    suffix = {"npy": ".npy", "tiff": ".tif", "png": ".png"}

    def invoke(argv: list[str], extra_env: dict | None = None) -> str:
        result = runner.invoke(cli, argv, env={**env, **(extra_env or {})})
        outcome = classify_cli(result.exit_code, result.output, result.exception)
        if outcome == "unclear":  # what the user saw, for the report
            text = result.output.strip() or repr(result.exception)
            CLI_SAID[" ".join(argv)[-160:]] = text[-300:]
        return outcome

    for name, fmt, body in cases.image_cases():
        path = files / (re.sub(r"\W+", "_", name) + suffix[fmt])
        path.write_bytes(body)
        outcomes.append(("cli file", name, invoke(["denoise", str(path), "--condition", "low-dose",
                                                   "-o", str(root / "out")])))
    for name, path in cases.microscope_files(files):
        outcomes.append(("cli file", name, invoke(["denoise", str(path), "--condition", "low-dose",
                                                   "-o", str(root / "out")])))
    good = files / "good.npy"
    np.save(good, np.random.default_rng(0).random((16, 16), dtype=np.float32))
    for name, sidecar in (("sidecar pixel_size abc", {"pixel_size": "abc", "unit": "pm"}),
                          ("sidecar pixel_size 1e300", {"pixel_size": 1e300, "unit": "pm"}),
                          ("sidecar a list", [1, 2]), ("sidecar not json", "{oops")):
        path = files / (re.sub(r"\W+", "_", name) + ".npy")
        shutil.copy(good, path)
        (files / (path.name + ".json")).write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
        outcomes.append(("cli file", name, invoke(["denoise", str(path), "--condition", "low-dose",
                                                   "-o", str(root / "out")])))
    (files / "d1").mkdir()
    (files / "d2").mkdir()
    np.save(files / "d1" / "same.npy", np.ones((8, 8), np.float32))
    np.save(files / "d2" / "same.npy", np.ones((8, 8), np.float32))
    blocker = files / "blocker"
    blocker.write_text("x")
    d = ["denoise", str(good), "--condition", "low-dose"]
    argv_cases = [
        ("missing file", ["denoise", str(files / "nope.npy"), "--condition", "low-dose", "-o", "o"]),
        ("unknown suffix", ["denoise", str(blocker), "--condition", "low-dose", "-o", "o"]),
        ("unknown condition", d[:2] + ["--condition", "no-such", "-o", "o"]),
        ("empty condition", d[:2] + ["--condition", "", "-o", "o"]),
        ("unknown alias", d + ["--alias", "nope", "-o", "o"]), ("empty alias", d + ["--alias", "", "-o", "o"]),
        ("foreign loader_module", d + ["--alias", "foreign", "-o", str(root / "of")]),
        ("foreign loader + model_code_path", d + ["--alias", "foreign-codepath", "-o", str(root / "of")]),
        ("weights sha256 mismatch", d + ["--alias", "badsha", "-o", str(root / "ob")]),
        ("truncated weights", d + ["--alias", "truncated", "-o", str(root / "ot")]),
        ("serve a foreign loader", ["serve", "--condition", "low-dose", "--alias", "foreign", "--port", "0"]),
        ("serve weights sha256 mismatch", ["serve", "--condition", "low-dose", "--alias", "badsha", "--port", "0"]),
        ("two inputs one output", ["denoise", str(files / "d1/same.npy"), str(files / "d2/same.npy"),
                                   "--condition", "low-dose", "-o", str(root / "o2")]),
        ("same input twice", ["denoise", str(good), str(good), "--condition", "low-dose", "-o", str(root / "o3")]),
        ("output under a file", d + ["-o", str(blocker / "x")]), ("output in /proc", d + ["-o", "/proc/stemreg-x"]),
        ("output is input dir", d + ["-o", str(files)]), ("a directory as input", ["denoise", str(files / "d1"),
                                                                                  "--condition", "low-dose", "-o", "o"]),
        ("no inputs", ["denoise", "--condition", "low-dose", "-o", "o"]),
        ("serve unknown condition", ["serve", "--condition", "no-such", "--port", "0"]),
        ("serve bad port", ["serve", "--condition", "low-dose", "--port", "99999"]),
        ("serve zero max-pixels", ["serve", "--condition", "low-dose", "--port", "0", "--max-pixels", "0"]),
        ("serve zero workers", ["serve", "--condition", "low-dose", "--port", "0", "--workers", "0"]),
        ("serve unresolvable host", ["serve", "--condition", "low-dose", "--port", "0", "--host", "999.1.1.1"]),
        ("simulate --out /proc/x", ["simulate", "--condition", "low-dose", "--n", "1", "--size", "32",
                                    "--out", "/proc/x"]),
        ("simulate --n -1", ["simulate", "--condition", "low-dose", "--n", "-1", "--out", str(root / "s1")]),
        ("simulate --n 0", ["simulate", "--condition", "low-dose", "--n", "0", "--out", str(root / "s0")]),
        ("simulate --size 1", ["simulate", "--condition", "low-dose", "--n", "1", "--size", "1",
                               "--out", str(root / "s2")]),
        ("simulate --size -8", ["simulate", "--condition", "low-dose", "--n", "1", "--size", "-8",
                                "--out", str(root / "s3")]),
        ("simulate --pixel-size-pm -1", ["simulate", "--condition", "low-dose", "--n", "1", "--size", "32",
                                         "--pixel-size-pm", "-1", "--out", str(root / "s4")]),
        ("simulate --pixel-size-pm nan", ["simulate", "--condition", "low-dose", "--n", "1", "--size", "32",
                                          "--pixel-size-pm", "nan", "--out", str(root / "s5")]),
        ("promote a missing version", ["promote", "--condition", "low-dose", "--version", "999"]),
        ("rollback with no history", ["rollback", "--condition", "low-dose"]),
        ("models of an unknown condition", ["models", "--condition", "no-such"]),
        ("evaluate an unknown condition", ["evaluate", "--condition", "no-such"]),
        ("tune --storage ''", ["tune", "--condition", "low-dose", "--trials", "1", "--storage", ""]),
        ("tune --trials 0", ["tune", "--condition", "low-dose", "--trials", "0"]),
        ("train --from a truncated version", ["train", "--condition", "low-dose", "--epochs", "1",
                                              "--from", f"models:/{NAME}@truncated"]),
        ("train --from a foreign version", ["train", "--condition", "low-dose", "--epochs", "1",
                                            "--from", f"models:/{NAME}@foreign"]),
        ("train --from a missing model", ["train", "--condition", "low-dose", "--epochs", "1",
                                          "--from", "models:/nope/1"]),
    ]
    import mlflow

    registry = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, argv in argv_cases:
        outcome = invoke(argv)
        champion = str(registry.get_model_version_by_alias(NAME, "champion").version)
        if champion != "1":  # the case changed the store although it was refused: put it back, say so
            registry.set_registered_model_alias(NAME, "champion", "1")
            outcome = f"{outcome}, moved the champion to v{champion}"
        outcomes.append(("cli args", name, outcome))
    typo = root / "mlfow.db"
    outcome = invoke(d + ["-o", str(root / "oy")], {"MLFLOW_TRACKING_URI": f"sqlite:///{typo}"})
    outcomes.append(("cli args", "typo in MLFLOW_TRACKING_URI", "silent" if typo.exists() else outcome))
    for name, text in cases.yaml_cases():
        path = files / (re.sub(r"\W+", "_", name) + ".yaml")
        path.write_text(text)
        outcomes.append(("cli yaml", name, invoke(["simulate", "--condition", str(path), "--n", "1", "--size", "32",
                                                   "--out", str(root / "sy")])))
    # An unreachable tracking server, in a subprocess: it must say so in one line within 60 s.
    silent = socket.socket()  # accepts connections into its backlog, never reads nor answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    for name, target in (("tracking server refusing connections", "http://127.0.0.1:9"),
                         ("tracking server not answering", f"http://127.0.0.1:{silent.getsockname()[1]}"),
                         ("tracking server unroutable address", "http://10.255.255.1:5000")):
        started = time.monotonic()
        try:
            done = subprocess.run(_CLI + d + ["-o", str(root / "ou")], env={**os.environ, "MLFLOW_TRACKING_URI": target},
                                  capture_output=True, text=True, timeout=90)
            elapsed = time.monotonic() - started
            outcome = "hung" if elapsed > 60 else classify_cli(done.returncode, done.stdout + done.stderr)
        except subprocess.TimeoutExpired:
            elapsed, outcome = 90.0, "hung"
        figures[f"cli {name} (s)"] = round(elapsed, 1)
        outcomes.append(("cli args", name, outcome))
    silent.close()


# --------------------------------------------------------------------------- Python API

def api_calls(uri: str, root: Path) -> list[tuple[str, object]]:
    import stemreg

    rng = np.random.default_rng(0)
    img = rng.random((16, 16), dtype=np.float32)
    den = lambda x, **kw: (lambda: stemreg.denoise(x, **{"condition": "low-dose", "tracking_uri": uri, **kw}))  # noqa: E731
    load = lambda **kw: (lambda: stemreg.load_model(**{"tracking_uri": uri, **kw}))  # noqa: E731
    calls = [
        ("denoise condition no-such", den(img, condition="no-such")),
        ("denoise condition ''", den(img, condition="")),
        ("denoise condition None", den(img, condition=None)),
        ("denoise condition 3", den(img, condition=3)),
        ("denoise condition a list", den(img, condition=["low-dose"])),
        ("denoise alias ''", den(img, alias="")), ("denoise alias nope", den(img, alias="nope")),
        ("denoise foreign loader_module", den(img, alias="foreign")),
        ("denoise foreign loader + model_code_path", den(img, alias="foreign-codepath")),
        ("denoise weights sha256 mismatch", den(img, alias="badsha")),
        ("denoise truncated weights", den(img, alias="truncated")),
        ("denoise tracking_uri typo", den(img, tracking_uri=f"sqlite:///{root / 'mlfow2.db'}")),
        ("denoise tracking_uri ''", den(img, tracking_uri="")),
        ("denoise tracking server refusing", den(img, tracking_uri="http://127.0.0.1:9")),
        ("denoise bool image", den(img > 0.5)), ("denoise complex image", den(img.astype(np.complex64))),
        ("denoise (H, W, 3)", den(rng.random((16, 16, 3)).astype(np.float32))),
        ("denoise (N, H, W, 2)", den(np.zeros((2, 8, 8, 2), np.float32))),
        ("denoise float64 1e298", den(np.full((8, 8), 1e298))),
        ("denoise float64 -1e39", den(np.full((8, 8), -1e39))),
        ("denoise object array", den(np.array([[1, "a"], [2, 3]], dtype=object))),
        ("denoise string array", den(np.array([["a", "b"], ["c", "d"]]))),
        ("denoise ragged list", den([[1.0, 2.0], [3.0]])), ("denoise 1-D", den(np.ones(16, np.float32))),
        ("denoise 0-size", den(np.zeros((0, 8), np.float32))),
        ("denoise NaN", den(np.full((8, 8), np.nan, np.float32))), ("denoise 1x1", den(np.ones((1, 1), np.float32))),
        ("denoise missing path", den(str(root / "nope.npy"))), ("denoise a directory", den(root)),
        ("denoise None", den(None)), ("denoise a dict", den({"a": 1})),
        ("denoise params tile_px 0", den(img, params={"tile_px": 0})),
        ("denoise params a string", den(img, params="tile_px=16")),
        ("denoise model a string", den(img, model="not a model")),
        ("load_model condition no-such", load(condition="no-such")),
        ("load_model nothing given", load()),
        ("load_model missing version", load(model_uri=f"models:/{NAME}/999")),
        ("load_model missing model", load(model_uri="models:/nope/1")),
        ("load_model a folder that is no model", load(model_uri=str(root))),
        ("load_model foreign alias", load(condition="low-dose", alias="foreign")),
        ("load_model foreign + model_code_path", load(condition="low-dose", alias="foreign-codepath")),
        ("load_model weights sha256 mismatch", load(condition="low-dose", alias="badsha")),
        ("simulate no-such", lambda: stemreg.simulate("no-such", 2)),
        ("simulate n -1", lambda: stemreg.simulate("low-dose", -1, size_px=32)),
        ("simulate size_px 1", lambda: stemreg.simulate("low-dose", 1, size_px=1)),
        ("simulate n a string", lambda: stemreg.simulate("low-dose", "2", size_px=32)),
        ("simulate size_px 2.5", lambda: stemreg.simulate("low-dose", 1, size_px=2.5)),
    ]
    for name, text in cases.yaml_cases():
        path = root / "api-files" / (re.sub(r"\W+", "_", name) + ".yaml")
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        calls.append((f"simulate {name}", lambda p=path: stemreg.simulate(str(p), 1, size_px=32)))
    return calls


def run_api(uri: str, root: Path, outcomes: list) -> None:
    for name, call in api_calls(uri, root):
        box: dict = {}

        def target(call=call, box=box) -> None:
            try:
                box["result"] = call()
            except BaseException as exc:  # noqa: BLE001 - classified
                box["exc"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout=60)
        outcome = "hung" if thread.is_alive() else classify_api(box.get("result"), box.get("exc"))
        outcomes.append(("api", name, outcome))


# --------------------------------------------------------------------------- main

def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every case, not only the bad ones")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="stemreg-fuzz-"))
    uri = register_models(root)
    outcomes: list[tuple[str, str, str]] = []  # (surface, case, outcome)
    figures: dict = {}
    started = time.monotonic()
    for phase, run in (("http", lambda: run_http(uri, outcomes, figures)),
                       ("cli", lambda: run_cli(uri, root, outcomes, figures)),
                       ("api", lambda: run_api(uri, root, outcomes))):
        if phase == "api":
            inputs = _digest(root / "files")
        begun = time.monotonic()
        run()
        figures[f"{phase}_seconds"] = round(time.monotonic() - begun)
        print(f"[fuzz] {phase}: {figures[f'{phase}_seconds']} s, {len(outcomes)} cases so far", file=sys.stderr,
              flush=True)
    import mlflow
    import stemreg

    if (root / "PWNED").exists():
        outcomes.append(("store", "code from the artifact store ran", "silent"))
    try:
        champion = str(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
            NAME, "champion").version)
        out = stemreg.denoise(np.ones((8, 8), np.float32), condition="low-dose", tracking_uri=uri)
        problems = [what for what, bad in (("the champion moved", champion != "1"),
                                           ("the champion's answer is not finite", not np.isfinite(out).all()),
                                           ("an input file changed", _digest(root / "files") != inputs)) if bad]
    except Exception as exc:  # noqa: BLE001 - the store must still serve
        problems = [f"the champion no longer denoises: {exc}"]
    outcomes.append(("store", "champion and input files intact afterwards" + (f" ({'; '.join(problems)})"
                                                                               if problems else ""),
                     "lost" if problems else "clear"))
    figures["seconds"] = round(time.monotonic() - started)

    outcomes = [(surface, name + (f" ({o.split(', ', 1)[1]})" if ", " in o else ""), o.split(", ", 1)[0]
                 if ", " not in o else "silent") for surface, name, o in outcomes]
    counts = collections.Counter(outcome for _, _, outcome in outcomes)
    for surface, name, outcome in outcomes:
        if args.verbose or outcome != "clear":
            print(f"  {outcome:8s}  {surface:18s}  {name}")
    by_surface = collections.Counter(surface.split()[0] for surface, _, _ in outcomes)
    print(f"{len(outcomes)} bad inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(by_surface.items())))
    print("outcomes: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("clear", "unclear", "silent", "hung", "lost")))
    print(f"server RSS: {figures['server_rss_start_mb']} MB at start, peak {figures['server_rss_peak_mb']} MB, "
          f"{figures['server_rss_end_mb']} MB at the end (growth "
          f"{figures['server_rss_end_mb'] - figures['server_rss_start_mb']} MB)")
    print(f"/ping during the run: {figures['pings_200']} of {figures['pings']} answered 200, slowest "
          f"{figures['ping_max_s']} s (p99 {figures['ping_p99_s']} s), while up to {figures['slow_clients_held_max']} "
          f"slow clients were connected; their answers: {figures['slow_clients_answers']}")
    print(f"trickled bodies answered 408 after {figures['trickle_408_after_s']} s; total {figures['seconds']} s")
    print("accepted by design (answered, not counted): " + "; ".join(figures.get("accepted_by_design", [])))
    if args.verbose:
        for what, text in CLI_SAID.items():
            print(f"  cli said for {what!r}: {text!r}")
    if args.json:
        print(json.dumps(figures))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if counts.get("clear", 0) == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
