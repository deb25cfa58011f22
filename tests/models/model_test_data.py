"""Synthetic STEM-like data for the models tests, built here (models never import acquisition).

A module of its own, not conftest.py: `from conftest import ...` finds whichever conftest
pytest put on sys.path first when several test folders are collected together.
"""
from __future__ import annotations

import numpy as np


def lattice_image(size_px: int, *, rng: np.random.Generator, spacing_px: float = 7.0,
                  sigma_px: float = 1.3) -> np.ndarray:
    """A clean 'crystal': Gaussian blobs on a rotated square lattice, two brightnesses, in [0.05, ~1]."""
    angle = rng.uniform(0, np.pi / 2)
    offset = rng.uniform(0, spacing_px, 2)
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float64)
    image = np.full((size_px, size_px), 0.05)
    c, s = np.cos(angle), np.sin(angle)
    n = int(size_px / spacing_px) + 3
    for i in range(-n, 2 * n):
        for j in range(-n, 2 * n):
            u, v = i * spacing_px + offset[0], j * spacing_px + offset[1]
            y, x = c * u - s * v, s * u + c * v
            if -3 * sigma_px <= y < size_px + 3 * sigma_px and -3 * sigma_px <= x < size_px + 3 * sigma_px:
                z = 1.0 if (i + j) % 2 == 0 else 0.5
                if rng.random() < 0.05:  # vacancy
                    continue
                image += z * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma_px ** 2))
    return image.astype(np.float32)


def noisy(clean: np.ndarray, *, dose: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson shot noise at ``dose`` electrons for intensity 1, in the clean image's units."""
    return (rng.poisson(clean * dose) / dose).astype(np.float32)


def make_pairs(n: int, size_px: int, *, dose: float = 20.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) stacks (n, size_px, size_px); both in the same units."""
    rng = np.random.default_rng(seed)
    clean = np.stack([lattice_image(size_px, rng=rng) for _ in range(n)])
    return noisy(clean, dose=dose, rng=rng), clean


def make_repeats(n: int, k: int, size_px: int, *, dose: float = 20.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(repeats (n, k, H, W), clean (n, H, W)): k independent noisy frames of each field."""
    rng = np.random.default_rng(seed)
    clean = np.stack([lattice_image(size_px, rng=rng) for _ in range(n)])
    repeats = np.stack([[noisy(c, dose=dose, rng=rng) for _ in range(k)] for c in clean])
    return repeats, clean
