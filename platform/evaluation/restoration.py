"""The classical restoration rows: BM3D then deconvolution, scan-line alignment then BM3D, each given
the oracle degradation of every image (its exact PSF, its hysteresis and jitter spread).

- ``bm3d-wiener`` / ``bm3d-rl``: BM3D in the Anscombe domain with each image's noise model, then
  Wiener / Richardson-Lucy deconvolution with the image's exact PSF
  (:func:`stemreg.acquisition.optics.degradation_psf`); BM3D's strength, the Wiener balance and
  the RL iterations are fitted on validation images (never the test images);
- ``align-bm3d``: the line-start hysteresis undone with its known amplitude and decay, each line's
  jitter estimated against its neighbours and undone (shifts searched within 3x the jitter's known
  spread), then BM3D.

These are upper bounds for the classical route: a microscopist would have to estimate the PSF.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from stemreg.models.classical import estimate_noise_model, fit_classical
from stemreg.models.config import TrainBudget
from stemreg.models.restoration import align_scan_lines, deconvolve, fit_deconvolution
from stemreg.models.scoring import PredictFn
from stemreg.platform.evaluation.data import TestSet, _Data

RESTORATION: tuple[str, ...] = ("bm3d-wiener", "bm3d-rl", "align-bm3d")
#: Bump when a restoration method changes: cached rows of another version are not reused.
RESTORATION_VERSION = "1"

DESCRIPTIONS: dict[str, str] = {
    "bm3d-wiener": "BM3D + GAT (noise model per image), then Wiener deconvolution with the image's exact PSF "
                   "(oracle); strengths fitted on validation",
    "bm3d-rl": "BM3D + GAT (noise model per image), then Richardson-Lucy deconvolution with the image's exact "
               "PSF (oracle); strengths fitted on validation",
    "align-bm3d": "scan-line alignment (known hysteresis undone, each line's jitter estimated against its "
                  "neighbours), then BM3D + GAT; strength fitted on validation",
}


def applies(method: str, condition: Any) -> bool:
    """Whether a restoration row has anything to undo in ``condition`` (others always apply)."""
    if method in ("bm3d-wiener", "bm3d-rl"):
        return _present(condition, "blur_sigma_px") or _present(condition, "defocus_nm")
    if method == "align-bm3d":
        return _present(condition, "hysteresis_amplitude_px") or _present(condition, "jitter_px")
    return True


def _present(condition: Any, name: str) -> bool:
    value = getattr(condition, name, 0.0)
    return any(float(v) != 0.0 for v in (value if isinstance(value, (tuple, list)) else (value,)))


def _align(image: np.ndarray, degradation: dict[str, Any] | None) -> np.ndarray:
    if degradation is None:
        return np.asarray(image, np.float32)
    jitter = degradation["jitter_px"]
    return align_scan_lines(image, hysteresis_amplitude_px=degradation["hysteresis_amplitude_px"],
                            hysteresis_decay_px=degradation["hysteresis_decay_px"],
                            max_shift_px=max(3.0 * jitter, 0.5), jitter_px=jitter,
                            iterations=2 if jitter > 0 else 0)


def build_restoration(method: str, data: _Data, budget: TrainBudget, test: TestSet
                      ) -> tuple[list[PredictFn], str, dict[str, Any]]:
    """One predict function per test image for a restoration row, fitted on validation images."""
    n = budget.n_classical_val
    val_degraded, val_clean = data.val_degraded[:n], data.val_clean[:n]
    val_noise, val_degradations = data.val_noise_models(n), data.val_degradations(n)
    noise = [m if m is not None else estimate_noise_model(image) for m, image in zip(test.noise_models, test.degraded)]
    if method == "align-bm3d":
        aligned = np.stack([_align(image, d) for image, d in zip(val_degraded, val_degradations)])
        fitted = fit_classical("bm3d", aligned, val_clean, noise=val_noise)

        def aligned_then_bm3d(model: Any, degradation: Any) -> PredictFn:
            denoiser = fitted.with_noise(model)
            return lambda image: denoiser(_align(image, degradation))

        per_image = [aligned_then_bm3d(m, d) for m, d in zip(noise, test.degradations)]
        details = {**fitted.describe(), "alignment": "hysteresis (oracle) + per-line jitter estimated"}
        return per_image, f"{test.noise_source}, oracle hysteresis, BM3D fitted on {n} validation images", details
    kind = {"bm3d-wiener": "wiener", "bm3d-rl": "rl"}[method]
    fitted = fit_classical("bm3d", val_degraded, val_clean, noise=val_noise)
    denoised = [fitted.with_noise(m)(image) for image, m in zip(val_degraded, val_noise)]
    strength, val_psnr = fit_deconvolution(kind, denoised, val_clean, [d["psf"] for d in val_degradations])

    def bm3d_then_deconvolve(model: Any, degradation: Any) -> PredictFn:
        denoiser = fitted.with_noise(model)
        psf = None if degradation is None else degradation["psf"]
        return lambda image: deconvolve(denoiser(image), psf, kind, strength)

    per_image = [bm3d_then_deconvolve(m, d) for m, d in zip(noise, test.degradations)]
    details = {**fitted.describe(), "deconvolution": kind,
               ("balance" if kind == "wiener" else "iterations"): strength, "deconvolution_val_psnr": val_psnr,
               "psf": "exact per image (oracle)"}
    return per_image, f"{test.noise_source}, oracle PSF, strengths fitted on {n} validation images", details
