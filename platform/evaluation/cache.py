"""The rows of a frozen benchmark, computed once and kept in the MLflow store; run in parallel.

A classical row (a filter or a restoration pipeline, its strength fitted on validation images)
gives the same answer every time on a frozen benchmark: BM3D alone costs ~40 s per megapixel, so
recomputing it on every ``stemreg evaluate`` is waste. Each row is stored as one MLflow run
(``stemreg.kind = classical-row``) tagged with what makes it: the benchmark id (the condition's
physics and benchmark seed), the method and its code version, the data seed and the number of
validation images; its artifact ``row.npz`` holds the per-image scores, ``row.json`` the rest.
A benchmark id that changes (new physics) or a bumped :data:`ROWS_VERSION` misses the cache.

Missing rows (classical ones, and the CNNs trained here on a CPU) are computed in separate processes
(one per method, up to ``workers`` at a time, the longest first), each building the benchmark and its
own training and validation draws (the same seeds as in the main process: the same data).
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stemreg.models.config import TrainBudget
from stemreg.platform.evaluation.leaderboard import MethodResult, _json_safe, score_method
from stemreg.platform.evaluation.restoration import RESTORATION_VERSION

log = logging.getLogger(__name__)

#: Bump when a classical method, its fitting or the scoring changes (restoration rows add their own).
ROWS_VERSION = "1"
KIND = "classical-row"
#: Below this many megapixels of missing rows they are computed in this process.
PARALLEL_MIN_MPX = 4.0
_ARRAYS = ("psnr", "ssim", "column_f1", "column_error_pm")


def row_tags(condition: Any, method: str, budget: TrainBudget, seed: int, *, learned: bool = False,
             champion: Any = None) -> dict[str, str]:
    """The tags that identify one cached row. A CNN trained here is deterministic for a given code,
    budget and seed on one machine: its row is keyed by :func:`code_version` and the whole budget too
    (``model``: ``trained-here``). A registered ``champion`` (an MLflow model version) is keyed by the
    code and its name, version and run instead of the budget: an alias that moves misses."""
    tags = {"stemreg.kind": KIND, "benchmark.id": condition.benchmark_id(), "method": method,
            "method.version": f"{ROWS_VERSION}.{RESTORATION_VERSION}", "seed": str(seed),
            "n_classical_val": str(budget.n_classical_val), "n_images": str(len(condition.benchmark_set()))}
    if learned or champion is not None:
        tags["code"] = code_version()
        if champion is not None:
            tags["model"] = f"models:/{champion.name}/{champion.version}@{champion.run_id}"
        else:
            budget_text = json.dumps(budget.to_dict(), sort_keys=True)
            tags.update({"budget": hashlib.sha1(budget_text.encode()).hexdigest()[:12], "model": "trained-here"})
    return tags


def code_version() -> str:
    """A hash of the code a CNN row depends on: the simulator (training draws), the models, their
    training and inference, this package and the registry's loading (every ``.py`` file there), and the
    torch and numpy versions. A commit that touches none of them (docs, tests, serving) keeps the rows;
    an installed package (no git checkout) has one too."""
    import torch

    import stemreg.acquisition
    import stemreg.models

    evaluation = Path(__file__).resolve().parent
    roots = [Path(stemreg.acquisition.__file__).resolve().parent, Path(stemreg.models.__file__).resolve().parent,
             evaluation, evaluation.parent / "registry", evaluation.parent / "prediction.py"]
    digest = hashlib.sha1(f"torch {torch.__version__} numpy {np.__version__}".encode())
    for root in roots:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(f"{path.relative_to(root.parent)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _query(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def load_row(tags: dict[str, str]) -> MethodResult | None:
    """The cached row with these tags, or None."""
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string=_query(tags),
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if not runs:
        return None
    try:
        folder = Path(mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id,
                                                          dst_path=tempfile.mkdtemp(prefix="stemreg-row-")))
        meta = json.loads((folder / "row.json").read_text())
        arrays = np.load(folder / "row.npz")
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
        log.warning("cached %s row unreadable (%s); recomputing it", tags["method"], exc)
        return None
    example = arrays["example"] if "example" in arrays.files else None
    return MethodResult(method=meta["method"], source=meta["source"] + " (cached)",
                        ms_per_mpx=float(meta["ms_per_mpx"]), details={**meta["details"], "cache_run_id":
                                                                        runs[0].info.run_id},
                        example=example, bins=meta["bins"], **{k: arrays[k] for k in _ARRAYS})


def save_row(tags: dict[str, str], result: MethodResult) -> str:
    """Store one row as an MLflow run; returns its run id."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        arrays = {k: np.asarray(getattr(result, k), float) for k in _ARRAYS}
        if result.example is not None:
            arrays["example"] = np.asarray(result.example, np.float32)
        np.savez_compressed(folder / "row.npz", **arrays)
        (folder / "row.json").write_text(json.dumps(_json_safe({
            "method": result.method, "source": result.source, "ms_per_mpx": result.ms_per_mpx,
            "details": result.details, "bins": result.bins}), indent=1))
        client = mlflow.MlflowClient()
        experiment = mlflow.get_experiment_by_name("stemreg-cache") or None
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment("stemreg-cache"))
        run = client.create_run(experiment_id, tags=tags, run_name=f"{KIND}-{result.method}")
        client.log_artifacts(run.info.run_id, str(folder))
        client.set_terminated(run.info.run_id)
        return run.info.run_id


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core


#: Rough relative cost of each row on a CPU (training included): the pool starts the longest first, so
#: that the short ones fill the other processes while BM3D runs (the order changes no figure).
_COST = {"bm3d": 100, "bm3d-wiener": 100, "bm3d-rl": 100, "align-bm3d": 100, "sdndti": 60, "hourglass": 25,
         "autoencoder": 25, "n2v": 20, "nlm": 10, "hourglass-family": 8, "tv": 4, "wavelet": 2}


def _tags(condition: Any, method: str, budget: TrainBudget, seed: int) -> dict[str, str]:
    """The cache key of a row computed here (a CNN trained here is keyed by the code too)."""
    from stemreg.platform.evaluation.methods import LEARNED_METHODS

    return row_tags(condition, method, budget, seed, learned=method in LEARNED_METHODS)


def compute_row(condition: Any, method: str, budget: TrainBudget, seed: int) -> MethodResult:
    """Fit (or train here, for a CNN) and score one row on the condition's benchmark (what a worker process
    runs); refuses, as the leaderboard does, when the fitting data hold a test image."""
    from stemreg.platform.evaluation.data import _Data, benchmark_test_set
    from stemreg.platform.evaluation.methods import METHOD_DESCRIPTIONS, _build_method

    test = benchmark_test_set(condition)
    data = _Data(condition, budget, seed)
    predict, source, details = _build_method(method, condition, data, budget, test, seed=seed, device="cpu",
                                             use_registry=False, progress=False)
    # raises on a test image in the fitting data; the evaluation reports it with its own (merge_provenance)
    details = {"description": METHOD_DESCRIPTIONS[method], **details, "provenance": data.provenance(test)}
    return score_method(method, predict, test, source=source, details=details)


def classical_rows(condition: Any, methods: Sequence[str], budget: TrainBudget, seed: int, *,
                   use_cache: bool = True, workers: int = 2) -> dict[str, MethodResult]:
    """Every row of ``methods`` on the benchmark (classical ones, and CNNs trained here on the CPU): from
    the cache where it is there, the others computed in up to ``workers`` processes, the longest first
    (and cached when ``use_cache``)."""
    rows: dict[str, MethodResult] = {}
    keys = {m: _tags(condition, m, budget, seed) if use_cache else None for m in methods}
    if use_cache:
        from stemreg.platform.store import configure

        configure()
        for method in methods:
            found = load_row(keys[method]) if keys[method] is not None else None
            if found is not None:
                rows[method] = found
    missing = sorted((m for m in methods if m not in rows), key=lambda m: -_COST.get(m, 1))
    if missing:
        log.info("computing %d row(s) in %d process(es): %s", len(missing), min(workers, len(missing)),
                 ", ".join(missing))
        bench = condition.benchmark_set()
        # Starting a process (torch, mlflow imports) costs seconds: worth it only for real work.
        megapixels = len(missing) * float(np.prod(bench.degraded.shape)) / 1e6
        def keep(method: str, result: MethodResult) -> None:  # stored at once: a stopped run keeps it
            rows[method] = result
            if keys[method] is not None:
                result.details["cache_run_id"] = save_row(keys[method], result)

        if workers > 1 and len(missing) > 1 and megapixels >= PARALLEL_MIN_MPX:
            context = multiprocessing.get_context("spawn")  # no forked torch / sqlite state
            with ProcessPoolExecutor(max_workers=min(workers, len(missing)), mp_context=context,
                                     initializer=_one_thread) as pool:
                futures = {pool.submit(compute_row, condition, m, budget, seed): m for m in missing}
                for future in as_completed(futures):
                    keep(futures[future], future.result())
        else:
            for method in missing:
                keep(method, compute_row(condition, method, budget, seed))
    return {m: rows[m] for m in methods}
