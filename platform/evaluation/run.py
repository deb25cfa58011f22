"""The whole evaluation: every method scored on one test set, the artifacts, one MLflow run."""
from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import mlflow
import numpy as np
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from tqdm.auto import tqdm

from stemreg.models.config import TrainBudget, leaderboard_budget
from stemreg.models.training import pick_device
from stemreg.platform.evaluation.cache import classical_rows, load_row, row_tags, save_row
from stemreg.platform.evaluation.converged import ConvergedTraining, converged_method
from stemreg.platform.evaluation.data import TestSet, _Data, benchmark_test_set, merge_provenance, user_test_set
from stemreg.platform.evaluation.figures import bar_chart, gallery
from stemreg.platform.evaluation.heatmaps import gain_heatmap, hourglass_vs_bm3d
from stemreg.platform.evaluation.leaderboard import METRICS, Leaderboard, _json_safe, grid_bin, score_method
from stemreg.platform.evaluation.methods import (CLASSICAL, LEARNED_METHODS, METHOD_DESCRIPTIONS, NOISY, RESTORATION,
                                                 _build_method, champion_version, default_methods,
                                                 parse_methods)
from stemreg.platform.registry import as_condition, benchmark_id
from stemreg.platform.store import configure

log = logging.getLogger(__name__)


def evaluate(condition: Any, *, methods: str | Sequence[str] | None = None, budget: str | TrainBudget = "quick",
             images_dir: str | Path | None = None, seed: int = 0, device: str = "auto",
             use_registry: bool = True, log_to_mlflow: bool = True, progress: bool = True,
             output_dir: str | Path | None = None, checkpoint_dir: str | Path = "converged",
             time_limit_s: float | None = None, use_cache: bool = True, workers: int = 2) -> Leaderboard:
    """Score every method on a condition and (optionally) log the leaderboard as one MLflow run.

    Parameters
    ----------
    condition
        Condition name, YAML path or ``Condition``.
    methods
        Subset of :data:`METHODS` (comma-separated text or a list); default all.
    budget
        ``"tiny"``, ``"quick"``, ``"full"``, ``"converged"`` or a :class:`Budget`. ``converged`` trains
        (or resumes) every CNN until its validation curve is flat (:mod:`.converged`) and scores
        their last weights; the registered champion is not used then.
    images_dir
        Score on these high-dose images degraded by the condition instead of
        the frozen benchmark set.
    seed
        Seed of the training / validation draws and of the training itself.
    device
        Torch device for the CNNs (``auto``: CUDA when available).
    use_registry
        Use the condition's registered champion for ``hourglass`` when there is one.
    log_to_mlflow
        Log one MLflow run with the table, bar chart and gallery.
    progress
        Show tqdm progress bars.
    output_dir
        Also write the artifacts here (default: a temporary folder).
    checkpoint_dir
        ``converged`` budget: where each method's checkpoints live (``<dir>/<condition>/``).
    time_limit_s
        ``converged`` budget: stop training after the round that passes this many seconds (it
        resumes next time) and score what is reached.
    use_cache
        Take the classical rows of the frozen benchmark from the MLflow store when they are there
        (and store the ones computed); only with ``log_to_mlflow`` (:mod:`.cache`).
    workers
        Processes computing the missing classical rows in parallel.

    Returns
    -------
    Leaderboard
    """
    started = time.perf_counter()
    cond = as_condition(condition)
    method_list = parse_methods(methods) if methods is not None else default_methods(cond)
    plan = leaderboard_budget(budget)
    test = user_test_set(cond, images_dir, seed=seed) if images_dir is not None else benchmark_test_set(cond)
    data = _Data(cond, plan, seed)

    if log_to_mlflow:
        configure()  # the store holds the cached rows
    # the noisy row of the frozen benchmark is the same every time (its column detection is not cheap)
    noisy_tags = row_tags(cond, NOISY, plan, seed) if use_cache and log_to_mlflow and images_dir is None else None
    noisy = load_row(noisy_tags) if noisy_tags is not None else None
    if noisy is not None:
        noisy.source = "input"
    else:
        noisy = score_method(NOISY, lambda image: image, test, source="input",
                             details={"description": METHOD_DESCRIPTIONS[NOISY]})
        if noisy_tags is not None:
            save_row(noisy_tags, noisy)
    results = [noisy]
    converged = None
    if plan.name == "converged" and any(m in LEARNED_METHODS for m in method_list):
        converged = ConvergedTraining(cond, plan, methods=[m for m in method_list if m in LEARNED_METHODS],
                                      seed=seed, checkpoint_dir=checkpoint_dir, device=str(pick_device(device)),
                                      log_to_mlflow=log_to_mlflow)
        converged.run(time_limit_s=time_limit_s, progress=progress)
    precomputed: dict[str, Any] = {}
    fixed = [m for m in method_list if m in CLASSICAL or m in RESTORATION]
    frozen = images_dir is None and converged is None  # the frozen benchmark: the same answer every time
    # the store is asked for a champion only where it is configured (no mlflow.db is created otherwise)
    champion = (champion_version(cond) if frozen and log_to_mlflow and use_registry and "hourglass" in method_list
                else None)
    hourglass_here = not use_registry or (log_to_mlflow and champion is None)
    # the CNNs trained here on a CPU join the classical rows in the pool (and its cache)
    learned = ([m for m in method_list if m in LEARNED_METHODS and (m != "hourglass" or hourglass_here)]
               if frozen and str(pick_device(device)) == "cpu" else [])
    if images_dir is None and (fixed or learned):
        precomputed = classical_rows(cond, fixed + learned, plan, seed, use_cache=use_cache and log_to_mlflow,
                                     workers=workers)
    bar = tqdm(method_list, desc=f"evaluate {cond.name}", disable=not progress, unit="method")
    for method in bar:
        bar.set_postfix(method=method)
        if method in precomputed:
            results.append(precomputed[method])
            continue
        # a CNN trained here on the benchmark is the same every time with one code, budget and seed; a
        # registered champion with one code and model version
        cacheable = (use_cache and log_to_mlflow and images_dir is None and converged is None
                     and method in LEARNED_METHODS)
        scored = champion if method == "hourglass" else None
        tags = row_tags(cond, method, plan, seed, learned=True, champion=scored) if cacheable else None
        cached = load_row(tags) if tags is not None else None
        if cached is not None:
            results.append(cached)
            continue
        if converged is not None and method in converged.states:
            predict, source, details = converged_method(converged, method)
        else:
            predict, source, details = _build_method(method, cond, data, plan, test, seed=seed, device=device,
                                                     use_registry=use_registry and (scored is not None
                                                                                    or tags is None),
                                                     progress=progress, champion=scored)
            if scored is not None and not source.startswith("registered champion"):
                tags = None  # the champion did not load: trained here instead, not its row
        details = {"description": METHOD_DESCRIPTIONS[method], **details}
        results.append(score_method(method, predict, test, source=source, details=details, progress=progress))
        if tags is not None:
            results[-1].details["cache_run_id"] = save_row(tags, results[-1])
        log.info("%s: PSNR %.2f dB (%s)", method, float(np.mean(results[-1].psnr)), source)
    bar.close()

    # the rows fitted in worker processes (or by the run that cached them) bring their own draws' check
    provenance = merge_provenance(data.provenance(test), [r.details.pop("provenance") for r in results
                                                          if "provenance" in r.details])
    board = Leaderboard(condition=cond.name, benchmark_id=benchmark_id(cond), budget=plan,
                        test_set=test.description, n_images=len(test.degraded),
                        image_shape=tuple(test.degraded[0].shape), results=results,
                        provenance=provenance, noise_source=test.noise_source)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(output_dir) if output_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        board.seconds = time.perf_counter() - started
        paths = write_artifacts(board, test, folder)
        board.artifacts = [p.name for p in paths]
        if log_to_mlflow:
            board.run_id = log_leaderboard(board, cond, paths, method_list)
    board.seconds = time.perf_counter() - started
    return board


def write_artifacts(board: Leaderboard, test: TestSet, folder: Path) -> list[Path]:
    """Write the tables (leaderboard.csv / .json / .md: means over bins; leaderboard_by_bin.csv / .json:
    every bin), leaderboard_bars.png, gallery.png, one heat map per method (heatmap_<method>.png) and
    hourglass_vs_bm3d.png into ``folder``."""
    paths = []
    for name, text in (("leaderboard.csv", board.csv()),
                       ("leaderboard.json", json.dumps(board.to_dict(), indent=2)),
                       ("leaderboard.md", board.markdown() + "\n"),
                       ("leaderboard_by_bin.csv", board.per_bin_csv()),
                       ("leaderboard_by_bin.json", json.dumps(_json_safe(board.per_bin()), indent=2))):
        path = folder / name
        path.write_text(text)
        paths.append(path)
    paths.append(bar_chart(board, folder / "leaderboard_bars.png"))
    paths.append(gallery(board, test, folder / "gallery.png"))
    if any(grid_bin(b) for b in board.bins):  # a stratified benchmark, not a user's folder
        for result in board.results:
            if result.method != NOISY:
                paths.append(gain_heatmap(board, result.method, folder / f"heatmap_{result.method}.png"))
        comparison = hourglass_vs_bm3d(board, folder / "hourglass_vs_bm3d.png")
        if comparison is not None:
            paths.append(comparison)
    return paths


def log_leaderboard(board: Leaderboard, condition: Any, paths: list[Path], methods: list[str]) -> str:
    """Log the leaderboard as one MLflow run; returns its run id."""
    configure()
    with mlflow.start_run(run_name=f"evaluate-{board.condition}") as run:
        mlflow.set_tags({"stemreg.kind": "evaluation", "condition": board.condition,
                         "benchmark.id": board.benchmark_id, "test_set": board.test_set,
                         MLFLOW_RUN_NOTE: (
                             f"Leaderboard of {len(methods)} method(s) on {board.test_set} ({board.n_images} "
                             f"images in {len(board.bins)} bin(s)), {board.budget.name} training budget for "
                             f"the CNNs; figures are unweighted means over bins. Classical GAT filters: "
                             f"{board.noise_source}. Artifacts: the table (CSV, Markdown), the table per "
                             f"bin (leaderboard_by_bin.csv/.json), PSNR-gain heat maps per method "
                             f"(sampling x dose), hourglass_vs_bm3d.png, a bar chart and a before/after "
                             f"gallery.")})
        params = dict(condition.flat_params())
        params.update({"evaluate.budget": board.budget.name, "evaluate.methods": ",".join(methods),
                       "evaluate.n_images": str(board.n_images)})
        params.update({f"budget.{k}": str(v) for k, v in board.budget.to_dict().items() if k != "name"})
        mlflow.log_params(params)
        metrics = {}
        for row in board.rows():
            for key, _, _ in METRICS:
                value = row[key]
                if math.isfinite(value):
                    metrics[f"{row['method']}.{key}"] = value
        for method, by_bin in board.per_bin().items():
            for name, figures in by_bin.items():
                for key in ("psnr", "ssim", "psnr_gain_db"):
                    if math.isfinite(figures[key]):
                        metrics[f"{method}.{key}.{_metric_safe(name)}"] = figures[key]
        mlflow.log_metrics(metrics)
        for path in paths:
            mlflow.log_artifact(str(path))
        try:
            table = {k: [_json_safe(r[k]) for r in board.rows()] for k in board.rows()[0]}
            mlflow.log_table(data=table, artifact_file="leaderboard_table.json")
        except Exception as exc:  # noqa: BLE001 - the CSV/JSON artifacts already hold the table
            log.warning("mlflow.log_table failed (%s); the CSV and JSON artifacts hold the table", exc)
        return run.info.run_id


def _metric_safe(name: str) -> str:
    """A bin name as an MLflow metric key part (``seed:8pm@1x`` -> ``seed_8pm_1x``)."""
    return re.sub(r"[^0-9A-Za-z_.-]", "_", name)
