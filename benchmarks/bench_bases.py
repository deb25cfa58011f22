"""Pretrained bases side by side against BM3D on a condition's frozen, stratified benchmark set.

Every base and BM3D (generalised Anscombe transform, each image's oracle noise model, as the
`stemreg evaluate` row) denoise the same benchmark images; the script prints PSNR per bin
(sampling x dose), the mean over bins, and each base's gain over BM3D, with the fine-sampling
bins (columns 5 to 12 px apart, where BM3D is strongest) reported on their own.

Usage::

    python benchmarks/bench_bases.py [--bases models/pretrained:low-dose-base,DIR:NAME]
        [--condition low-dose] [--max-per-bin N] [--threads 1] [--skip-bm3d] [--json FILE]

The benchmark's images are drawn by the condition (never trained on: its seed is refused by the
training streams). ``--max-per-bin`` scores the first N images of each bin only (a quicker look).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_real import load_bases  # noqa: E402

from stemreg.acquisition import get_condition  # noqa: E402
from stemreg.models import pretrained  # noqa: E402
from stemreg.models.classical import denoise_classical, noise_model_from_params  # noqa: E402
from stemreg.models.inference import denoise_array  # noqa: E402
from stemreg.models.metrics import psnr  # noqa: E402

FINE_SPACING_PX = (5.0, 12.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", default=f"{pretrained.PRETRAINED_DIR}:{pretrained.BASE_NAME}")
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--max-per-bin", type=int, default=0, help="score only the first N images per bin")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-bm3d", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-bin figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.max_per_bin:
        os.environ["STEMREG_BENCHMARK_MAX_PER_BIN"] = str(args.max_per_bin)
    condition = get_condition(args.condition)
    bases = load_bases(args.bases)
    start = time.time()
    batch = condition.benchmark_set()
    methods = ["noisy", *bases, *([] if args.skip_bm3d else ["bm3d"])]
    by_bin: dict[str, dict[str, list[float]]] = {}
    for i in range(len(batch.degraded)):
        degraded, clean, params = batch.degraded[i], batch.clean[i], batch.params[i]
        row = by_bin.setdefault(batch.bins[i], {m: [] for m in methods})
        row["noisy"].append(psnr(degraded, clean))
        for label, model in bases.items():
            row[label].append(psnr(denoise_array(model, degraded), clean))
        if not args.skip_bm3d:
            out = denoise_classical(degraded, "bm3d", noise=noise_model_from_params(params), sigma=1.0)
            row["bm3d"].append(psnr(out, clean))
    spacing = {b.name: b.spacing_px for b in condition.benchmark_bins()}
    load = os.getloadavg()[0]
    print(f"{condition.name} benchmark {condition.benchmark_id()}, {len(batch.degraded)} images, "
          f"{time.time() - start:.0f} s, load average {load:.1f}")
    print("| bin | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    means = {b: {m: float(np.mean(v)) for m, v in row.items()} for b, row in by_bin.items()}
    for b, row in means.items():
        print(f"| {b} | " + " | ".join(f"{row[m]:.2f}" for m in methods) + " |")

    def summary(title: str, bins: list[str]) -> None:
        if not bins:
            return
        over = {m: float(np.mean([means[b][m] for b in bins])) for m in methods}
        ref = over.get("bm3d")
        gains = "" if ref is None else "; vs BM3D: " + ", ".join(
            f"{m} {over[m] - ref:+.2f} dB" for m in bases)
        print(f"{title} ({len(bins)} bins): " + ", ".join(f"{m} {over[m]:.2f}" for m in methods) + gains)

    summary("mean over bins", list(means))
    summary("fine sampling, columns 5-12 px apart",
            [b for b in means if spacing.get(b) and FINE_SPACING_PX[0] <= spacing[b] <= FINE_SPACING_PX[1]])
    if args.json:
        args.json.write_text(json.dumps({"benchmark_id": condition.benchmark_id(), "load_average": load,
                                         "by_bin": means}, indent=1))


if __name__ == "__main__":
    main()
