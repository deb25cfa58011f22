"""How fast the acquisition layer draws training pairs, per condition, and how noisy its benchmark sets are.

    python benchmarks/bench_simulation.py [--n 256] [--size 128] [--threads 1]

Prints seconds for sample_pairs(n) per built-in condition (one core by default,
as in training data loading) and the noisy PSNR/SSIM of each frozen benchmark set
(data_range = clean max - min, per image, averaged).
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/FFT threads (set before numpy loads)")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from stemreg.acquisition import list_conditions

    print(f"{'condition':<12} {'sample_pairs':>14} {'per image':>10} {'noisy PSNR':>11} {'noisy SSIM':>11}")
    for cond in list_conditions():
        cond.sample_pairs(4, size_px=args.size, seed=1)  # warm caches (probe transfer functions)
        start = time.perf_counter()
        cond.sample_pairs(args.n, size_px=args.size, seed=2)
        seconds = time.perf_counter() - start
        bench = cond.benchmark_set()
        psnr = np.mean([peak_signal_noise_ratio(c, d, data_range=float(c.max() - c.min()))
                        for d, c in zip(bench.degraded, bench.clean)])
        ssim = np.mean([structural_similarity(c, d, data_range=float(c.max() - c.min()))
                        for d, c in zip(bench.degraded, bench.clean)])
        print(f"{cond.name:<12} {seconds:>12.2f} s {1e3 * seconds / args.n:>7.1f} ms {psnr:>8.2f} dB {ssim:>11.3f}")
    print(f"(n={args.n}, size={args.size} px, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
