"""Before / after / target image panels for the MLflow UI."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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

    from stemreg.models.metrics import psnr, ssim

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
