"""How long the default `stemreg evaluate` takes with a cold and with a warm row cache.

Runs `stemreg evaluate --condition C --budget B` twice against one fresh MLflow store (a temporary
folder): the first run computes every row (classical rows and the CNNs trained here in parallel
processes) and stores them per benchmark id; the second finds them in the store. Prints the seconds
of each, the machine's load average before, between and after, and what the second run took from the
cache. As `stemreg evaluate` at its defaults, the registry is asked for the champion (a fresh store has
none: the hourglass is trained here); `--no-registry` skips that.

    python benchmarks/bench_evaluate_cache.py --condition low-dose [--methods ...] [--workers 2] [--threads 1]

Targets (issue 22): cold within 10 minutes on 2 cores, warm within 2 minutes.
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


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "from stemreg.platform.cli import main; main()", "evaluate",
                          *args, "--json"], cwd=cwd,
                         env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"stemreg evaluate failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return seconds, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--methods", default=None, help="default: every method that applies")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-registry", action="store_true", help="pass --no-registry to stemreg evaluate")
    options = parser.parse_args()
    args = ["--condition", options.condition, "--budget", options.budget, "--workers", str(options.workers)]
    if options.no_registry:
        args.append("--no-registry")
    if options.methods:
        args += ["--methods", options.methods]
    if options.threads:
        args += ["--threads", str(options.threads)]
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        load_before = os.getloadavg()
        cold, board = _run(args, Path(tmp), env)
        load_between = os.getloadavg()
        warm, again = _run(args, Path(tmp), env)
        load_after = os.getloadavg()
    cached = [r["method"] for r in again["rows"] if str(r.get("source", "")).endswith("(cached)")]
    figures = [[{k: v for k, v in r.items() if k != "source"} for r in b["rows"]] for b in (board, again)]
    same = figures[0] == figures[1] and board["per_bin"] == again["per_bin"]
    # where the cold run spent its time: each row's inference speed and each CNN's training
    rows = {r["method"]: {"ms_per_mpx": round(r["ms_per_mpx"]),
                          "train_seconds": board["details"][r["method"]].get("train_seconds")}
            for r in board["rows"] if r["method"] != "noisy"}
    print(json.dumps({"condition": options.condition, "budget": options.budget,
                      "n_images": board["n_images"], "methods": [r["method"] for r in board["rows"]],
                      "cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1),
                      "warm_rows_from_cache": cached, "warm_table_equals_cold": same, "cold_rows": rows,
                      "image_shape": board["image_shape"], "workers": options.workers,
                      "benchmark_max_per_bin": os.environ.get("STEMREG_BENCHMARK_MAX_PER_BIN"),
                      "load_average_before": [round(x, 1) for x in load_before],
                      "load_average_between": [round(x, 1) for x in load_between],
                      "load_average_after": [round(x, 1) for x in load_after], "cpus": os.cpu_count()}, indent=1))
    print(f"cold {cold:.0f} s (target 600 s), warm {warm:.0f} s (target 120 s)")


if __name__ == "__main__":
    main()
