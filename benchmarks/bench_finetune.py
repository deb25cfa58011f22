"""Retraining from a shared base against training from scratch: how much faster does it converge?

1. Trains a base model for ``--base`` (default ``low-dose``) with
   :func:`stemreg.platform.training.train_and_register` and registers it as
   ``stem-denoiser-<base>`` (alias champion) in a temporary MLflow store.
2. For ``--target`` (default ``blur``) trains the same architecture twice with
   the SAME budget, data, learning-rate schedule and seed:
   (a) started from the registered base's weights, loaded through the registry
   (``models:/stem-denoiser-<base>@champion``, as ``stemreg train --from`` does,
   via :func:`stemreg.platform.training.load_parent`), and
   (b) from scratch (fresh weights from the same torch seed).
3. Records the validation PSNR after every epoch (and before the first step,
   "step 0"), prints both curves, the steps each needs to reach thresholds set
   by the scratch model's final PSNR (95 %, 99 % and 100 % of it, in dB) and
   the ratio, scores both final models on the target's frozen benchmark set,
   and saves ``bench_finetune.png`` (both curves) and ``bench_finetune.json`` to
   ``--output-dir``.

Usage::

    python benchmarks/bench_finetune.py [--budget quick|full|tiny] [--base low-dose] [--target blur]
        [--seed 0] [--threads 2] [--output-dir DIR] [--json]

``--budget quick`` takes minutes on 2 CPU cores; ``full`` is sized for a GPU;
``tiny`` is a smoke run whose figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: base: the base model's training; train: both target trainings (short epochs, so the curve has
#: points); the architecture is the seed's default 8-layer reverse hourglass unless --arch says otherwise.
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {"base": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "patch_px": 32},
             "train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "patch_px": 32},
             "n_train": 2, "n_val": 2},
    "quick": {"base": {"epochs": 6, "steps_per_epoch": 40, "batch_size": 8, "patch_px": 64},
              "train": {"epochs": 12, "steps_per_epoch": 15, "batch_size": 8, "patch_px": 64},
              "n_train": 24, "n_val": 4},
    "full": {"base": {"epochs": 30, "steps_per_epoch": 200, "batch_size": 16, "patch_px": 64},
             "train": {"epochs": 30, "steps_per_epoch": 100, "batch_size": 16, "patch_px": 64},
             "n_train": 128, "n_val": 8},
}
#: Fractions of the scratch model's final validation PSNR (dB) whose crossing is counted.
THRESHOLD_FRACTIONS = (0.95, 0.99, 1.0)
#: Data seeds of the target trainings (never a benchmark seed; checked below).
TARGET_TRAIN_SEED = 21
TARGET_VAL_SEED = 22


def val_psnr_db(model, val) -> float:
    """Mean validation PSNR (dB) of ``model`` on a PairBatch, as :func:`stemreg.models.train` scores an epoch."""
    import numpy as np

    from stemreg.models import denoise_array, psnr_batch

    model.eval()
    return float(np.mean(psnr_batch(denoise_array(model, val.degraded, overlap_px=16), val.clean)))


def curve(model, config, *, train_pairs, val_pairs) -> tuple[list[dict[str, float]], Any]:
    """Train and return ``[{"step", "epoch", "val_psnr", "train_loss"}]`` from step 0, and the TrainResult."""
    from stemreg.models import train

    points = [{"step": 0, "epoch": 0, "val_psnr": val_psnr_db(model, val_pairs), "train_loss": math.nan}]

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        points.append({"step": epoch * config.steps_per_epoch, "epoch": epoch,
                       "val_psnr": float(metrics["val_psnr"]), "train_loss": float(metrics["train_loss"])})

    result = train(model, config, train_data=(train_pairs.degraded, train_pairs.clean),
                   val_data=(val_pairs.degraded, val_pairs.clean), on_epoch=on_epoch, progress=False)
    return points, result


def first_step_at(points: list[dict[str, float]], threshold_db: float) -> int | None:
    """First step whose validation PSNR reaches ``threshold_db``; None if it never does."""
    for p in points:
        if p["val_psnr"] >= threshold_db:
            return int(p["step"])
    return None


def stays_from_step(points: list[dict[str, float]], threshold_db: float) -> int | None:
    """First step from which the validation PSNR stays at or above ``threshold_db`` to the end; None if never."""
    since = None
    for p in points:
        if p["val_psnr"] >= threshold_db:
            since = int(p["step"]) if since is None else since
        else:
            since = None
    return since


def _ratio(base_steps: int | None, scratch_steps: int | None) -> float | None:
    if base_steps is None or scratch_steps is None:
        return None
    if base_steps == 0:
        return 1.0 if scratch_steps == 0 else math.inf  # inf: from base is there before its first step
    return scratch_steps / base_steps


def plot_curves(curves: dict[str, list[dict[str, float]]], *, thresholds: dict[float, float], noisy_db: float,
                title: str, path: Path) -> Path:
    """Both validation-PSNR curves against optimiser steps, with the thresholds and the noisy input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"from base": ("tab:red", "o"), "from scratch": ("tab:blue", "s")}
    styles.update({name: ("tab:orange", "^") for name in curves if name not in styles})
    for name, points in curves.items():
        colour, marker = styles[name]
        ax.plot([p["step"] for p in points], [p["val_psnr"] for p in points], marker=marker, color=colour,
                label=name)
    # Thresholds sit a fraction of a dB apart: named in the legend, not annotated on top of each other.
    for (fraction, db), dash in zip(thresholds.items(), ("--", "-.", ":")):
        ax.axhline(db, color="gray", lw=0.9, ls=dash, label=f"{fraction:.0%} of scratch final ({db:.2f} dB)")
    ax.axhline(noisy_db, color="black", lw=0.8, ls=":", label=f"noisy input ({noisy_db:.2f} dB)")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick",
                        help="quick: minutes on 2 CPU cores; full: sized for a GPU; tiny: a smoke run")
    parser.add_argument("--base", default="low-dose", help="condition of the base model")
    parser.add_argument("--target", default="blur", help="condition trained from the base and from scratch")
    parser.add_argument("--arch", default=None, help="architecture JSON (default: the seed's 8-layer hourglass)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, patches and base data")
    parser.add_argument("--extra-lr-factor", type=float, default=0.25,
                        help="also train from the base with the learning rate times this factor (a gentler "
                             "fine-tune; 0: skip that third curve)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="auto", help="training device: auto, cpu, cuda")
    parser.add_argument("--output-dir", default=".", help="where bench_finetune.json and .png go")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    parser.add_argument("--replot", metavar="JSON", default=None,
                        help="only redraw bench_finetune.png in --output-dir from a saved bench_finetune.json")
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        thresholds = {float(k): v["threshold_db"] for k, v in saved["thresholds"].items()}
        budget = saved["budget_detail"]["train"]
        title = (f"{saved['target']}: started from the {saved['base']} champion vs from scratch\n"
                 f"(same arch, data, {budget['epochs']} x {budget['steps_per_epoch']} steps of "
                 f"{budget['batch_size']} x {budget['patch_px']}^2 px, seed {saved['seed']})")
        print(plot_curves(saved["curves"], thresholds=thresholds, noisy_db=saved["noisy_val_psnr"], title=title,
                          path=Path(args.output_dir) / "bench_finetune.png"))
        return 0
    if args.base == args.target:
        parser.error(f"--base and --target must differ (both {args.base!r})")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    from stemreg.acquisition import load_condition
    from stemreg.models import TrainConfig, build_model, denoise_array, flops_per_pixel, pick_device
    from stemreg.platform.registry.benchmark import score_model
    from stemreg.platform.errors import BadInputError
    from stemreg.platform.registry import model_name
    from stemreg.platform.training import DEFAULT_ARCHITECTURE, canonical_architecture, load_parent

    device = str(pick_device(args.device))
    from stemreg.acquisition import UnknownConditionError

    try:
        base_cond, target_cond = load_condition(args.base), load_condition(args.target)
    except UnknownConditionError as exc:
        parser.error(f"--base/--target: {exc}")
    try:
        arch = canonical_architecture(json.loads(args.arch) if args.arch else DEFAULT_ARCHITECTURE)
    except (json.JSONDecodeError, ValueError, BadInputError) as exc:
        parser.error(f"--arch: {exc}")
    if target_cond.benchmark_seed in (TARGET_TRAIN_SEED, TARGET_VAL_SEED):
        raise SystemExit(f"{target_cond.name!r} has benchmark seed {target_cond.benchmark_seed}, which this "
                         "script trains on; change TARGET_*_SEED")
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        # A throwaway store: the benchmark must not write into a user's mlflow.db.
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        cwd = os.getcwd()
        os.chdir(tmp)  # MLflow's default artifact root (./mlartifacts, ./mlruns) lands in the temp dir
        try:
            import mlflow

            from stemreg.platform.training import train_and_register

            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            torch.manual_seed(args.seed)
            base_started = time.perf_counter()
            base = train_and_register(base_cond, arch=arch, config={**budget["base"], "seed": args.seed,
                                                                    "device": device},
                                      n_train=budget["n_train"], n_val=budget["n_val"], seed=args.seed,
                                      alias_policy="champion", score=False, progress=False)
            base_s = time.perf_counter() - base_started
            parent_uri = f"models:/{model_name(base_cond)}@champion"
            from_base, _ = load_parent(parent_uri, arch)
        finally:
            os.chdir(cwd)

    torch.manual_seed(args.seed)
    scratch = build_model(arch)
    train_pairs = target_cond.sample_pairs(budget["n_train"], seed=TARGET_TRAIN_SEED)
    val_pairs = target_cond.sample_pairs(budget["n_val"], seed=TARGET_VAL_SEED)
    config = TrainConfig(**budget["train"], seed=args.seed, device=device)
    runs = [("from base", from_base, config), ("from scratch", scratch, config)]
    if args.extra_lr_factor > 0:
        import copy

        gentle = config.model_copy(update={"lr": config.lr * args.extra_lr_factor})
        runs.insert(1, (f"from base, lr x{args.extra_lr_factor:g}", copy.deepcopy(from_base), gentle))
        # the deep copy is taken before "from base" trains: both start from the same registered weights
    curves, results = {}, {}
    for name, model, run_config in runs:
        curves[name], results[name] = curve(model, run_config, train_pairs=train_pairs, val_pairs=val_pairs)

    noisy_db = float(results["from scratch"].noisy_val_psnr)
    scratch_final = curves["from scratch"][-1]["val_psnr"]
    thresholds = {f: f * scratch_final for f in THRESHOLD_FRACTIONS}
    reach = {}
    for fraction, db in thresholds.items():
        first = {name: first_step_at(points, db) for name, points in curves.items()}
        stays = {name: stays_from_step(points, db) for name, points in curves.items()}
        reach[fraction] = {"threshold_db": db, "first_step": first, "stays_from_step": stays,
                           "scratch_over_base_first": _ratio(first["from base"], first["from scratch"]),
                           "scratch_over_base_stays": {name: _ratio(stays[name], stays["from scratch"])
                                                       for name in curves if name != "from scratch"}}
    bench = {}
    for name, result in results.items():
        model = result.model.to("cpu").eval()
        bench[name] = score_model(lambda image, m=model: denoise_array(m, image, device="cpu"), target_cond)

    report = {
        "base": base_cond.name, "target": target_cond.name, "budget": args.budget,
        "budget_detail": budget, "seed": args.seed, "device": device, "torch_threads": torch.get_num_threads(),
        "architecture": arch, "flops_per_pixel": flops_per_pixel(scratch),
        "base_model": {"uri": base.model_uri, "version": base.version, "val_psnr": base.metrics.get("val_psnr"),
                       "seconds": base_s, "loaded_from": parent_uri},
        "noisy_val_psnr": noisy_db, "curves": curves,
        "train_seconds": {name: r.seconds for name, r in results.items()},
        "thresholds": {str(k): v for k, v in reach.items()}, "benchmark": bench,
        "extra_lr_factor": args.extra_lr_factor,
        "seconds": time.perf_counter() - started,
    }
    (out_dir / "bench_finetune.json").write_text(json.dumps(report, indent=2, default=str))
    title = (f"{target_cond.name}: started from the {base_cond.name} champion vs from scratch\n"
             f"(same arch, data, {config.epochs} x {config.steps_per_epoch} steps of {config.batch_size} x "
             f"{config.patch_px}^2 px, lr {config.lr:g} {config.lr_schedule}, seed {args.seed})")
    png = plot_curves(curves, thresholds=thresholds, noisy_db=noisy_db, title=title,
                      path=out_dir / "bench_finetune.png")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0

    print(f"base: {base_cond.name}, {budget['base']['epochs']} x {budget['base']['steps_per_epoch']} steps of "
          f"{budget['base']['batch_size']} x {budget['base']['patch_px']}^2 px on {budget['n_train']} images, "
          f"val PSNR {report['base_model']['val_psnr']:.2f} dB, registered as {base.model_uri}, "
          f"loaded back from {parent_uri}; {base_s:.0f} s")
    print(f"target: {target_cond.name}; architecture {json.dumps(arch)} "
          f"({report['flops_per_pixel'] / 1e3:.1f} kFLOP/px); both runs: {budget['n_train']} training and "
          f"{budget['n_val']} validation images, {config.epochs} epochs x {config.steps_per_epoch} steps of "
          f"{config.batch_size} x {config.patch_px}^2 px, lr {config.lr:g} ({config.lr_schedule}), seed {args.seed}, "
          f"device {device}, {report['torch_threads']} torch threads")
    print(f"validation PSNR (dB) per epoch; noisy input {noisy_db:.2f} dB")
    names = list(curves)
    if len(names) > 2:
        print(f"('{names[1]}': the same start, learning rate {config.lr * args.extra_lr_factor:g}; "
              "a different budget knob, shown beside the equal-budget pair)")
    print(f"{'epoch':>5} {'step':>5} " + " ".join(f"{n:>{max(12, len(n))}}" for n in names))
    for i, pb in enumerate(curves[names[0]]):
        print(f"{pb['epoch']:>5} {pb['step']:>5} "
              + " ".join(f"{curves[n][i]['val_psnr']:>{max(12, len(n))}.2f}" for n in names))

    def fmt(steps: int | None) -> str:
        return "never" if steps is None else str(steps)

    def ratio_text(ratio: float | None) -> str:
        return "-" if ratio is None else ("inf" if math.isinf(ratio) else f"{ratio:.1f}x")

    print("steps to reach a share of the scratch model's final validation PSNR "
          f"({scratch_final:.2f} dB): first reached / stays at or above from then on")
    for fraction, r in reach.items():
        parts = [f"{n} {fmt(r['first_step'][n])} / {fmt(r['stays_from_step'][n])}" for n in names]
        ratios = ", ".join(f"{n}: {ratio_text(v)}" for n, v in r["scratch_over_base_stays"].items())
        print(f"  {fraction:>5.0%} ({r['threshold_db']:.2f} dB): " + "; ".join(parts))
        print(f"        scratch / base steps: first {ratio_text(r['scratch_over_base_first'])}"
              f" (inf: from base is there before its first step); stays {ratios}")
    print(f"frozen benchmark ({bench['from scratch']['id']}, {bench['from scratch']['n_images']} images), best "
          "epoch of each:")
    for name, b in bench.items():
        print(f"  {name:<20} PSNR {b['psnr']:.2f} ± {b['psnr_std']:.2f} dB, SSIM {b['ssim']:.3f} ± "
              f"{b['ssim_std']:.3f} (noisy {b['noisy_psnr']:.2f} dB)")
    print(f"wrote {png} and {out_dir / 'bench_finetune.json'}; {report['seconds']:.0f} s in all "
          "(machine shared with other jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
