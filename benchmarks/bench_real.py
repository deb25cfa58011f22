"""Pretrained bases against BM3D on real microscope images and on simulated raw frames.

Three sets, each scored side by side in one run (PSNR against a truth, mean over images and
noise draws, and the gain over BM3D with the generalised Anscombe transform and the oracle
noise model, sigma = the known level):

- **real**: the high-dose real ADF and ABF images of :mod:`real_images` (fetched from public
  wheels into a cache, never committed, never trained on), each degraded ``--draws`` times with
  the condition's physics (dose, detector); ADF and ABF reported apart. The same images go to
  ``stemreg evaluate --images DIR`` after ``--export DIR``.
- **raw-sim**: simulated raw frames of the condition (ADU with an offset, fast-scan-correlated
  noise, defective pixels, lost lines), whose truth is known. The networks get the ADU frame,
  as a user would give it; their output is brought back to the clean units with the known
  calibration. BM3D gets the frame in signal units with its oracle model.
- **raw frames, looked at** (``--panel PNG``): the real low-dose/raw frames, each network's
  output and BM3D's (noise model estimated from the frame), with the share of "dots": output
  pixels that stand out of their 3x3 neighbourhood's median by more than a quarter of the range.

Usage::

    python benchmarks/bench_real.py [--bases models/pretrained:low-dose-base,DIR:NAME] [--draws 4]
        [--n-raw 12] [--panel docs/real_raw_frames.png] [--export DIR] [--threads 1] [--skip-bm3d]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from real_images import DEFAULT_CACHE, IMAGES, load  # noqa: E402

from stemreg.acquisition import get_condition  # noqa: E402
from stemreg.acquisition.detector import to_signal_units  # noqa: E402
from stemreg.acquisition.dose import detected_electrons_per_unit_signal  # noqa: E402
from stemreg.models import pretrained  # noqa: E402
from stemreg.models.classical import denoise_classical, estimate_noise_model, noise_model_from_params  # noqa: E402
from stemreg.models.inference import denoise_array  # noqa: E402
from stemreg.models.metrics import psnr  # noqa: E402

RAW_SEED = 880_001


def load_bases(spec: str) -> dict[str, torch.nn.Module]:
    """``DIR:NAME,...`` -> {label: network}."""
    bases = {}
    for item in spec.split(","):
        folder, _, name = item.rpartition(":")
        model, card = pretrained.load_pretrained(name, Path(folder) if folder else None)
        bases[f"{name}@{card.get('weights_sha256', '')[:8]}"] = model
    return bases


def dot_fraction(image: np.ndarray) -> float:
    """Share of pixels that stand out of their 3x3 neighbourhood's median by more than a quarter of
    the image's range (0.5 to 99.5th percentile): single-pixel dots, bright or dark."""
    from scipy.ndimage import median_filter

    residual = image - median_filter(image, size=3, mode="reflect")
    low, high = np.percentile(image, [0.5, 99.5])
    return float(np.mean(np.abs(residual) > 0.25 * max(high - low, 1e-12)))


def degrade_real(condition, data: np.ndarray, pixel_size_pm: float | None, contrast: str, seed: int):
    """One degradation of a real high-dose image: (degraded, clean, params)."""
    batch = condition.degrade(data, seed=seed, pixel_size_pm=pixel_size_pm,
                              contrast="abf" if contrast == "abf" else "haadf")
    return batch.degraded[0], batch.clean[0], batch.params[0]


def score_real(condition, bases, draws: int, cache: Path, skip_bm3d: bool) -> dict[str, dict[str, list[float]]]:
    scores: dict[str, dict[str, list[float]]] = {}
    for image in (im for im in IMAGES if im.role == "high-dose"):
        data, size_pm = load(image, cache)
        rows = scores.setdefault(image.contrast.upper(), {"noisy": [], "bm3d": [], **{b: [] for b in bases}})
        for d in range(draws):
            degraded, clean, params = degrade_real(condition, data, size_pm, image.contrast, seed=1000 + d)
            rows["noisy"].append(psnr(degraded, clean))
            for label, model in bases.items():
                rows[label].append(psnr(denoise_array(model, degraded), clean))
            if not skip_bm3d:
                out = denoise_classical(degraded, "bm3d", noise=noise_model_from_params(params), sigma=1.0)
                rows["bm3d"].append(psnr(out, clean))
    return scores


def to_clean_units(adu: np.ndarray, params: dict) -> np.ndarray:
    """A frame in ADU back to the clean units: the known calibration, the mean background flux removed."""
    lam = detected_electrons_per_unit_signal(params["beam_current_pA"], params["dwell_time_us"],
                                             params["detector_efficiency"])
    signal = to_signal_units(adu, lam=lam, gain_adu_per_e=params["gain_adu_per_e"],
                             dark_offset_adu=params["dark_offset_adu"])
    return (signal - params["bias"]) / (1.0 - params["bias"])  # E = (1 - bias) s + bias for s in [0, 1]


def score_raw_sim(condition, bases, n: int, size: int, skip_bm3d: bool) -> dict[str, list[float]]:
    batch = condition.sample_pairs(n, size_px=size, seed=RAW_SEED)
    rows: dict[str, list[float]] = {"noisy": [], "bm3d": [], **{b: [] for b in bases}}
    dots: dict[str, list[float]] = {"truth": [], **{b: [] for b in bases}}
    for i in range(n):
        raw, clean, params = batch.raw[i], batch.clean[i], batch.params[i]
        rows["noisy"].append(psnr(batch.degraded[i], clean))
        dots["truth"].append(dot_fraction(clean))
        for label, model in bases.items():
            out = to_clean_units(denoise_array(model, raw), params)
            rows[label].append(psnr(out, clean))
            dots[label].append(dot_fraction(out))
        if not skip_bm3d:
            out = denoise_classical(batch.degraded[i], "bm3d", noise=noise_model_from_params(params), sigma=1.0)
            rows["bm3d"].append(psnr(out, clean))
    return rows, dots


def print_table(title: str, rows: dict[str, list[float]]) -> None:
    bm3d = np.mean(rows["bm3d"]) if rows.get("bm3d") else float("nan")
    print(f"\n{title} ({len(rows['noisy'])} images x draws)")
    print("| method | PSNR dB (mean +- sem) | vs BM3D dB |")
    print("|---|---|---|")
    for label, values in rows.items():
        if values:
            sem = np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
            print(f"| {label} | {np.mean(values):.2f} +- {sem:.2f} | {np.mean(values) - bm3d:+.2f} |")


def panel(bases, cache: Path, path: Path, crop: int = 192) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raws = [im for im in IMAGES if im.role == "raw"]
    columns = ["input", *bases, "bm3d (estimated model)"]
    fig, axes = plt.subplots(len(raws), len(columns), figsize=(3.2 * len(columns), 3.4 * len(raws)), squeeze=False)
    print("\nraw frames, looked at: share of output pixels that are single-pixel dots")
    for r, image in enumerate(raws):
        data, _ = load(image, cache)
        h, w = data.shape
        frame = data[h // 2 - crop:h // 2 + crop, w // 2 - crop:w // 2 + crop].astype(np.float32)
        outs = {"input": frame}
        for label, model in bases.items():
            outs[label] = denoise_array(model, frame)
        outs["bm3d (estimated model)"] = denoise_classical(frame, "bm3d", noise=estimate_noise_model(frame), sigma=1.0)
        lo, hi = np.percentile(frame, [0.5, 99.5])
        for c, label in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(outs[label][:crop, :crop], cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(f"{image.name}\n{label}\ndots {100 * dot_fraction(outs[label]):.2f} %", fontsize=8)
            ax.axis("off")
            print(f"  {image.name:16s} {label:28s} dots {100 * dot_fraction(outs[label]):.3f} %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"panel: {path}")


def export(cache: Path, folder: Path) -> None:
    """The high-dose real images as .tif per contrast, for `stemreg evaluate --images FOLDER/adf`."""
    from stemreg.acquisition import Calibration, write_image

    for image in (im for im in IMAGES if im.role == "high-dose"):
        data, size_pm = load(image, cache)
        out = write_image(folder / image.contrast / f"{image.name}.tif", data.astype(np.float32),
                          Calibration(size_pm, "pm") if size_pm else Calibration())
        print(f"exported {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", default=f"{pretrained.PRETRAINED_DIR}:{pretrained.BASE_NAME}",
                        help="comma-separated DIR:NAME of pretrained bases (card + weights)")
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--draws", type=int, default=4, help="noise draws per real image")
    parser.add_argument("--n-raw", type=int, default=12, help="simulated raw frames")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--panel", type=Path, default=None)
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-bm3d", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    condition = get_condition(args.condition)
    bases = load_bases(args.bases)
    if args.export:
        export(args.cache, args.export)
    for contrast, rows in score_real(condition, bases, args.draws, args.cache, args.skip_bm3d).items():
        print_table(f"real {contrast} (degraded as {condition.name})", rows)
    rows, dots = score_raw_sim(condition, bases, args.n_raw, args.size, args.skip_bm3d)
    print_table(f"simulated raw frames ({condition.benchmark_id()}, seed {RAW_SEED})", rows)
    print("dots (share of pixels) in the outputs of the simulated raw frames: "
          + ", ".join(f"{k} {100 * np.mean(v):.3f} %" for k, v in dots.items()))
    if args.panel:
        panel(bases, args.cache, args.panel)


if __name__ == "__main__":
    main()
