"""Architecture search against the seed's default: does the searched hourglass beat the fixed 8-layer one?

For one condition (default ``low-dose``) this script

1. runs an Optuna search with :func:`stemreg.tuning.run_study` (the code behind
   ``stemreg tune``), in a temporary MLflow store and a temporary SQLite study
   database (nothing is left in the working directory);
2. retrains (a) the best architecture found and (b) the seed's fixed 8-layer
   default reverse hourglass (widths 8-16-32-64-32-16-8, 3x3, as
   ``stemreg.models.ReverseHourglass()`` builds it) on the SAME data, with the
   SAME training budget (epochs x steps x batch x patch) and the same seed;
   each keeps its own learning rate: the searched one for (a), the seed's
   2e-3 for (b) (the learning rate is part of what the search chooses);
3. scores both on the condition's frozen benchmark set
   (:func:`stemreg.platform.registry.benchmark.score_model`) and times both, side by
   side in one run (alternating calls), in ms per megapixel through
   :func:`stemreg.models.denoise_array` (normalisation and tiling included).

Prints a table (architecture, parameters, FLOP/pixel, benchmark PSNR/SSIM mean
± std over the benchmark images, noisy PSNR, ms/Mpx), writes ``bench_search.json``
and ``bench_search.png`` (every trial's validation PSNR against its FLOP/pixel,
the default and the best marked) to ``--output-dir``.

Usage::

    python benchmarks/bench_search.py [--budget quick|full|tiny] [--condition low-dose] [--trials N]
        [--seed 0] [--threads 2] [--no-enqueue-default] [--output-dir DIR] [--json]

``--budget quick`` takes minutes on 2 CPU cores; ``full`` is sized for a GPU.
By default the seed's default point of the search space is the search's first
trial (as in the main job), so the search can only pick something else when it
validated better at the search's per-trial budget.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Per budget: the search (trials and per-trial budget, ``SearchBudget`` fields) and the retraining
#: that both the best and the default get. The quick search's per-trial budget is the main job's
#: (stemreg.platform.pipeline.QUICK_TUNE_BUDGET); its retrain is the main job's QUICK_TRAIN.
BUDGETS: dict[str, dict[str, Any]] = {
    # A smoke run of the script itself (seconds); its figures mean nothing.
    "tiny": {
        "trials": 2,
        "search": {"epochs": 1, "steps_per_epoch": 2, "n_train": 2, "n_val": 2, "image_px": 48,
                   "patch_px": 32, "batch_size": 4, "max_flops_per_px": 250_000},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "patch_px": 32},
        "n_train": 2, "n_val": 2, "latency_px": 64, "latency_rounds": 1,
    },
    "quick": {
        "trials": 8,
        "search": {"epochs": 3, "steps_per_epoch": 20, "n_train": 12, "n_val": 4, "image_px": 96,
                   "patch_px": 48, "batch_size": 8, "max_flops_per_px": 250_000},
        "train": {"epochs": 6, "steps_per_epoch": 40, "batch_size": 8, "patch_px": 64},
        "n_train": 24, "n_val": 4, "latency_px": 512, "latency_rounds": 5,
    },
    "full": {
        "trials": 40,
        "search": {"epochs": 8, "steps_per_epoch": 100, "n_train": 64, "n_val": 8, "image_px": 128,
                   "patch_px": 64, "batch_size": 16, "max_flops_per_px": 2_000_000},
        "train": {"epochs": 30, "steps_per_epoch": 200, "batch_size": 16, "patch_px": 64},
        "n_train": 128, "n_val": 8, "latency_px": 1024, "latency_rounds": 7,
    },
}
#: Data seeds of the retraining (never a condition's benchmark seed; checked below).
RETRAIN_TRAIN_SEED = 11
RETRAIN_VAL_SEED = 12
#: Learning rate of the seed's default (TrainConfig's default).
DEFAULT_LR = 2e-3


def seed_default_architecture() -> dict[str, Any]:
    """The seed's fixed 8-layer reverse hourglass, canonical (what ``ReverseHourglass()`` builds)."""
    from stemreg.models import ReverseHourglass, architecture_of

    return architecture_of(ReverseHourglass())


def retrain(arch: dict[str, Any], *, lr: float, train_cfg: dict[str, Any], data, seed: int, device: str):
    """Build ``arch`` from ``seed`` and train it on ``data`` (``(train, val)`` PairBatches)."""
    import torch

    from stemreg.models import TrainConfig, build_model, train

    torch.manual_seed(seed)  # the initial weights are the caller's
    model = build_model(arch)
    config = TrainConfig(**train_cfg, lr=lr, seed=seed, device=device)
    train_pairs, val_pairs = data
    return train(model, config, train_data=(train_pairs.degraded, train_pairs.clean),
                 val_data=(val_pairs.degraded, val_pairs.clean), progress=False)


def side_by_side_latency(models: dict[str, Any], *, image_px: int, rounds: int) -> dict[str, float]:
    """Median ms per megapixel of each model, measured in alternating rounds (a shared machine drifts)."""
    from stemreg.tuning.latency import ms_per_mpx

    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():  # an untimed round: thread pools, allocator, caches
        ms_per_mpx(model, image_px=image_px, repeats=1)
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(ms_per_mpx(model, image_px=image_px, repeats=1))
    return {name: statistics.median(v) for name, v in times.items()}


def trial_table(storage_url: str, study_name: str) -> list[dict[str, Any]]:
    """Every trial of the study: number, state, validation PSNR, FLOP/pixel, architecture."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage_url)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "val_psnr": t.values[0] if t.values else None,
                     "last_reported_psnr": (t.intermediate_values[max(t.intermediate_values)]
                                            if t.intermediate_values else None),
                     "flops_per_pixel": t.user_attrs.get("flops_per_pixel"),
                     "architecture": t.user_attrs.get("architecture"), "params": dict(t.params)})
    return rows


def plot_trials(rows: list[dict[str, Any]], *, best_trial: int, default_arch: dict[str, Any],
                title: str, path: Path) -> Path:
    """Validation PSNR of every trial against its FLOP/pixel; pruned trials at their last report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for state, marker, colour in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:gray")):
        pts = [(r["flops_per_pixel"] / 1e3, r["val_psnr"] if state == "complete" else r["last_reported_psnr"])
               for r in rows if r["state"] == state and r["flops_per_pixel"]]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=colour,
                       label=f"{state} trials" + (" (last reported epoch)" if state == "pruned" else ""))
    for r in rows:
        if r["flops_per_pixel"] and (r["val_psnr"] is not None or r["last_reported_psnr"] is not None):
            y = r["val_psnr"] if r["val_psnr"] is not None else r["last_reported_psnr"]
            ax.annotate(str(r["trial"]), (r["flops_per_pixel"] / 1e3, y), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
    best = next(r for r in rows if r["trial"] == best_trial)
    ax.scatter([best["flops_per_pixel"] / 1e3], [best["val_psnr"]], s=160, facecolors="none",
               edgecolors="tab:red", linewidths=2, label=f"best (trial {best_trial})")
    defaults = [r for r in rows if r["architecture"] == default_arch and r["val_psnr"] is not None]
    if defaults:
        ax.scatter([d["flops_per_pixel"] / 1e3 for d in defaults], [d["val_psnr"] for d in defaults], s=240,
                   marker="s", facecolors="none", edgecolors="tab:green", linewidths=2,
                   label="seed's 8-layer default")
    ax.set_xscale("log")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("forward kFLOP per pixel (log)")
    ax.set_ylabel("validation PSNR at the search budget (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def arch_text(arch: dict[str, Any]) -> str:
    """Short architecture label: ``d8 k3 8-16-32-64-32-16-8``."""
    return f"d{arch['depth']} k{arch['kernel_size']} " + "-".join(str(w) for w in arch["widths"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick",
                        help="quick: minutes on 2 CPU cores; full: sized for a GPU; tiny: a smoke run")
    parser.add_argument("--condition", default="low-dose", help="built-in condition name or YAML path")
    parser.add_argument("--trials", type=int, default=None, help="override the budget's number of trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's trials and of both retrains")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="auto", help="training device: auto, cpu, cuda")
    parser.add_argument("--no-enqueue-default", action="store_true",
                        help="do not make the seed's default the search's first trial")
    parser.add_argument("--output-dir", default=".", help="where bench_search.json and .png go")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error(f"--trials must be >= 1 (got {args.trials})")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    n_trials = args.trials or budget["trials"]
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    from stemreg.acquisition import load_condition
    from stemreg.models import denoise_array, flops_per_pixel, pick_device
    from stemreg.platform.registry.benchmark import score_model
    from stemreg.tuning import SearchBudget, run_study
    from stemreg.tuning.space import SEED_DEFAULT_PARAMS

    device = str(pick_device(args.device))
    from stemreg.acquisition import UnknownConditionError

    try:
        cond = load_condition(args.condition)
    except UnknownConditionError as exc:
        parser.error(f"--condition: {exc}")
    if cond.benchmark_seed in (RETRAIN_TRAIN_SEED, RETRAIN_VAL_SEED):
        raise SystemExit(f"condition {cond.name!r} uses benchmark seed {cond.benchmark_seed}, "
                         "which this script trains on; change RETRAIN_*_SEED")
    default_arch = seed_default_architecture()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        # Throwaway stores: the benchmark must not write into a user's mlflow.db / optuna.db.
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        storage_url = f"sqlite:///{tmp}/optuna.db"
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        cwd = os.getcwd()
        os.chdir(tmp)  # MLflow's artifact root (./mlruns) lands in the temp dir, not the caller's folder
        import mlflow
        import optuna

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment("bench-search")
        search_budget = SearchBudget(**budget["search"], seed=args.seed,
                                     **({"latency_image_px": budget["latency_px"]}))
        search_started = time.perf_counter()
        try:
            study = run_study(cond, n_trials=n_trials, storage=storage_url, study_name=f"bench-{cond.name}",
                              budget=search_budget, progress=False,
                              # a seeded sampler, so a rerun draws the same architectures
                              sampler=optuna.samplers.TPESampler(seed=args.seed),
                              enqueue=None if args.no_enqueue_default else [dict(SEED_DEFAULT_PARAMS)])
        finally:
            os.chdir(cwd)
        search_s = time.perf_counter() - search_started
        trials = trial_table(storage_url, study.study_name)

    data = (cond.sample_pairs(budget["n_train"], seed=RETRAIN_TRAIN_SEED),
            cond.sample_pairs(budget["n_val"], seed=RETRAIN_VAL_SEED))
    candidates = {"searched best": (study.best_architecture, study.best_lr),
                  "seed default": (default_arch, DEFAULT_LR)}
    rows: dict[str, dict[str, Any]] = {}
    models = {}
    for name, (arch, lr) in candidates.items():
        result = retrain(arch, lr=lr, train_cfg=budget["train"], data=data, seed=args.seed, device=device)
        model = result.model.to("cpu").eval()  # scored and timed on this machine's CPU
        models[name] = model
        scores = score_model(lambda image, m=model: denoise_array(m, image, device="cpu"), cond)
        rows[name] = {"architecture": arch, "lr": lr, "n_parameters": sum(p.numel() for p in model.parameters()),
                      "flops_per_pixel": flops_per_pixel(model), "val_psnr": result.best_val_psnr,
                      "best_epoch": result.best_epoch, "train_seconds": result.seconds,
                      "benchmark": scores}
    # Paired per-image differences on the benchmark: the images' own spread (± above) is mostly content,
    # which both models share, so the paired difference says whether a gap is more than noise.
    import numpy as np

    from stemreg.models import psnr_batch, ssim_batch

    bench_set = cond.benchmark_set()
    per_image = {}
    for name, model in models.items():
        pred = denoise_array(model, bench_set.degraded, device="cpu")
        per_image[name] = (psnr_batch(pred, bench_set.clean), ssim_batch(pred, bench_set.clean))
    d_psnr = per_image["searched best"][0] - per_image["seed default"][0]
    d_ssim = per_image["searched best"][1] - per_image["seed default"][1]
    paired = {"psnr_diff_db": float(np.mean(d_psnr)), "psnr_diff_std_db": float(np.std(d_psnr)),
              "psnr_diff_sem_db": float(np.std(d_psnr, ddof=1) / np.sqrt(len(d_psnr))) if len(d_psnr) > 1 else
              float("nan"), "psnr_wins": int(np.sum(d_psnr > 0)), "ssim_diff": float(np.mean(d_ssim)),
              "ssim_wins": int(np.sum(d_ssim > 0)), "n_images": int(len(d_psnr))}
    latency = side_by_side_latency(models, image_px=budget["latency_px"], rounds=budget["latency_rounds"])
    for name in rows:
        rows[name]["ms_per_mpx"] = latency[name]

    same = study.best_architecture == default_arch
    diff_db = rows["searched best"]["benchmark"]["psnr"] - rows["seed default"]["benchmark"]["psnr"]
    report = {
        "condition": cond.name, "benchmark_id": rows["seed default"]["benchmark"]["id"], "budget": args.budget,
        "budget_detail": {k: v for k, v in budget.items()}, "n_trials": n_trials, "seed": args.seed,
        "device": device, "torch_threads": torch.get_num_threads(),
        "enqueued_default": not args.no_enqueue_default, "search_seconds": search_s,
        "study": {"best_trial": study.best_trial_number, "best_value": study.best_value,
                  "best_params": study.best_params, "n_trials_done": study.n_trials_done},
        "trials": trials, "results": rows, "best_is_default": same, "psnr_gain_db": diff_db, "paired": paired,
        "seconds": time.perf_counter() - started,
    }
    title = (f"{cond.name}: {n_trials}-trial search ({args.budget} budget), "
             f"best trial {study.best_trial_number}")
    png = plot_trials(trials, best_trial=study.best_trial_number, default_arch=default_arch, title=title,
                      path=out_dir / "bench_search.png")
    (out_dir / "bench_search.json").write_text(json.dumps(report, indent=2, default=str))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0

    sb, tr = budget["search"], budget["train"]
    print(f"condition {cond.name} (benchmark {report['benchmark_id']}: "
          f"{rows['seed default']['benchmark']['n_images']} images of "
          f"{rows['seed default']['benchmark']['image_px']} px), budget {args.budget}, seed {args.seed}, "
          f"device {device}, {report['torch_threads']} torch threads")
    print(f"search: {n_trials} trials x ({sb['epochs']} epochs x {sb['steps_per_epoch']} steps of "
          f"{sb['batch_size']} x {sb['patch_px']}^2 px, {sb['n_train']} images of {sb['image_px']} px), "
          f"max {sb['max_flops_per_px'] / 1e3:.0f} kFLOP/px, seed default enqueued first: "
          f"{'yes' if report['enqueued_default'] else 'no'}; {search_s:.0f} s")
    for r in trials:
        value = (f"{r['val_psnr']:.2f} dB" if r["val_psnr"] is not None
                 else (f"({r['last_reported_psnr']:.2f} dB when pruned)" if r["last_reported_psnr"] is not None
                       else ""))
        arch = arch_text(r["architecture"]) if r["architecture"] else "-"
        lr = r["params"].get("lr")
        print(f"  trial {r['trial']:>2} {r['state']:<8} {arch:<34} lr {lr:.1e}  "
              f"{(r['flops_per_pixel'] or 0) / 1e3:7.0f} kFLOP/px  {value}")
    print(f"retrain: both on {budget['n_train']} images of {cond.image_size_px} px, {tr['epochs']} epochs x "
          f"{tr['steps_per_epoch']} steps of {tr['batch_size']} x {tr['patch_px']}^2 px, seed {args.seed}; "
          f"latency: median of {budget['latency_rounds']} alternating calls of denoise_array on a "
          f"{budget['latency_px']}^2 px image, CPU")
    header = (f"{'':<14} {'architecture':<34} {'lr':>7} {'params':>8} {'kFLOP/px':>9} "
              f"{'PSNR (dB)':>14} {'SSIM':>14} {'noisy PSNR':>10} {'ms/Mpx':>8}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        b = r["benchmark"]
        print(f"{name:<14} {arch_text(r['architecture']):<34} {r['lr']:>7.1e} {r['n_parameters']:>8,} "
              f"{r['flops_per_pixel'] / 1e3:>9.1f} {b['psnr']:>7.2f} ± {b['psnr_std']:<4.2f} "
              f"{b['ssim']:>6.3f} ± {b['ssim_std']:<5.3f} {b['noisy_psnr']:>10.2f} {r['ms_per_mpx']:>8.0f}")
    ratio = rows["searched best"]["ms_per_mpx"] / rows["seed default"]["ms_per_mpx"]
    if same:
        print("the search's best IS the seed's default architecture (the rows differ only by learning rate)"
              if rows["searched best"]["lr"] != DEFAULT_LR else
              "the search's best IS the seed's default (same architecture and learning rate)")
    verdict = "beats" if diff_db > 0 else "does NOT beat"
    print(f"searched best {verdict} the default on the benchmark by {diff_db:+.2f} dB PSNR "
          f"({rows['searched best']['benchmark']['ssim'] - rows['seed default']['benchmark']['ssim']:+.3f} SSIM), "
          f"at {ratio:.2f}x its latency")
    print(f"paired over the {paired['n_images']} benchmark images: PSNR difference {paired['psnr_diff_db']:+.3f} "
          f"± {paired['psnr_diff_sem_db']:.3f} dB (mean ± standard error; per-image std "
          f"{paired['psnr_diff_std_db']:.3f} dB), searched best higher on {paired['psnr_wins']}/{paired['n_images']}"
          f" images in PSNR, {paired['ssim_wins']}/{paired['n_images']} in SSIM")
    print(f"wrote {png} and {out_dir / 'bench_search.json'}; {report['seconds']:.0f} s in all "
          f"(machine shared with other jobs: latencies are side by side, compare their ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
