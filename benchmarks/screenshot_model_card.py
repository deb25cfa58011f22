"""Screenshot the model card as a user sees it in the MLflow UI.

Trains a tiny low-dose denoiser (seconds), registers and scores it in a temp
SQLite store, starts `mlflow server` on a free port of 127.0.0.1, and takes
headless Chromium screenshots of the model version page and the registered
model page. Prints the PNG paths.

    python benchmarks/screenshot_model_card.py [--out /tmp/card.png]

Needs `chromium` on the PATH (Debian: apt-get install -y chromium).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TINY_ARCH = {"kind": "reverse-hourglass", "depth": 4, "widths": [8, 16, 8], "kernel_size": 3}
TINY_TRAIN = {"epochs": 2, "steps_per_epoch": 15, "batch_size": 4, "patch_px": 32, "lr": 3e-3}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def register_one(store: Path) -> tuple[str, str]:
    """Train, register and score one tiny low-dose model in `store`; returns (tracking URI, version)."""
    uri = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(store)  # artifacts land under ./mlruns of the store
    from stemreg.platform.training import train_and_register

    result = train_and_register("low-dose", arch=TINY_ARCH, config=TINY_TRAIN, seed=0, n_train=4, n_val=2,
                                size_px=96, run_name="card-screenshot", progress=False)
    return uri, result.version


def wait_for(url: str, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} within {timeout_s:.0f} s")


def screenshot(url: str, out: Path, *, height: int = 1800) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("chromium not found; install it (apt-get install -y chromium)")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size=1400,{height}",
                    "--virtual-time-budget=15000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/card.png"), help="Version page PNG.")
    parser.add_argument("--height", type=int, default=1800, help="Window height in pixels.")
    args = parser.parse_args()
    out = args.out.resolve()
    store = Path(tempfile.mkdtemp(prefix="stemreg-card-"))
    uri, version = register_one(store)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--default-artifact-root",
         str(store / "mlruns"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health")
        name = "stem-denoiser-low-dose"
        shots = [screenshot(f"{base}/#/models/{name}/versions/{version}", out, height=args.height),
                 screenshot(f"{base}/#/models/{name}", out.with_name(out.stem + "-model.png"), height=args.height)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    for shot in shots:
        print(shot)


if __name__ == "__main__":
    main()
