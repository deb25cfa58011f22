"""A shared base then fine-tuning, against training from scratch, at the same total steps.

For each restoration condition (blur, defocus, hysteresis by default), the shipped base's
architecture (the multi-scale reverse hourglass) is trained two ways with the same recipe, patches
and total number of optimiser steps:

- base then fine-tune: ``--base-steps`` on low-dose (the base's stream: the range of samplings and
  doses, fresh noise every patch), then ``--tune-steps`` on the condition at a tenth of the
  learning rate (the pipeline's fine-tuning factor; ``--tune-lr-factors`` tries other shares, one arm
  each, on the same base);
- from scratch: ``--base-steps + --tune-steps`` on the condition.

The base is trained once and shared by every condition (as the pipeline shares it). Both models
are scored on ``--n-val`` validation images of the condition (another seed than its benchmark):
PSNR and atom-column F1 / position error, as the leaderboard scores. Prints one JSON object.

    python benchmarks/bench_base_vs_scratch.py [--base-steps 200] [--tune-steps 200] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditions", default="blur,defocus,hysteresis")
    parser.add_argument("--base-steps", type=int, default=200)
    parser.add_argument("--tune-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-px", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-val", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tune-lr-factors", default=None, metavar="F1,F2,...",
                        help="fine-tune at these shares of --lr, one arm each (default: the pipeline's factor)")
    parser.add_argument("--no-scratch", action="store_true",
                        help="skip the from-scratch arm (its figures do not depend on the fine-tune's rate)")
    options = parser.parse_args()

    import torch

    from stemreg.acquisition import load_condition
    from stemreg.acquisition.stream import FieldPool
    from stemreg.models.architectures import build_model
    from stemreg.models.config import FINE_TUNE_LR_FACTOR, ArchitectureName, architecture
    from stemreg.models.inference import denoise_array
    from stemreg.models.scoring import score_predictions
    from stemreg.models.training import TrainConfig, train

    torch.set_num_threads(options.threads)
    arch = architecture(ArchitectureName.MULTISCALE)

    def config(steps: int, lr: float) -> TrainConfig:
        per_epoch = min(options.steps_per_epoch, steps)
        return TrainConfig(epochs=max(1, steps // per_epoch), steps_per_epoch=per_epoch,
                           batch_size=options.batch_size, patch_px=options.patch_px, lr=lr, seed=options.seed,
                           device="cpu")

    def fit(model, condition, steps: int, lr: float, seed: int):
        stream = FieldPool(condition, n_fields=32, size_px=max(128, options.patch_px), seed=seed)
        return train(model, config(steps, lr), train_data=stream, val_data=None, progress=False).model

    factors = ([float(f) for f in options.tune_lr_factors.split(",")] if options.tune_lr_factors
               else [FINE_TUNE_LR_FACTOR])
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    base = fit(build_model(dict(arch)), load_condition("low-dose"), options.base_steps, options.lr, options.seed)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    report = {"architecture": arch, "base_steps": options.base_steps, "tune_steps": options.tune_steps,
              "batch_size": options.batch_size, "patch_px": options.patch_px, "lr": options.lr,
              "fine_tune_lrs": [options.lr * f for f in factors], "threads": options.threads,
              "load_average_start": [round(x, 1) for x in os.getloadavg()], "conditions": {}}
    for name in options.conditions.split(","):
        condition = load_condition(name)
        val = condition.sample_pairs(options.n_val, size_px=128, seed=options.seed + 1000)
        arms: list[tuple[str, torch.nn.Module | None]] = []
        for factor in factors:
            tuned = build_model(dict(arch))
            tuned.load_state_dict(base_state)
            label = "base_then_fine_tune" if factor == FINE_TUNE_LR_FACTOR else f"base_then_fine_tune_at_{factor:g}x"
            arms.append((label, fit(tuned, condition, options.tune_steps, options.lr * factor, options.seed + 1)))
        if not options.no_scratch:
            torch.manual_seed(options.seed)
            arms.append(("from_scratch", fit(build_model(dict(arch)), condition,
                                             options.base_steps + options.tune_steps, options.lr, options.seed + 1)))
        figures = {}
        for label, model in (*arms, ("noisy", None)):
            predict = (lambda image: image) if model is None else (
                lambda image, m=model: denoise_array(m.eval(), image))
            scores = score_predictions(predict, list(val.degraded), list(val.clean), columns=list(val.columns),
                                       pixel_size_pm=list(val.pixel_sizes_pm))
            figures[label] = {"psnr": round(float(np.mean(scores.psnr)), 3),
                              "column_f1": round(float(np.nanmean(scores.column_f1)), 4),
                              "column_error_pm": round(float(np.nanmean(scores.column_error_pm)), 2)}
        report["conditions"][name] = figures
        print(json.dumps({name: figures}), flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
