"""Screenshot the MLflow UI's runs table of a main-job store with every study run expanded.

MLflow 3 shows nested runs collapsed under their parent, and keeps which rows are expanded in the
browser's localStorage (``MLflowLocalStorage-1.1-ExperimentPage-["<experiment id>"]-ReactComponentState``,
field ``runsExpanded``), not in the URL. So the UI is served through a small same-origin proxy
that sets that entry before the app starts: the pipeline run and every study run expanded, the
rows filtered to the pipeline, the studies and their trials. Then headless Chromium takes the
screenshot. Reads the store only.

    python benchmarks/screenshot_studies.py --tracking-uri sqlite:///PATH/mlflow.db --artifacts PATH/mlruns \
        --out docs/main_job_studies.png [--height 1400]

Needs `chromium` on the PATH (Debian: apt-get install -y chromium).
"""
from __future__ import annotations

import argparse
import http.server
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot_model_card import free_port, screenshot, wait_for  # noqa: E402


def expanded_state(tracking_uri: str) -> tuple[str, dict, str]:
    """(experiment id, the UI state to persist, search filter) for the store's studies."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    studies = client.search_runs(experiments, "tags.`stemreg.role` = 'study'")
    if not studies:
        raise SystemExit(f"no study run in {tracking_uri}")
    experiment = studies[0].info.experiment_id
    parents = {s.data.tags.get("mlflow.parentRunId") for s in studies} - {None}
    expanded = {run_id: True for run_id in [*parents, *(s.info.run_id for s in studies)]}
    # the figures a front is made of, as columns beside the run names
    columns = ["metrics.`bench_psnr`", "metrics.`ms_per_mpx`", "metrics.`teacher_psnr`", "params.`kflop_per_pixel`",
               "params.`warm_start`"]
    state = {"runsExpanded": expanded, "selectedColumns": columns}
    return experiment, state, ""


def serve_proxy(upstream: str, experiment: str, state: dict) -> int:
    """A same-origin proxy to ``upstream`` whose index.html first writes ``state`` to localStorage."""
    # the UI keys the state by the JSON of the sorted experiment ids, e.g. ["1"]
    key = f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([experiment])}-ReactComponentState"
    entries = {key: json.dumps(state), "mlflow.assistant.panelOpen_v1": "false",  # the assistant panel closed
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
    inject = ("<script>" + "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in entries.items())
              + "</script>").encode()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def _forward(self, body: bytes | None = None) -> None:
            request = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    status, headers, payload = response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                status, headers, payload = error.code, error.headers, error.read()
            if "text/html" in headers.get("Content-Type", "") and b"<head>" in payload:
                payload = payload.replace(b"<head>", b"<head>" + inject, 1)
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            self._forward()

        def do_POST(self) -> None:  # noqa: N802
            self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, *args) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--artifacts", required=True, help="the store's artifact folder (mlruns)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()
    experiment, state, search = expanded_state(args.tracking_uri)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.tracking_uri, "--default-artifact-root",
         args.artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        proxy = serve_proxy(f"http://127.0.0.1:{port}", experiment, state)
        query = f"?{urllib.parse.urlencode({'searchFilter': search})}" if search else ""
        url = f"http://127.0.0.1:{proxy}/#/experiments/{experiment}/runs{query}"
        print(screenshot(url, args.out.resolve(), height=args.height))
        print(url)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    import urllib.error  # noqa: F401
    import urllib.parse  # noqa: F401

    main()
