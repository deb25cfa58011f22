"""How fast the acquisition layer draws training pairs, per condition, and how noisy its images are.

    python benchmarks/bench_simulation.py [--n 256] [--size 128] [--threads 1]

Prints, per built-in condition: seconds for sample_pairs(n) (one core by default, as in training
data loading); the noisy PSNR/SSIM of its frozen benchmark set; and the same figures on the n
freshly drawn pairs (another seed, so a check that the calibration is not the benchmark seed's
luck). PSNR/SSIM use data_range = clean max - min per image; shown as mean +- std over images.
The seed's calibration point (low-dose): PSNR 18.244 dB, SSIM 0.157.
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

    def scores(batch) -> str:
        psnr = np.array([peak_signal_noise_ratio(c, d, data_range=float(c.max() - c.min()))
                         for d, c in zip(batch.degraded, batch.clean)])
        ssim = np.array([structural_similarity(c, d, data_range=float(c.max() - c.min()))
                         for d, c in zip(batch.degraded, batch.clean)])
        return (f"{psnr.mean():6.2f} +- {psnr.std(ddof=1):4.2f} dB  {ssim.mean():.3f} +- {ssim.std(ddof=1):.3f}"
                f"  (n={len(psnr)})")

    print(f"{'condition':<11} {'sample_pairs':>12} {'per image':>9}   benchmark set PSNR / SSIM"
          f"                 fresh pairs PSNR / SSIM")
    for cond in list_conditions():
        cond.sample_pairs(4, size_px=args.size, seed=1)  # warm caches (probe transfer functions)
        start = time.perf_counter()
        fresh = cond.sample_pairs(args.n, size_px=args.size, seed=2)
        seconds = time.perf_counter() - start
        print(f"{cond.name:<11} {seconds:>10.2f} s {1e3 * seconds / args.n:>6.1f} ms   "
              f"{scores(cond.benchmark_set())}   {scores(fresh)}")
    print(f"(size={args.size} px, {args.threads} thread(s); seed's figure: 18.244 dB, 0.157)")


if __name__ == "__main__":
    main()
