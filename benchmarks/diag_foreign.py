"""Why the base trails BM3D on bench_foreign's fine lattices: its error taken apart.

On bench_foreign.py's images (perfect two-sublattice lattices, Gaussian columns, Poisson) this prints,
per spacing and dose, for each base and for BM3D:

- ``gain``: PSNR gain over the noisy input (dB), as bench_foreign prints it;
- ``T gain``: the same network given the transposed image (transposed back): a network that treats x
  and y alike scores the same; our detector's fast-scan low-pass is along x only;
- ``slope`` and ``offset``: the least-squares fit ``out = slope * clean + offset`` (offset in units of a
  bright column's counts): a slope below 1 is contrast lost (columns flattened), above 1 sharpened;
- ``fit dB``: the PSNR of that affine fit of the clean image, i.e. the error left once the
  scale is put right (what the scale costs is ``fit dB - gain dB`` apart from the noise);
- ``width x/y``: the output's mean column sigma along x and along y over the clean's (1 = right width);
- ``resid``: the variance of ``out - clean`` at high spatial frequency (above half the lattice's) over
  that of the noise: noise left in;
- ``clean in``: the PSNR of the network's output when it is given the clean image itself (no noise):
  the ceiling of what it can reach on these images, whatever the dose.

Beside BM3D, a row ``Gaussian`` is the best of a few Gaussian filters (sigma 0.4 to 1.5 px, picked per
spacing and dose on these very images: an oracle-tuned local smoother, the yardstick for a denoiser that
uses no more than a column's neighbourhood).

With ``--context 256,96,48,24`` it prints instead how much each denoiser gains on the central 24 px of
an image when it is given crops of those sizes around them: a denoiser that pools over the lattice's
repeats gains more with more context (BM3D searches ~40 px around each block); a local one does not.

    python benchmarks/diag_foreign.py [--bases DIR:NAME,...] [--spacings 12,8] [--counts 12,200] [--n 2]
        [--context 256,96,48,24]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, maximum_filter

GAUSSIAN_SIGMAS_PX = (0.4, 0.6, 0.8, 1.0, 1.5)

from stemreg.models import pretrained
from stemreg.models.classical import NoiseModel, denoise_classical
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr

sys.path.insert(0, str(Path(__file__).parent))
from bench_foreign import lattice_image  # noqa: E402
from bench_real import load_bases  # noqa: E402


def column_widths(image: np.ndarray, clean: np.ndarray, spacing: float) -> tuple[float, float]:
    """Mean second moment along x and along y of ``image`` around the clean image's bright peaks."""
    half = max(2, int(spacing / 4))
    peaks = (clean == maximum_filter(clean, size=int(spacing * 0.6) | 1)) & (clean > np.percentile(clean, 95))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    mx, my = [], []
    for y, x in zip(*np.nonzero(peaks)):
        if half <= y < image.shape[0] - half and half <= x < image.shape[1] - half:
            w = image[y - half:y + half + 1, x - half:x + half + 1]
            w = np.clip(w - np.median(w), 0, None)
            if w.sum() > 0:
                cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
                my.append((w * (yy - cy) ** 2).sum() / w.sum())
                mx.append((w * (xx - cx) ** 2).sum() / w.sum())
    return float(np.sqrt(np.mean(mx))), float(np.sqrt(np.mean(my)))


def high_pass(image: np.ndarray, spacing: float) -> np.ndarray:
    return image - gaussian_filter(image, spacing / 8)


def describe(out: np.ndarray, clean: np.ndarray, noisy: np.ndarray, spacing: float, counts: float) -> dict:
    slope, offset = np.polyfit(clean.ravel(), out.ravel(), 1)
    fit = (out - offset) / slope
    wx, wy = column_widths(out, clean, spacing)
    cx, cy = column_widths(clean, clean, spacing)
    resid = np.var(high_pass(out - clean, spacing)) / np.var(high_pass(noisy - clean, spacing))
    return {"psnr": psnr(out, clean), "slope": slope, "offset": offset / counts, "fit": psnr(fit, clean),
            "wx": wx / cx, "wy": wy / cy, "resid": resid}


def context_gains(bases: dict, spacing: float, counts: float, crops: list[int], n: int, size: int) -> None:
    """Gain (dB over noisy) on the central 24 px, each denoiser given crops of ``crops`` px around them."""
    rng = np.random.default_rng(2026)
    images = []
    for _ in range(n):
        clean = lattice_image(spacing, size, rng) * counts
        images.append((clean, rng.poisson(clean).astype(np.float32)))
    centre = np.s_[size // 2 - 12:size // 2 + 12, size // 2 - 12:size // 2 + 12]
    for crop in crops:
        start = size // 2 - crop // 2
        window = np.s_[start:start + crop, start:start + crop]
        inner = np.s_[crop // 2 - 12:crop // 2 + 12, crop // 2 - 12:crop // 2 + 12]
        gains: dict[str, list[float]] = {}
        for clean, noisy in images:
            part = noisy[window]
            outs = {label: denoise_array(m, part) for label, m in bases.items()}
            outs["BM3D"] = denoise_classical(part, "bm3d", noise=NoiseModel(1.0, 0.0), sigma=1.0)
            base = psnr(noisy[centre], clean[centre])
            for label, out in outs.items():
                gains.setdefault(label, []).append(psnr(out[inner], clean[centre]) - base)
        print(f"{spacing:>7g}{counts:>7g}{crop:>8}" + "".join(f"{np.mean(g):>+26.2f}" for g in gains.values()),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default=f"{pretrained.PRETRAINED_DIR}:{pretrained.BASE_NAME}")
    parser.add_argument("--spacings", default="12,8")
    parser.add_argument("--counts", default="12,200")
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-bm3d", action="store_true")
    parser.add_argument("--context", default=None, help="crop sizes in px: print the context study instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bases = load_bases(args.bases)
    if args.context:
        print(f"{'spacing':>7}{'counts':>7}{'crop px':>8}" + "".join(f"{label:>26}" for label in bases)
              + f"{'BM3D':>26}   (gain on the central 24 px)")
        for spacing in (float(s) for s in args.spacings.split(",")):
            for counts in (float(c) for c in args.counts.split(",")):
                context_gains(bases, spacing, counts, [int(c) for c in args.context.split(",")], args.n, args.size)
        return
    print(f"{'spacing':>7}{'counts':>7} {'denoiser':<24}{'gain':>7}{'T gain':>7}{'slope':>7}{'offset':>8}"
          f"{'fit dB':>7}{'wx':>6}{'wy':>6}{'resid':>7}{'clean in':>9}")
    for spacing in (float(s) for s in args.spacings.split(",")):
        for counts in (float(c) for c in args.counts.split(",")):
            rng = np.random.default_rng(2026)
            rows: dict[str, list[dict]] = {}
            noisy_db = []
            for _ in range(args.n):
                clean = lattice_image(spacing, args.size, rng) * counts
                noisy = rng.poisson(clean).astype(np.float32)
                noisy_db.append(psnr(noisy, clean))
                outs = {label: (denoise_array(m, noisy), denoise_array(m, noisy.T.copy()).T) for label, m in bases.items()}
                if not args.skip_bm3d:
                    bm3d = denoise_classical(noisy, "bm3d", noise=NoiseModel(1.0, 0.0), sigma=1.0)
                    outs["BM3D"] = (bm3d, bm3d)
                smooth = max((gaussian_filter(noisy, s) for s in GAUSSIAN_SIGMAS_PX), key=lambda o: psnr(o, clean))
                outs["Gaussian"] = (smooth, smooth)
                outs["noisy"] = (noisy, noisy)
                clean32 = clean.astype(np.float32)
                for label, (out, out_t) in outs.items():
                    row = describe(out, clean, noisy, spacing, counts)
                    row["t_psnr"] = psnr(out_t, clean)
                    row["clean_in"] = psnr(denoise_array(bases[label], clean32), clean) if label in bases else np.nan
                    rows.setdefault(label, []).append(row)
            base = np.mean(noisy_db)
            for label, items in rows.items():
                m = {k: np.mean([r[k] for r in items]) for k in items[0]}
                print(f"{spacing:>7g}{counts:>7g} {label:<24}{m['psnr'] - base:>+7.2f}{m['t_psnr'] - base:>+7.2f}"
                      f"{m['slope']:>7.3f}{m['offset']:>+8.3f}{m['fit'] - base:>+7.2f}{m['wx']:>6.2f}"
                      f"{m['wy']:>6.2f}{m['resid']:>7.3f}{m['clean_in']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
