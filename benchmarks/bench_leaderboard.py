"""Reproduce the `stemreg evaluate` leaderboard for one condition and print it with its honesty checks.

Runs :func:`stemreg.platform.evaluation.evaluate` (the same code as `stemreg evaluate`)
with the hourglass trained here under the same budget as the other CNNs (never
a registered champion, whose training budget differs), then prints

- the leaderboard (unweighted mean over the benchmark's sampling x dose bins, key bins;
  best value in bold);
- PSNR / SSIM per bin of the noisy input and of BM3D (GAT, oracle noise model per image),
  saved with the benchmark id to ``benchmarks/results/bm3d_<condition>_by_bin.json``
  (``--no-save`` to skip) for comparing other models against;
- what each method was fitted on: training mode, data, steps, whether it saw a
  clean image, and the check that no training/validation image is a test image;
- a check that every CNN had the same data draw and the same step budget;
- where the hourglass wins and loses, metric by metric.

Usage::

    python benchmarks/bench_leaderboard.py [--condition low-dose] [--budget quick|full|tiny]
        [--methods hourglass,autoencoder,...] [--seed 0] [--device auto] [--threads 2]
        [--output-dir DIR] [--mlflow] [--json]

``--budget quick`` is sized for CPU (tens of minutes on 2 cores for all methods; BM3D alone,
``--methods bm3d``, takes a few minutes); ``full`` for a GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from stemreg.platform import evaluation
from stemreg.platform.evaluation.leaderboard import _json_safe


def budget_check(board: evaluation.Leaderboard) -> list[str]:
    """Lines saying what each learned method trained on; raises if the CNN budgets differ."""
    lines = []
    budgets = {}
    for result in board.results:
        d = result.details
        if result.method not in evaluation.LEARNED_METHODS:
            continue
        if "epochs" not in d:  # a registered champion: trained elsewhere
            lines.append(f"  {result.method:<12} {result.source} (budget not comparable)")
            continue
        budget = (d["epochs"], d["steps_per_epoch"], d["batch_size"], d["patch_px"])
        budgets[result.method] = budget
        data = {"supervised": f"{board.budget.n_train} (noisy, clean) pairs",
                "noise2noise": f"{board.budget.n_train} fields x {d.get('repeats', board.budget.repeats)} "
                               "noisy repeats",
                "blind-spot": f"{board.budget.n_train} single noisy images"}[d["mode"]]
        lines.append(f"  {result.method:<12} {d['mode']:<11} on {data}; {d['epochs']} x {d['steps_per_epoch']} "
                     f"steps of {d['batch_size']} x {d['patch_px']}^2 px; clean image seen: "
                     f"{'yes' if d['clean_images_seen'] else 'no'}; best epoch {d['best_epoch']}; "
                     f"{d['train_seconds']:.0f} s")
    if len(set(budgets.values())) > 1:
        raise SystemExit(f"unequal CNN budgets (epochs, steps, batch, patch): {budgets}")
    return lines


def by_bin_block(board: evaluation.Leaderboard, methods: tuple[str, ...] = (evaluation.NOISY, "bm3d")
                 ) -> tuple[list[str], dict[str, Any]]:
    """Lines of PSNR / SSIM per bin for ``methods``, and the same as a JSON-able record."""
    per_bin = board.per_bin()
    present = [m for m in methods if m in per_bin]
    lines = [f"  {'bin':<14}" + "".join(f"{m + ' PSNR / SSIM':>26}" for m in present)]
    for name in board.bins:
        lines.append(f"  {name:<14}" + "".join(
            f"{per_bin[m][name]['psnr']:>17.2f} / {per_bin[m][name]['ssim']:.3f}" for m in present))
    rows = {r["method"]: r for r in board.rows()}
    lines.append(f"  {'mean of bins':<14}" + "".join(
        f"{rows[m]['psnr']:>17.2f} / {rows[m]['ssim']:.3f}" for m in present))
    record = {"condition": board.condition, "benchmark_id": board.benchmark_id, "budget": board.budget.name,
              "n_images": board.n_images, "image_shape": list(board.image_shape),
              "aggregate": "unweighted mean over bins",
              "bm3d": board.results[[r.method for r in board.results].index("bm3d")].source
              if "bm3d" in per_bin else None,
              "bm3d_details": next((r.details for r in board.results if r.method == "bm3d"), None),
              "by_bin": {m: {b: {"psnr": v["psnr"], "ssim": v["ssim"], "n_images": v["n_images"]}
                             for b, v in per_bin[m].items()} for m in present},
              "mean_over_bins": {m: {"psnr": rows[m]["psnr"], "ssim": rows[m]["ssim"]} for m in present}}
    return lines, record


def wins_and_losses(board: evaluation.Leaderboard, mine_name: str = "hourglass") -> list[str]:
    """Per metric: the hourglass's rank among the methods, and who beats it by how much."""
    rows = {r["method"]: r for r in board.rows() if r["method"] != evaluation.NOISY}
    if mine_name not in rows:
        return []
    lines = []
    mine = rows[mine_name]
    for key, heading, higher in evaluation.METRICS:
        if not math.isfinite(mine[key]):
            continue
        others = {m: r[key] for m, r in rows.items() if m != mine_name and math.isfinite(r[key])}
        better = {m: v for m, v in others.items() if (v > mine[key] if higher else v < mine[key])}
        rank = 1 + len(better)
        if better:
            gaps = ", ".join(f"{m} {abs(v - mine[key]):.3g}" for m, v in
                             sorted(better.items(), key=lambda kv: -kv[1] if higher else kv[1]))
            lines.append(f"  {heading}: {mine_name} {mine[key]:.4g}, rank {rank}/{len(others) + 1}; better: {gaps}")
        else:
            runner = max(others.items(), key=lambda kv: kv[1] if higher else -kv[1]) if others else None
            margin = f" (next: {runner[0]}, by {abs(mine[key] - runner[1]):.3g})" if runner else ""
            lines.append(f"  {heading}: {mine_name} {mine[key]:.4g}, rank 1/{len(others) + 1}{margin}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--budget", choices=sorted(evaluation.BUDGETS), default="quick")
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output-dir", default=None, help="write the table, bar chart and gallery here")
    parser.add_argument("--mlflow", action="store_true", help="also log the MLflow run (store: MLFLOW_TRACKING_URI "
                                                             "or ./mlflow.db)")
    parser.add_argument("--json", action="store_true", help="print the leaderboard JSON instead")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/bm3d_*_by_bin.json")
    args = parser.parse_args(argv)

    import logging

    import torch

    # one line per method as it finishes (evaluation logs them), so a long run shows where it is
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("stemreg.platform.evaluation").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    board = evaluation.evaluate(args.condition, methods=args.methods, budget=args.budget, seed=args.seed,
                                device=args.device, use_registry=False, log_to_mlflow=args.mlflow,
                                progress=sys.stderr.isatty(), output_dir=args.output_dir)
    if args.json:
        print(json.dumps(board.to_dict(), indent=2))
        return 0
    plan = board.budget
    print(f"condition {board.condition} ({board.benchmark_id}); test: {board.test_set}, {board.n_images} images "
          f"{board.image_shape[0]}x{board.image_shape[1]} px")
    print(f"budget {plan.name}: {plan.n_train} training fields, {plan.n_val} validation images, "
          f"{plan.epochs} x {plan.steps_per_epoch} steps of {plan.batch_size} x {plan.patch_px}^2 px, "
          f"lr {plan.lr}; torch threads {torch.get_num_threads()}; device {args.device}")
    print()
    print(board.markdown())
    print()
    print("what each method was fitted on (never the test images):")
    for result in board.results[1:]:
        if result.method in evaluation.CLASSICAL:
            d = result.details
            print(f"  {result.method:<12} {result.source}; params {d.get('params')}; "
                  f"validation PSNR {d.get('val_psnr', float('nan')):.2f} dB")
    for line in budget_check(board):
        print(line)
    prov = board.provenance
    print(f"  seeds {prov.get('seeds')} vs benchmark seed {prov.get('benchmark_seed')}; "
          f"test images found in the fitting data: {prov.get('test_images_in_fitting_data')}")
    lines, record = by_bin_block(board)
    print()
    print(f"=== PSNR (dB) / SSIM per bin on the {board.condition} benchmark ({board.benchmark_id}): noisy input "
          f"and BM3D (GAT, oracle noise model per image) ===")
    for line in lines:
        print(line)
    if "bm3d" in record["by_bin"] and not args.no_save:
        out = Path(__file__).resolve().parent / "results" / f"bm3d_{board.condition.replace('-', '_')}_by_bin.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_json_safe(record), indent=2) + "\n")
        print(f"  saved {out}")
    for name in ("hourglass", "hourglass-family"):
        found = wins_and_losses(board, name)
        if found:
            print()
            print(f"{name} wins and losses (means over bins):")
            for line in found:
                print(line)
    if args.output_dir:
        print(f"\nartifacts in {Path(args.output_dir).resolve()}: {', '.join(board.artifacts)}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
