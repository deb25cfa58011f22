"""What each choice of the training recipe buys: one variant at a time, same steps, same seed, same data stream.

Variants (each changes one thing from the recipe of the shipped base):

- ``recipe``: AdamW, 5 % warm-up, cosine decay, gradient clipping at 1, patches of 128 px, fresh draws
- ``adam-constant``: plain Adam at a constant learning rate, no warm-up, no clipping
- ``patch-64``: patches of 64 px (4x more patches per step, same pixels)
- ``fixed-pairs``: the same number of fields, but their noise drawn once and re-used every step
- ``plain-net``: the seed's plain 8-layer hourglass instead of the multi-scale member

Prints the mean PSNR over the low-dose benchmark's bins, the seed bin and the coarsest-sampling bin
for each. Short budgets rank the choices; they do not reach the shipped base's figures.

Usage::

    python benchmarks/bench_recipe.py [--steps 300] [--variants recipe,adam-constant,...] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stemreg.acquisition import get_condition
from stemreg.acquisition.stream import FieldPool
from stemreg.models.architectures import build_model
from stemreg.models.config import ArchitectureName, architecture
from stemreg.models.training import TrainConfig, train
from stemreg.platform.pretrain import benchmark_by_bin

VARIANTS = ("recipe", "adam-constant", "patch-64", "fixed-pairs", "plain-net")


def run(variant: str, steps: int, fields: int) -> dict:
    cond = get_condition("low-dose")
    arch = architecture(ArchitectureName.DEFAULT if variant == "plain-net" else ArchitectureName.MULTISCALE)
    options = dict(epochs=5, steps_per_epoch=max(1, steps // 5), batch_size=16, patch_px=128, lr=2e-3, seed=0)
    if variant == "adam-constant":
        options.update(optimizer="adam", lr_schedule="constant", warmup_fraction=0.0, grad_clip=0.0, lr=1e-3)
    if variant == "patch-64":
        options.update(batch_size=64, patch_px=64)
    torch.manual_seed(0)
    pool = FieldPool(cond, n_fields=fields, size_px=256, seed=21, refresh_per_batch=0 if variant == "fixed-pairs" else 1)
    if variant == "fixed-pairs":
        # one acquisition of each field, whole, drawn once: every step re-uses these noise draws
        pairs = [pool.batch(1, 256) for _ in range(fields)]
        data = (np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))
    else:
        data = pool
    val = cond.sample_pairs(8, size_px=256, seed=22)
    started = time.perf_counter()
    result = train(build_model(arch), TrainConfig(**options), train_data=data, val_data=(val.degraded, val.clean),
                   progress=False)
    figures = benchmark_by_bin(result.model, cond)
    return {"seconds": time.perf_counter() - started, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fields", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'variant':<15}{'mean of bins':>13}{'seed bin':>10}{'64px@0.25x':>12}{'8px@4x':>9}{'seconds':>9}  (PSNR dB, "
          f"{args.steps} steps)")
    for variant in args.variants.split(","):
        r = run(variant.strip(), args.steps, args.fields)
        b = r["model_psnr_by_bin"]
        print(f"{variant:<15}{r['model_psnr_mean']:>13.2f}{b['seed:8pm@1x']:>10.2f}{b['64px@0.25x']:>12.2f}"
              f"{b['8px@4x']:>9.2f}{r['seconds']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
