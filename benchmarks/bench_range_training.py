"""A reverse hourglass (default: the seed's plain net) trained the old way and the new way, same steps, scored per bin of the range benchmark.

Old way: a fixed set of noisy pairs at the seed's point (8 pm/px, 1x dose, one probe), the same noisy
draws every step. New way: a FieldPool over the condition's whole range (samplings 4-64 pm/px, doses
0.25-4x, probes and specimens drawn per field), fresh noise, dose and scan every patch. Same
architecture, recipe, seed and number of steps; both scored on the stratified low-dose benchmark
beside the noisy input (and the shipped base, when the package holds one).

Usage::

    python benchmarks/bench_range_training.py [--steps 1500] [--batch 8] [--patch-px 64] [--threads 2]
        [--architecture default|multiscale|...] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from stemreg.acquisition import get_condition
from stemreg.acquisition.stream import FieldPool
from stemreg.models import pretrained
from stemreg.models.architectures import build_model
from stemreg.models.config import ArchitectureName, architecture
from stemreg.models.training import TrainConfig, train
from stemreg.platform.pretrain import benchmark_by_bin

TRAIN_SEED, VAL_SEED = 11, 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch-px", type=int, default=64)
    parser.add_argument("--n-old", type=int, default=24, help="fixed noisy pairs of the old way")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--architecture", choices=[a.value for a in ArchitectureName], default="default",
                        help="the preset trained both ways: the seed's plain net (default) or e.g. multiscale, "
                             "the shipped base's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cond = get_condition("low-dose")
    seed_point = cond.seed_point()
    epochs = 10
    config = TrainConfig(epochs=epochs, steps_per_epoch=max(1, args.steps // epochs), batch_size=args.batch,
                         patch_px=args.patch_px, lr=2e-3, seed=0)
    arch = architecture(ArchitectureName(args.architecture))
    results = {}
    old = seed_point.sample_pairs(args.n_old, size_px=128, seed=TRAIN_SEED)
    val_old = seed_point.sample_pairs(8, size_px=128, seed=VAL_SEED)
    val_new = cond.sample_pairs(8, size_px=256, seed=VAL_SEED)
    ways = {"old (fixed pairs at the seed point)": ((old.degraded, old.clean), val_old),
            "new (fresh draws over the range)": (FieldPool(cond, n_fields=128, size_px=256, seed=TRAIN_SEED),
                                                 val_new)}
    for name, (data, val) in ways.items():
        torch.manual_seed(0)
        started = time.perf_counter()
        result = train(build_model(arch), config, train_data=data, val_data=(val.degraded, val.clean),
                       progress=False)
        figures = benchmark_by_bin(result.model, cond)
        results[name] = {"seconds": round(time.perf_counter() - started, 1), **figures}
    if pretrained.available():
        model, card = pretrained.load_pretrained()
        results[f"shipped base ({card['training']['steps']} steps, multi-scale)"] = benchmark_by_bin(model, cond)
    if args.json:
        print(json.dumps({"steps": config.epochs * config.steps_per_epoch, "results": results}, indent=1))
        return
    first = next(iter(results.values()))
    bins = list(first["model_psnr_by_bin"])
    noisy = first["noisy_psnr_by_bin"]
    print(f"low-dose range benchmark {first['benchmark_id']}: PSNR gain over noisy (dB), "
          f"{config.epochs * config.steps_per_epoch} steps of {args.batch} x {args.patch_px}^2 px")
    header = f"{'bin':<14}{'noisy dB':>9}" + "".join(f"{n[:24]:>26}" for n in results)
    print(header)
    for b in bins:
        print(f"{b:<14}{noisy[b]:>9.2f}" + "".join(f"{r['model_psnr_by_bin'][b] - noisy[b]:>+26.2f}"
                                               for r in results.values()))
    print(f"{'mean of bins':<14}{first['noisy_psnr_mean']:>9.2f}"
          + "".join(f"{r['model_psnr_mean'] - r['noisy_psnr_mean']:>+26.2f}" for r in results.values()))


if __name__ == "__main__":
    main()
