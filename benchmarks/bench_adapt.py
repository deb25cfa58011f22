"""`stemreg adapt` on raw frames simulated with the detector physics: adapted model against the base.

A "lab" records frames at the low-dose condition's seed point (8 pm/px, 1x dose) through
:mod:`stemreg.acquisition.detector`: a fast-scan bandwidth of ``--bandwidth-px`` (noise lag-1
correlation exp(-1/tau) along x), 10 ADU per electron over a 15000 ADU dark offset, ``--defects``
defective pixels (hot, dead, impulse), line jumps of 1 % and ``--glitch-rate`` lost lines; frames
are brought back to signal units with the known gain. ``adapt`` fine-tunes the shipped base on
``--lab`` such frames (no clean image; a quarter held out), then every method denoises ``--test``
other frames whose truth is known. Printed per method (mean over the test frames):

- PSNR against the simulated truth;
- the residual ``input - output`` in the input's noise sigmas (clipped at 5), its correlation at
  lags 1-3 along x (fast scan) and lag 1 along y: the truth's row is the noise's own correlation;
  a denoiser that removes only noise matches it, one that removes signal or leaves noise does not;
- ``dots/Mpx``: :func:`stemreg.models.metrics.single_pixel_dots` with the truth's range as the
  scale (a pixel a quarter of the truth's 0.5-99.5 % span off the median of its 8 neighbours), so
  the truth's own count is what the specimen holds;
- ``spikes``: output pixels > 5 noise sigma off the truth that are local extrema of the error;
- ``off the truth's``: the mean absolute difference of those four correlations from the truth's row;
- ``trust: structure``: the trust report's residual structure, no truth used (the largest excess or
  shortfall of the residual's lag 1-3 correlation against the input's noise correlation);
- the trust report's verdicts (``ok`` / ``doubtful`` / ``out of range``).

Methods: the base; the base with impulse repair (:mod:`stemreg.models.impulses`, an inference
step any model can take); the adapted model (which repairs its input, as `adapt` sets it); the
adapted model without the repair (ablation); BM3D with the oracle noise model, with and without
the repair. ``--panel PNG`` writes truth, input and outputs side by side. ``--impulse-check`` prints
instead the impulse test's detection and false-alarm rates over the condition's sampling and dose
range (no training).

    nice -n 10 python benchmarks/bench_adapt.py --lab 8 --test 6 --epochs 4 --steps 40 \
        --panel docs/adapt_raw_frames.png
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from stemreg.acquisition import load_condition
from stemreg.models import pretrained
from stemreg.models.classical import denoise_classical
from stemreg.models.impulses import repair_impulses
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr, single_pixel_dots
from stemreg.models.noise_models import noise_model_from_params
from stemreg.models.trust import TrainedRange, trust_report
from stemreg.models.trust_stats import lag_corr


def lab_condition(bandwidth_px: float, defects: float, glitch_rate: float, **update):
    return load_condition("low-dose").seed_point().model_copy(update={
        "bandwidth_px": bandwidth_px, "gain_adu_per_e": 10.0, "dark_offset_adu": 15000.0,
        "impulse_fraction": defects, "line_jump": 0.01, "line_glitch_rate": glitch_rate, **update})


def spikes_vs_truth(out: np.ndarray, clean: np.ndarray, sigma: float) -> int:
    err = out - clean
    extreme = (err == ndimage.maximum_filter(err, 3)) | (err == ndimage.minimum_filter(err, 3))
    return int(np.sum(extreme & (np.abs(err) > 5 * sigma)))


def figures(x: np.ndarray, out: np.ndarray, clean: np.ndarray, params: dict, trained: TrainedRange | None):
    nm = noise_model_from_params(params)
    sigma_map = np.sqrt(np.maximum(nm.gain * np.maximum(clean, 0) + nm.offset_var, 1e-12))
    z = np.clip((x - out) / sigma_map, -5, 5)
    scale = float(np.subtract(*np.percentile(clean, [99.5, 0.5])))
    row = {"psnr": psnr(out, clean), "cx": lag_corr(z, axis=1), "cy": lag_corr(z, axis=0)[0],
           "dots": float(single_pixel_dots(out, scale).mean() * 1e6),
           "spikes": spikes_vs_truth(out, clean, float(np.sqrt(nm.gain * np.mean(clean) + nm.offset_var)))}
    row["verdict"], row["structure"] = "", float("nan")
    if trained is not None:
        report = trust_report(x, out, pixel_size_pm=8.0, trained=trained)
        row["verdict"] = report.verdict
        row["reason"] = re.sub(r" ?\(.*?\)", "", report.reason.split(";")[0])  # figures dropped: grouped
        row["signal_corr"] = report.figures["signal_corr"]
        row["structure"] = max(report.figures["excess_corr"], report.figures["missing_corr"])
    return row


def print_table(rows: dict[str, list[dict]]) -> None:
    print("| method | PSNR dB | residual corr x lag 1 / 2 / 3 | corr y lag 1 | off the truth's | trust: structure "
          "| dots/Mpx | spikes/frame | trust verdicts |")
    print("|---|---|---|---|---|---|---|---|---|")
    noise = np.array([[*r["cx"], r["cy"]] for r in rows["truth"]])
    for name, rs in rows.items():
        cx = np.mean([r["cx"] for r in rs], axis=0)
        # how far the residual's correlations lie from the noise's own (the truth's residual), mean |diff|
        off = np.mean(np.abs(np.array([[*r["cx"], r["cy"]] for r in rs]) - noise)) if name != "input" else float("nan")
        verdicts = [r["verdict"] for r in rs if r["verdict"]]
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("ok", "doubtful", "out of range") if v in verdicts)
        print(f"| {name} | {np.mean([r['psnr'] for r in rs]):.2f} | {cx[0]:.3f} / {cx[1]:.3f} / {cx[2]:.3f} | "
              f"{np.mean([r['cy'] for r in rs]):.3f} | {off:.3f} | {np.mean([r['structure'] for r in rs]):.3f} | "
              f"{np.mean([r['dots'] for r in rs]):.0f} | "
              f"{np.mean([r['spikes'] for r in rs]):.1f} | {counts or '-'} |")
    print("trust reasons (first clause, count over the frames) and the residual's correlation with the output's detail:")
    for name, rs in rows.items():
        reasons = [r["reason"] for r in rs if r.get("reason")]
        if reasons:
            common = ", ".join(f"{reasons.count(t)}x '{t}'" for t in dict.fromkeys(reasons))
            sc = [r["signal_corr"] for r in rs]
            print(f"  {name}: {common}; signal_corr {min(sc):.2f} .. {max(sc):.2f}")


def impulse_check(args) -> None:
    """Detection and false alarms of the impulse test over the condition's sampling and dose range."""
    print("| sampling pm/px | dose | defects found | false alarms /Mpx (with defects) | on defect-free frames /Mpx | "
          "PSNR change of the repair, defect-free dB |")
    print("|---|---|---|---|---|---|")
    for pm in (4.0, 8.0, 16.0, 32.0, 64.0):
        for dose in (0.25, 1.0, 4.0):
            tp = fn = fp = fp0 = 0
            dpsnr = []
            kw = {"pixel_size_pm": pm, "dose_scale": dose}
            a = lab_condition(args.bandwidth_px, args.defects, 0.0, **kw).sample_pairs(args.test, size_px=args.size, seed=900)
            b = lab_condition(args.bandwidth_px, 0.0, 0.0, **kw).sample_pairs(args.test, size_px=args.size, seed=900)
            for x, y, c in zip(a.degraded, b.degraded, b.clean):
                truth = np.abs(x - y) > 1e-9  # same seed: the frames differ only at the defects
                m = repair_impulses(x)[1]
                repaired, m0 = repair_impulses(y)
                tp, fn, fp, fp0 = tp + (m & truth).sum(), fn + (~m & truth).sum(), fp + (m & ~truth).sum(), fp0 + m0.sum()
                dpsnr.append(psnr(repaired, c) - psnr(y, c))
            mpx = args.test * args.size ** 2 / 1e6
            print(f"| {pm:g} | {dose:g} | {tp}/{tp + fn} ({100 * tp / max(tp + fn, 1):.0f} %) | {fp / mpx:.0f} | "
                  f"{fp0 / mpx:.0f} | {np.mean(dpsnr):+.3f} |")


def panel(path: Path, x, clean, outs: dict[str, np.ndarray], crop: int = 72, truth_label: str = "truth") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {truth_label: clean, "input": x, **outs}
    scale = float(np.subtract(*np.percentile(clean, [99.5, 0.5])))
    lo, hi = np.percentile(clean, [0.5, 99.5])
    fig, axes = plt.subplots(2, len(images), figsize=(2.6 * len(images), 5.6), squeeze=False)
    y0, x0 = (clean.shape[0] - crop) // 2, (clean.shape[1] - crop) // 2
    for c, (name, im) in enumerate(images.items()):
        dots = single_pixel_dots(im, scale).mean() * 1e6
        for r, view in enumerate((im, im[y0:y0 + crop, x0:x0 + crop])):
            ax = axes[r, c]
            ax.imshow(view, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.axis("off")
        title = name if name in (truth_label, "input") or truth_label != "truth" else f"{name}\n{psnr(im, clean):.2f} dB"
        axes[0, c].set_title(f"{title}\ndots {dots:.0f}/Mpx", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"panel: {path} (bottom row: the central {crop} px)")


def real_frames(args) -> None:
    """The public raw frames of benchmarks/real_images.py (no truth): adapt on three quadrants around the
    centre of each, judge every method on the fourth (the top-left one, which holds the crop of
    bench_real.py's panel), never seen in training."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from real_images import DEFAULT_CACHE, IMAGES, load

    from stemreg.models.noise_models import estimate_noise_model
    from stemreg.platform.training.adapt import adapt

    base = pretrained.load_pretrained()[0]
    print("| frame | method | dots/Mpx | trust: unsupported dots/Mpx | trust: structure | variance | verdict, reason |")
    print("|---|---|---|---|---|---|---|")
    outs_all = {}
    for image in (im for im in IMAGES if im.role == "raw"):
        data, pixel_pm = load(image, DEFAULT_CACHE)
        h, w, q = data.shape[0] // 2, data.shape[1] // 2, args.real_px
        quads = [data[y:y + q, x:x + q].astype(np.float32) for y in (h - q, h) for x in (w - q, w)]
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
            files = []
            for i, quad in enumerate(quads[1:]):
                files.append(str(Path(tmp) / f"{image.name}_{i}.npy"))
                np.save(files[-1], quad)
            result = adapt("low-dose", files, epochs=args.epochs, steps_per_epoch=args.steps,
                           synthetic_fraction=args.synthetic_fraction, lr=args.lr, keep_residual=not args.direct,
                           register=False, score=False, progress=False)
            os.chdir(cwd)
        x = quads[0]
        methods = {"base": denoise_array(base, x), "base + impulse repair": denoise_array(base, x, impulses=True),
                   "adapted (repairs impulses)": denoise_array(result.network, x)}
        if not args.skip_bm3d:
            methods["BM3D (estimated noise model)"] = denoise_classical(x, "bm3d", noise=estimate_noise_model(x), sigma=1.0)
        scale = float(np.subtract(*np.percentile(ndimage.gaussian_filter(x.astype(np.float64), 2.0), [99.5, 0.5])))
        print(f"| {image.name} | input ({result.noise_corr_x[0]:.2f} noise lag-1 corr. along x; adapt {len(result.history)} "
              f"epochs, {result.seconds:.0f} s) | {single_pixel_dots(x, scale).mean() * 1e6:.0f} | | | | |")
        for name, out in methods.items():
            trained = TrainedRange(noise_corr_x=result.noise_corr_x[0]) if name.startswith("adapted") else TrainedRange()
            rep = trust_report(x, out, pixel_size_pm=pixel_pm, trained=trained)
            print(f"| {image.name} | {name} | {single_pixel_dots(out, scale).mean() * 1e6:.0f} | "
                  f"{rep.figures['dots_per_mpx']:.0f} | {max(rep.figures['excess_corr'], rep.figures['missing_corr']):.3f} | "
                  f"{rep.figures['variance_ratio']:.2f} | {rep.verdict}: {rep.reason[:90]} |")
        outs_all[image.name] = (x, methods)
    if args.panel:
        for name, (x, methods) in outs_all.items():
            panel(args.panel.with_name(f"{args.panel.stem}_{name}{args.panel.suffix}"), x,
                  ndimage.gaussian_filter(x.astype(np.float64), 2.0), methods, truth_label="input smoothed (2 px)")


def condition_raw(args) -> None:
    """bench_real.py's simulated raw frames of the condition (its own detector draws, ADU in, the known
    calibration back), scored by bench_real.py's own code: the base with and without the impulse repair."""
    import copy
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_real import RAW_SEED, print_table, score_raw_sim

    from stemreg.models.impulses import DEFAULT_K

    base = pretrained.load_pretrained()[0]
    repaired = copy.deepcopy(base)
    repaired.impulse_k = DEFAULT_K
    cond = load_condition("low-dose")
    rows, dots = score_raw_sim(cond, {"base": base, "base + impulse repair": repaired}, args.condition_raw,
                               256, args.skip_bm3d)
    print_table(f"simulated raw frames ({cond.benchmark_id()}, seed {RAW_SEED}; bench_real.py's set)", rows)
    print("dots (bench_real.py's dot_fraction, share of pixels): "
          + ", ".join(f"{k} {100 * np.mean(v):.3f} %" for k, v in dots.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lab", type=int, default=8)
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--bandwidth-px", type=float, default=1.5, help="detector time constant along x, px")
    parser.add_argument("--defects", type=float, default=0.002, help="share of defective pixels")
    parser.add_argument("--glitch-rate", type=float, default=0.005, help="share of lost scan lines")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--synthetic-fraction", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--direct", action="store_true",
                        help="direct output (N2V's way) instead of keeping the base's residual skip")
    parser.add_argument("--skip-bm3d", action="store_true")
    parser.add_argument("--panel", type=Path, default=None)
    parser.add_argument("--real", action="store_true", help="the public raw frames (no truth) instead")
    parser.add_argument("--real-px", type=int, default=384, help="quadrant edge cut from each real frame's centre")
    parser.add_argument("--condition-raw", type=int, default=0,
                        help="instead: this many of bench_real.py's simulated raw frames, base with/without repair")
    parser.add_argument("--impulse-check", action="store_true", help="only the impulse test's rates over the range")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.impulse_check or args.real or args.condition_raw:
        (impulse_check if args.impulse_check else real_frames if args.real else condition_raw)(args)
        print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
              f"{time.perf_counter() - started:.0f} s")
        return

    from stemreg.platform.training.adapt import adapt

    cond = lab_condition(args.bandwidth_px, args.defects, args.glitch_rate)
    lab = list(cond.sample_pairs(args.lab, size_px=args.size, seed=300).degraded)
    test = cond.sample_pairs(args.test, size_px=args.size, seed=400)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # a throwaway MLflow store
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        files = []
        for i, frame in enumerate(lab):
            files.append(str(Path(tmp) / f"lab_{i:02d}.npy"))
            np.save(files[-1], frame)
        result = adapt("low-dose", files, epochs=args.epochs, steps_per_epoch=args.steps,
                       synthetic_fraction=args.synthetic_fraction, lr=args.lr, keep_residual=not args.direct,
                           register=False, score=False, progress=False)
        os.chdir(cwd)
    print(f"adapt: {result.mode}, blind spot +-{result.struct_px} px along x (lab noise lag 1-3 correlation "
          f"{', '.join(f'{c:.2f}' for c in result.noise_corr_x)}), held-out loss {result.val_loss:.4f}, "
          f"{len(result.history)} epochs, {result.seconds:.0f} s; lab files {len(result.lab_files)}, "
          f"held out {len(result.held_out_files)}")
    base = pretrained.load_pretrained()[0]
    adapted = result.network
    ranges = {"base": TrainedRange(), "adapted": TrainedRange(noise_corr_x=result.noise_corr_x[0])}
    methods = {
        "base": lambda x, p: denoise_array(base, x),
        "base + impulse repair": lambda x, p: denoise_array(base, x, impulses=True),
        "adapted (repairs impulses)": lambda x, p: denoise_array(adapted, x),
        "adapted, repair off": lambda x, p: denoise_array(adapted, x, impulses=False),
    }
    if not args.skip_bm3d:
        methods["BM3D (oracle noise model)"] = lambda x, p: denoise_classical(
            x, "bm3d", noise=noise_model_from_params(p), sigma=1.0)
        methods["BM3D + impulse repair"] = lambda x, p: denoise_classical(
            repair_impulses(x)[0], "bm3d", noise=noise_model_from_params(p), sigma=1.0)
    rows: dict[str, list[dict]] = {"input": [], "truth": [], **{m: [] for m in methods}}
    outs_first: dict[str, np.ndarray] = {}
    for i, (x, c, p) in enumerate(zip(test.degraded, test.clean, test.params)):
        rows["input"].append(figures(x, x, c, p, None))
        rows["truth"].append(figures(x, c, c, p, None))
        for name, fn in methods.items():
            out = fn(x, p)
            trained = ranges["adapted" if name.startswith("adapted") else "base"]
            rows[name].append(figures(x, out, c, p, trained if not name.startswith("BM3D") else TrainedRange()))
            if i == 0:
                outs_first[name] = out
    print(f"\n{args.test} test frames of {args.size} px (seed 400), bandwidth {args.bandwidth_px} px, "
          f"{100 * args.defects:g} % defective pixels, {100 * args.glitch_rate:g} % lost lines; adapt "
          f"{args.epochs} x {args.steps} steps on {args.lab} lab frames (seed 300)")
    print_table(rows)
    if args.panel:
        keep = [m for m in ("base", "base + impulse repair", "adapted (repairs impulses)", "BM3D (oracle noise model)")
                if m in outs_first]
        panel(args.panel, test.degraded[0], test.clean[0], {m: outs_first[m] for m in keep})
    print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
