"""`stemreg adapt` on raw frames whose noise a detector's bandwidth correlated along x: adapted vs base.

A "lab" records frames at the low-dose condition's seed point (8 pm/px, 1x dose) with noise low-passed
along the fast-scan axis (first order, pole ``--pole``, its variance kept; a stand-in for the detector
physics of acquisition/ until that lands). ``adapt`` fine-tunes the shipped base on ``--lab`` such
frames (no clean image; a quarter held out), then base and adapted model denoise ``--test`` other
frames whose truth is known. Printed per model: PSNR against the simulated truth, the trust report's
residual structure (lag 1-3 correlation beyond / short of the input noise's), residual variance,
single-pixel dots per Mpx the input does not hold, spikes against the truth (output pixels > 5 noise
sigma off the truth that are local extrema of the error) and the verdicts.

    nice -n 19 python benchmarks/bench_adapt.py --lab 8 --test 6 --epochs 3 --steps 30
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.signal import lfilter

from stemreg.acquisition import load_condition
from stemreg.models import pretrained
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr
from stemreg.models.noise_models import noise_model_from_params
from stemreg.models.trust import TrainedRange, trust_report


def correlated_frames(n: int, seed: int, size: int, pole: float):
    cond = load_condition("low-dose").seed_point()
    pairs = cond.sample_pairs(n, size_px=size, seed=seed)
    noisy = []
    for x, s in zip(pairs.degraded, pairs.signal):
        noise = lfilter([1.0 - pole], [1.0, -pole], x - s, axis=1) * np.sqrt((1.0 + pole) / (1.0 - pole))
        noisy.append((s + noise).astype(np.float32))
    return noisy, pairs.clean, pairs.params


def spikes_vs_truth(out: np.ndarray, clean: np.ndarray, sigma: float) -> int:
    err = out - clean
    extreme = (err == ndimage.maximum_filter(err, 3)) | (err == ndimage.minimum_filter(err, 3))
    return int(np.sum(extreme & (np.abs(err) > 5 * sigma)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lab", type=int, default=8)
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--pole", type=float, default=0.6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--synthetic-fraction", type=float, default=0.5)
    parser.add_argument("--direct", action="store_true", help="switch the residual skip off (train --images' way)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from stemreg.platform.training.adapt import adapt

    lab, _, _ = correlated_frames(args.lab, 300, args.size, args.pole)
    test, clean, params = correlated_frames(args.test, 400, args.size, args.pole)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # a throwaway MLflow store
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        files = []
        for i, frame in enumerate(lab):
            files.append(str(Path(tmp) / f"lab_{i:02d}.npy"))
            np.save(files[-1], frame)
        result = adapt("low-dose", files, epochs=args.epochs, steps_per_epoch=args.steps,
                       synthetic_fraction=args.synthetic_fraction, keep_residual=not args.direct, register=False, score=False, progress=False)
    print(f"adapt: {result.mode}, blind spot +-{result.struct_px} px along x (lab noise lag 1-3 correlation "
          f"{', '.join(f'{c:.2f}' for c in result.noise_corr_x)}), held-out loss {result.val_loss:.4f}, "
          f"{result.seconds:.0f} s; lab files {len(result.lab_files)}, held out {len(result.held_out_files)}")
    base = pretrained.load_pretrained()[0]
    ranges = {"base": TrainedRange(), "adapted": TrainedRange(noise_corr_x=result.noise_corr_x[0])}
    print(f"{'model':8s} {'PSNR dB':>8s} {'noisy':>6s} {'structure':>10s} {'variance':>9s} {'dots/Mpx':>9s} "
          f"{'spikes':>7s}  verdicts")
    for name, net in (("base", base), ("adapted", result.network)):
        rows = []
        for x, c, p in zip(test, clean, params):
            out = denoise_array(net, x)
            rep = trust_report(x, out, pixel_size_pm=8.0, trained=ranges[name])
            sigma = float(np.sqrt(noise_model_from_params(p).gain * np.mean(c) + noise_model_from_params(p).offset_var))
            rows.append((psnr(out, c), psnr(x, c), max(rep.figures["excess_corr"], rep.figures["missing_corr"]),
                         rep.figures["variance_ratio"], rep.figures["dots_per_mpx"], spikes_vs_truth(out, c, sigma),
                         rep.verdict))
        a = np.array([r[:6] for r in rows], float)
        verdicts = {v: sum(r[6] == v for r in rows) for v in ("ok", "doubtful", "out of range")}
        print(f"{name:8s} {a[:, 0].mean():8.2f} {a[:, 1].mean():6.2f} {a[:, 2].mean():10.3f} {a[:, 3].mean():9.2f} "
              f"{a[:, 4].mean():9.1f} {a[:, 5].mean():7.1f}  "
              + ", ".join(f"{n} {v}" for v, n in verdicts.items() if n))


if __name__ == "__main__":
    main()
