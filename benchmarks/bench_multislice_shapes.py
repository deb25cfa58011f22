"""The fast renderer's column shapes against multislice (abTEM) images of the same crystals.

For every crystal and thickness of a multislice library (``stemreg multislice --out DIR``) and
for the fast renderer's image of the same specimen family at the same sampling (the seed's
aberration-corrected probe, no amorphous background, no defects), HAADF and ABF, it measures:

- ``fwhm_pm``: the full width at half maximum of the strongest columns (azimuthal mean profile
  around the brightest local maxima, between the peak and the image's minimum);
- ``tail``: the share of a column's intensity above the minimum that lies beyond one FWHM from
  its centre and within half the nearest-neighbour distance (the probe's and channelling's tails);
- ``ratio``: the weakest column class's peak height over the strongest's, above the minimum
  (relative intensities: Ti-O/Sr, S2/Mo, ...).

ABF images are inverted first (columns are minima). Prints one table; RESULTS quotes it.

Usage::

    python benchmarks/bench_multislice_shapes.py --library DIR [--size 160]
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.ndimage import maximum_filter

from stemreg.acquisition import get_condition
from stemreg.acquisition.detector import IDEAL_DETECTOR
from stemreg.acquisition.microscope import render_field
from stemreg.acquisition.multislice import cell_field, load_library


def column_shape(image: np.ndarray, pixel_size_pm: float, *, dark: bool) -> dict[str, float]:
    """FWHM (pm), tail share and weakest/strongest peak ratio of an image's columns."""
    x = -image if dark else image
    x = x - x.min()
    peaks_mask = (x == maximum_filter(x, size=5, mode="wrap")) & (x > 0.15 * x.max())
    rows, cols = np.nonzero(peaks_mask)
    heights = x[rows, cols]
    if len(heights) < 2:
        return {"fwhm_pm": float("nan"), "tail": float("nan"), "ratio": float("nan")}
    strong = heights >= np.percentile(heights, 75)
    yy, xx = np.mgrid[:x.shape[0], :x.shape[1]]
    pts = np.stack([rows, cols], 1).astype(float)
    d_nn = np.sort(np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1)), axis=1)[:, 1]
    radius = 0.5 * float(np.median(d_nn))
    profile_r = np.arange(0, radius, 0.5)
    profiles, tails = [], []
    for r0, c0 in zip(rows[strong], cols[strong]):
        if not (radius <= r0 < x.shape[0] - radius and radius <= c0 < x.shape[1] - radius):
            continue
        dist = np.hypot(yy - r0, xx - c0)
        inside = dist < radius
        prof = [x[(dist >= a) & (dist < a + 1.0)].mean() if np.any((dist >= a) & (dist < a + 1.0)) else np.nan
                for a in profile_r]
        profiles.append(prof)
        tails.append((dist, inside))
    if not profiles:
        return {"fwhm_pm": float("nan"), "tail": float("nan"), "ratio": float("nan")}
    mean_profile = np.nanmean(np.array(profiles), axis=0)
    half = mean_profile[0] / 2
    below = np.flatnonzero(mean_profile < half)
    hwhm_px = float(profile_r[below[0]]) if len(below) else float(radius)
    tail_shares = [x[inside & (dist > 2 * hwhm_px)].sum() / max(x[inside].sum(), 1e-12) for dist, inside in tails]
    classes = np.sort(heights)
    weak = classes[: max(1, len(classes) // 4)].mean()
    return {"fwhm_pm": 2 * hwhm_px * pixel_size_pm, "tail": float(np.mean(tail_shares)),
            "ratio": float(weak / classes[-max(1, len(classes) // 4):].mean())}


def fast_renderer_image(family: str, contrast: str, size: int, pixel_size_pm: float) -> np.ndarray:
    condition = get_condition("low-dose").seed_point()
    rng = np.random.default_rng(3)
    params = condition.draw_params(rng)
    params.update({"specimen": family, "pixel_size_pm": pixel_size_pm, "background_fraction": 0.0,
                   "vacancy_fraction": 0.0, "substitution_fraction": 0.0, "brightness_spread": 0.0,
                   "lattice_strain": 0.0, "contrast": contrast, "abf_depth": 0.4, **IDEAL_DETECTOR})
    return render_field(params, size, pixel_size_pm, rng).clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", required=True)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--pixel-size-pm", type=float, default=10.0)
    args = parser.parse_args()
    print("| crystal | thickness nm | contrast | source | FWHM pm | tail | weak/strong |")
    print("|---|---|---|---|---|---|---|")
    for cell in load_library(args.library):
        for contrast in ("haadf", "abf"):
            fast = column_shape(fast_renderer_image(cell.family, contrast, args.size, args.pixel_size_pm),
                                args.pixel_size_pm, dark=contrast == "abf")
            print(f"| {cell.family} | - | {contrast} | fast renderer | {fast['fwhm_pm']:.0f} | {fast['tail']:.3f} | "
                  f"{fast['ratio']:.2f} |")
            for t, thickness in enumerate(cell.thickness_nm):
                image = cell_field(cell, contrast=contrast, thickness_index=t, size_px=args.size,
                                   pixel_size_pm=args.pixel_size_pm, rng=np.random.default_rng(0))
                ms = column_shape(image, args.pixel_size_pm, dark=contrast == "abf")
                print(f"| {cell.name} | {thickness:.1f} | {contrast} | multislice | {ms['fwhm_pm']:.0f} | "
                      f"{ms['tail']:.3f} | {ms['ratio']:.2f} |")


if __name__ == "__main__":
    main()
