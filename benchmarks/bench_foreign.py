"""Denoisers on images from a simulator they were not trained on, at samplings nobody picked.

An independent, deliberately simple simulator (not stemreg.acquisition): Gaussian columns on a
two-sublattice square lattice (corner columns bright, centred columns at a third of their height),
a random rotation and origin, a flat background, Poisson counts at a dose that leaves the noisy
image near 18 dB, at several column spacings. The same images go to the shipped pretrained base
(or a registered model) and to BM3D with the Anscombe transform and the exact Poisson noise model
(the most favourable setting for BM3D). Prints the PSNR gain over the noisy input per spacing.

Usage::

    python benchmarks/bench_foreign.py [--n 6] [--size 256] [--threads 2] [--skip-bm3d]
        [--bases models/pretrained:low-dose-base,DIR:NAME] [--spacings 24,16,12,8]

Several ``--bases`` are scored side by side on the same images (one column each).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from stemreg.models import pretrained
from stemreg.models.classical import NoiseModel, denoise_classical
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr

sys.path.insert(0, str(Path(__file__).parent))
from bench_real import load_bases  # noqa: E402

SPACINGS_PX = (60, 49, 36, 24, 16, 12, 8)


def lattice_image(spacing_px: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Clean intensity: Gaussian columns (sigma ~ spacing / 9, at least 0.7 px) on two sublattices."""
    sigma = max(0.7, spacing_px / 9)
    angle = rng.uniform(0, np.pi / 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    n = int(size / spacing_px) + 4
    ij = np.stack(np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij"), -1).reshape(-1, 2)
    origin = rng.uniform(0, spacing_px, 2) + size / 2
    image = np.full((size, size), 0.1)
    yy, xx = np.mgrid[:size, :size]
    for offset, height in (((0.0, 0.0), 1.0), ((0.5, 0.5), 0.35)):
        centres = (ij + offset) @ rot.T * spacing_px + origin
        centres = centres[(centres.min(1) > -4 * sigma) & (centres.max(1) < size + 4 * sigma)]
        for cy, cx in centres:
            y0, y1 = int(max(0, cy - 4 * sigma)), int(min(size, cy + 4 * sigma + 1))
            x0, x1 = int(max(0, cx - 4 * sigma)), int(min(size, cx + 4 * sigma + 1))
            if y1 > y0 and x1 > x0:
                image[y0:y1, x0:x1] += height * np.exp(-((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2)
                                                       / (2 * sigma ** 2))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6, help="images per spacing")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--counts", type=float, default=12.0, help="expected counts at a bright column's peak")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--skip-bm3d", action="store_true")
    parser.add_argument("--bases", default=f"{pretrained.PRETRAINED_DIR}:{pretrained.BASE_NAME}",
                        help="comma-separated DIR:NAME pretrained models, scored side by side")
    parser.add_argument("--spacings", default=",".join(map(str, SPACINGS_PX)), help="column spacings in px")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bases = load_bases(args.bases)
    spacings = [float(s) for s in args.spacings.split(",")]
    rng = np.random.default_rng(2026)
    print(f"independent two-sublattice simulator, Poisson at {args.counts:g} counts per bright column, "
          f"{args.n} images of {args.size} px per spacing; gains in dB over the noisy input")
    print(f"{'spacing px':>10}{'noisy dB':>10}" + "".join(f"{label:>26}" for label in bases) + f"{'BM3D':>8}")
    for spacing in spacings:
        noisy_scores, bm3d_scores = [], []
        model_scores: dict[str, list[float]] = {label: [] for label in bases}
        for _ in range(args.n):
            clean = lattice_image(spacing, args.size, rng) * args.counts
            noisy = rng.poisson(clean).astype(np.float32)
            noisy_scores.append(psnr(noisy, clean))
            for label, model in bases.items():
                model_scores[label].append(psnr(denoise_array(model, noisy), clean))
            if not args.skip_bm3d:
                bm3d_scores.append(psnr(denoise_classical(noisy, "bm3d", noise=NoiseModel(1.0, 0.0), sigma=1.0),
                                        clean))
        base = np.mean(noisy_scores)
        bm3d = f"{np.mean(bm3d_scores) - base:+8.2f}" if bm3d_scores else f"{'-':>8}"
        gains = "".join(f"{np.mean(scores) - base:>+26.2f}" for scores in model_scores.values())
        print(f"{spacing:>10g}{base:>10.2f}{gains}{bm3d}", flush=True)


if __name__ == "__main__":
    main()
