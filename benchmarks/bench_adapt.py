"""`stemreg adapt` on raw frames whose noise a detector's bandwidth correlated along x: adapted vs base.

A "lab" records frames at the low-dose condition's seed point (8 pm/px, 1x dose) through the detector
physics of :mod:`stemreg.acquisition.detector`: a fast-scan bandwidth of ``--bandwidth-px`` (noise
lag-1 correlation exp(-1/tau) along x), 10 ADU per electron over a 15000 ADU dark offset, 0.2 %
defective pixels and line jumps of 1 % (the frames brought back to signal units with the known gain). ``adapt`` fine-tunes the shipped base on ``--lab`` such
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

from stemreg.acquisition import load_condition
from stemreg.models import pretrained
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr
from stemreg.models.noise_models import noise_model_from_params
from stemreg.models.trust import TrainedRange, trust_report


def correlated_frames(n: int, seed: int, size: int, bandwidth_px: float):
    cond = load_condition("low-dose").seed_point().model_copy(update={
        "bandwidth_px": bandwidth_px, "gain_adu_per_e": 10.0, "dark_offset_adu": 15000.0,
        "impulse_fraction": 0.002, "line_jump": 0.01, "line_glitch_rate": 0.0})
    pairs = cond.sample_pairs(n, size_px=size, seed=seed)
    return list(pairs.degraded), pairs.clean, pairs.params


def spikes_vs_truth(out: np.ndarray, clean: np.ndarray, sigma: float) -> int:
    err = out - clean
    extreme = (err == ndimage.maximum_filter(err, 3)) | (err == ndimage.minimum_filter(err, 3))
    return int(np.sum(extreme & (np.abs(err) > 5 * sigma)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lab", type=int, default=8)
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--bandwidth-px", type=float, default=1.5, help="detector time constant along x, px")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--synthetic-fraction", type=float, default=0.5)
    parser.add_argument("--direct", action="store_true", help="switch the residual skip off (train --images' way)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from stemreg.platform.training.adapt import adapt

    lab, _, _ = correlated_frames(args.lab, 300, args.size, args.bandwidth_px)
    test, clean, params = correlated_frames(args.test, 400, args.size, args.bandwidth_px)
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
