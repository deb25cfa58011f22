"""Width of the atomic columns, in pixels, in our clean benchmark images and in bench_foreign's.

On the independent simulator (benchmarks/bench_foreign.py) the base trails BM3D at the finest
samplings. One thing that differs there is how sharp a column is at a given spacing: this prints the
median column sigma (the second moment of the intensity in a window around each bright peak, the
window's minimum subtracted) per column spacing, for the low-dose condition's clean benchmark images
at dose 1x and for the foreign simulator's images (whose true sigma is max(0.7, spacing / 9)).

    python benchmarks/bench_column_width.py [--condition low-dose] [--n 2]
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter


def column_sigma_px(image: np.ndarray, spacing_px: float) -> float:
    """Median over the bright peaks of sqrt(<r^2> / 2) in a window of +-spacing/4 around each."""
    half = max(2, int(spacing_px / 4))
    size = int(spacing_px * 0.6) | 1
    peaks = (image == maximum_filter(image, size=size)) & (image > np.percentile(image, 90))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    sigmas = []
    for y, x in zip(*np.nonzero(peaks)):
        if half <= y < image.shape[0] - half and half <= x < image.shape[1] - half:
            window = image[y - half:y + half + 1, x - half:x + half + 1]
            window = window - window.min()
            if window.sum() > 0:
                sigmas.append(np.sqrt((window * (yy ** 2 + xx ** 2)).sum() / window.sum() / 2))
    return float(np.median(sigmas)) if sigmas else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--n", type=int, default=2, help="foreign images per spacing")
    args = parser.parse_args()

    from stemreg.acquisition import get_condition

    cond = get_condition(args.condition)
    bench = cond.benchmark_set()
    bins = np.array(bench.bins)
    print(f"{cond.benchmark_id()}: median column sigma (px) per clean image, dose 1x")
    for spacing in cond.benchmark_spacings_px:
        label = f"{spacing:g}px@1x"
        found = [column_sigma_px(bench.clean[i], spacing) for i in np.nonzero(bins == label)[0]]
        print(f"  {spacing:5.0f} px spacing: {np.round(found, 2).tolist()}")

    spec = importlib.util.spec_from_file_location("bench_foreign", Path(__file__).with_name("bench_foreign.py"))
    foreign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(foreign)
    rng = np.random.default_rng(0)
    print("bench_foreign.py's simulator (true sigma in brackets)")
    for spacing in sorted(foreign.SPACINGS_PX):
        found = [column_sigma_px(foreign.lattice_image(spacing, 256, rng), spacing) for _ in range(args.n)]
        print(f"  {spacing:5.0f} px spacing: {np.round(found, 2).tolist()} ({max(0.7, spacing / 9):.2f})")


if __name__ == "__main__":
    main()
