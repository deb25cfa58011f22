"""Does a column keep its intensity wherever it falls between pixels? Our renderer against plain sampling.

For each pixel size, a perfect Au [110] field (no defects, no strain, no brightness spread, no
background, HAADF, source 15 pm) is rendered by the simulator (`render_field`), and every column's
intensity is summed in a window around it; the spread of those sums over the columns (coefficient of
variation) and the dimmest over the brightest column say whether identical columns come out identical.
Beside it, the same figures for the columns' projected potential drawn by sampling the 8 pm thermal
Gaussian at the pixel centres (then the same probe), computed here: how simulator revisions up to 5
drew it. On a revision-5 checkout both columns show the same spread; revision 6 (branch h18-rev6)
draws narrow columns band-limited.

    python benchmarks/bench_column_render.py [--sizes 8,16,25,40,60] [--panel FILE.png]
"""
from __future__ import annotations

import argparse

import numpy as np
import scipy.fft

from stemreg.acquisition import get_condition
from stemreg.acquisition.conditions import SIMULATOR_REVISION
from stemreg.acquisition.microscope import render_field
from stemreg.acquisition.optics import gaussian_transfer, probe_transfer
from stemreg.acquisition.specimens import COLUMN_SIGMA_PM


def column_sums(image: np.ndarray, columns: np.ndarray, half: int) -> np.ndarray:
    """Sum of ``image`` in a (2 half + 1)^2 window around each column (columns near the edge skipped)."""
    centres = np.round(columns).astype(int)
    ok = (centres.min(1) >= half) & (centres.max(1) < min(image.shape) - half)
    return np.array([image[y - half:y + half + 1, x - half:x + half + 1].sum() for y, x in centres[ok]])


def sampled_potential(positions_px: np.ndarray, brightness: np.ndarray, shape: tuple[int, int],
                      sigma_px: float) -> np.ndarray:
    """Revision 5's drawing: each column's Gaussian sampled at the pixel centres (narrow ones alias)."""
    image = np.zeros(shape)
    radius = int(np.ceil(4 * sigma_px))
    for (cy, cx), b in zip(positions_px, brightness):
        y0, x0 = int(np.floor(cy)), int(np.floor(cx))
        for y in range(y0 - radius, y0 + radius + 1):
            for x in range(x0 - radius, x0 + radius + 1):
                if 0 <= y < shape[0] and 0 <= x < shape[1]:
                    image[y, x] += b * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma_px ** 2)) / (
                        2 * np.pi * sigma_px ** 2)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,16,25,40,60", help="pixel sizes in pm")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--panel", default=None, help="write a panel of both renderings at the sizes here")
    args = parser.parse_args()
    condition = get_condition("low-dose")
    perfect = dict(specimen="fcc-metal", vacancy_fraction=0.0, substitution_fraction=0.0, background_fraction=0.0,
                   lattice_strain=0.0, brightness_spread=0.0, contrast="haadf", source_size_pm=15.0, defocus_nm=0.0,
                   blur_sigma_px=0.0)
    print(f"renderer: simulator revision {SIMULATOR_REVISION}; 'sampled': the Gaussians sampled at pixel centres")
    print(f"{'pm/px':>6}{'columns':>8}{'sum cv renderer':>17}{'dim/bright':>12}{'sum cv sampled':>16}"
          f"{'dim/bright':>12}")
    panels = []
    for pixel_size in (float(s) for s in args.sizes.split(",")):
        params = {**condition.draw_params(np.random.default_rng(0)), **perfect, "pixel_size_pm": pixel_size}
        rendered = render_field(dict(params), args.size, pixel_size, np.random.default_rng(3))
        half = max(1, int(round(60 / pixel_size)))
        now = column_sums(rendered.clean, rendered.columns, half)
        # revision 5: the same columns, their potential sampled at the pixel centres, the same probe (on a grid
        # 16 px larger each side, so the FFT's wrap-around stays outside the field)
        pad = 16
        shape = (args.size + 2 * pad,) * 2
        potential = sampled_potential(rendered.columns + pad, np.ones(len(rendered.columns)), shape,
                                      COLUMN_SIGMA_PM / pixel_size)
        transfer = (probe_transfer(shape, pixel_size, energy_keV=params["energy_keV"],
                                   convergence_mrad=params["convergence_mrad"], cs_um=params["cs_um"])
                    * gaussian_transfer(shape, 15.0 / pixel_size))
        old = np.maximum(scipy.fft.irfft2(scipy.fft.rfft2(potential) * transfer, s=shape), 0.0)[pad:-pad, pad:-pad]
        before = column_sums(old, rendered.columns, half)
        print(f"{pixel_size:>6g}{len(now):>8}{now.std() / now.mean():>17.3f}{now.min() / now.max():>12.3f}"
              f"{before.std() / before.mean():>16.3f}{before.min() / before.max():>12.3f}", flush=True)
        panels.append((pixel_size, rendered.clean, old / np.percentile(old, 99.5)))
    if args.panel:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, len(panels), figsize=(3 * len(panels), 6.2))
        for k, (pixel_size, now_image, old_image) in enumerate(panels):
            crop = np.s_[:64, :64]
            for row, (image, label) in enumerate(((old_image, "sampled at pixel centres"),
                                                  (now_image, f"renderer, revision {SIMULATOR_REVISION}"))):
                axes[row, k].imshow(image[crop], cmap="gray", vmin=0, vmax=1.1)
                axes[row, k].set_title(f"{label}, {pixel_size:g} pm/px", fontsize=9)
                axes[row, k].axis("off")
        fig.suptitle("A perfect Au [110] lattice: identical columns should look identical")
        fig.tight_layout()
        fig.savefig(args.panel, dpi=80)


if __name__ == "__main__":
    main()
