"""Figures for the MLflow UI: before/after/target panels, the leaderboard's bar chart and gallery."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stemreg.models.metrics import psnr, ssim
from stemreg.platform.evaluation.data import TestSet
from stemreg.platform.evaluation.leaderboard import Leaderboard
from stemreg.platform.evaluation.methods import LEARNED_METHODS, NOISY


def _limits(image: np.ndarray) -> tuple[float, float]:
    # Shared percentiles of the clean target keep the three columns comparable.
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def comparison_panel(degraded: np.ndarray, denoised: np.ndarray, clean: np.ndarray, path: str | Path, *,
                     title: str | None = None, max_rows: int = 4) -> Path:
    """Write a PNG grid: one row per image, columns noisy / denoised / target, PSNR and SSIM in the titles.

    Parameters
    ----------
    degraded, denoised, clean
        Stacks `(N, H, W)` (or single images `(H, W)`) of the same shape.
    path
        Where the PNG goes.
    title
        Figure title (condition, model).
    max_rows
        At most this many images are shown.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    degraded, denoised, clean = (np.asarray(a, dtype=np.float32) for a in (degraded, denoised, clean))
    if degraded.ndim == 2:
        degraded, denoised, clean = degraded[None], denoised[None], clean[None]
    rows = min(max_rows, degraded.shape[0])
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3.1 * rows), squeeze=False)
    for row in range(rows):
        vmin, vmax = _limits(clean[row])
        cells = (("noisy", degraded[row]), ("denoised", denoised[row]), ("target", clean[row]))
        for col, (label, image) in enumerate(cells):
            ax = axes[row, col]
            # The noisy input has its own scale (counts); show it on its own percentiles.
            lims = _limits(image) if label == "noisy" else (vmin, vmax)
            ax.imshow(image, cmap="gray", vmin=lims[0], vmax=lims[1], interpolation="nearest")
            if label == "target":
                ax.set_title("target (clean)", fontsize=10)
            else:
                ax.set_title(f"{label}: PSNR {psnr(image, clean[row]):.2f} dB, "
                             f"SSIM {ssim(image, clean[row]):.3f}", fontsize=9)
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def bar_chart(board: Leaderboard, path: Path) -> Path:
    """PSNR and SSIM per method, mean with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board.rows()
    names = [r["method"] for r in rows]
    colours = ["0.6" if n == NOISY else ("tab:red" if n == "hourglass" else
               "tab:orange" if n in LEARNED_METHODS else "tab:blue") for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) * 2), 4.2))
    for ax, (key, label) in zip(axes, (("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
        means = [r[key] for r in rows]
        stds = [r[f"{key}_std"] for r in rows]
        ax.bar(range(len(names)), means, yerr=stds, color=colours, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_ylabel(label)
        finite = [m for m in means if math.isfinite(m)]
        if key == "psnr" and finite:
            ax.set_ylim(min(finite) - 3, max(finite) + 2)  # dB differences, not absolute values, matter
        ax.grid(axis="y", alpha=0.3)
        for i, m in enumerate(means):
            if math.isfinite(m):
                ax.text(i, m, f"{m:.2f}" if key == "psnr" else f"{m:.3f}", ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"{board.condition}: {board.n_images} images, budget {board.budget.name} "
                 f"(grey: input, red: hourglass, orange: other CNNs, blue: classical)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gallery(board: Leaderboard, test: TestSet, path: Path, *, crop_px: int = 96) -> Path:
    """Before / after: one row per method, the same crop of the first test image.

    Columns: the noisy input (before), the method's output (after), and the
    absolute error of the output against the clean target; a first row shows
    the clean target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean, noisy = test.clean[0], test.degraded[0]
    h, w = clean.shape
    size = min(crop_px, h, w)
    r0, c0 = (h - size) // 2, (w - size) // 2
    window = (slice(r0, r0 + size), slice(c0, c0 + size))
    low, high = np.percentile(clean, [0.5, 99.5])
    high = high if high > low else low + 1.0
    # one error scale for every row (the noisy input's), so rows compare at a glance
    error_max = max(float(np.percentile(np.abs(noisy - clean), 99)), 1e-6)
    rows = [r for r in board.results if r.example is not None]
    fig, axes = plt.subplots(len(rows) + 1, 3, figsize=(6.0, 2.0 * (len(rows) + 1)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 1].imshow(clean[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    axes[0, 1].set_title("clean target", fontsize=8)
    for i, result in enumerate(rows, start=1):
        before, after = axes[i, 0], axes[i, 1]
        before.imshow(noisy[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        before.set_title("before (noisy)", fontsize=7)
        after.imshow(result.example[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        after.set_title(f"{result.method}: {result.psnr[0]:.2f} dB, SSIM {result.ssim[0]:.3f}", fontsize=7)
        axes[i, 2].imshow(np.abs(result.example - clean)[window], cmap="magma", vmin=0, vmax=error_max,
                          interpolation="nearest")
        axes[i, 2].set_title("|after - clean|", fontsize=7)
    fig.suptitle(f"{board.condition}: {size}x{size} px crop of test image 0", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
