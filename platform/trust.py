"""The trust report of a registered model's output: the model's trained range, read from its tags and
its condition, composed with the pure statistics of :mod:`stemreg.models.trust`.

`stemreg denoise`, :func:`stemreg.denoise` (``report=True``), the server and the napari widget call
:func:`report_for`.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.acquisition.detector import lowpass_coefficient
from stemreg.models.trust import TrainedRange, TrustReport, trust_report
from stemreg.models.trust_stats import input_noise, peak_counts

#: Images simulated (per end of the dose range) to find the detected electrons a condition spans.
_RANGE_IMAGES = 6


_COUNTS_CACHE: dict[tuple[str, str, bool], tuple[float, float]] = {}


def _counts_range(cond: Any, detector: bool) -> tuple[float, float]:
    from stemreg.acquisition.detector import IDEAL_DETECTOR

    # the dose check reads the brightest columns' electrons, a HAADF notion: the range is of HAADF images
    # (a condition whose range also holds bright field, since simulator revision 4, would else reach
    # counts no HAADF column has)
    if getattr(cond, "bright_field_fraction", 0.0):
        cond = cond.model_copy(update={"bright_field_fraction": 0.0})
    if not detector:
        cond = cond.model_copy(update=IDEAL_DETECTOR)
    dose = cond.dose_scale if isinstance(cond.dose_scale, tuple) else (cond.dose_scale, cond.dose_scale)
    values = []
    for k, scale in enumerate(dose):
        # the clean signal stands in for a perfect output: the range is of the data, not of a model
        batch = cond.model_copy(update={"dose_scale": float(scale)}).sample_pairs(
            _RANGE_IMAGES, size_px=128, seed=7100 + k)
        for noisy, clean in zip(batch.degraded, batch.clean):
            values.append(peak_counts(clean, input_noise(noisy, clean)))
    return float(np.min(values)), float(np.max(values))


def counts_range(condition: Any, *, detector: bool = True) -> tuple[float, float]:
    """Detected electrons per pixel at the brightest columns over a condition's dose range (cached);
    ``detector=False``: with an ideal detector (what models trained before the detector physics saw)."""
    key = (condition.name, condition.hash(), detector)  # the condition itself: it may come from a YAML file
    if key not in _COUNTS_CACHE:
        _COUNTS_CACHE[key] = _counts_range(condition, detector)
    return _COUNTS_CACHE[key]


def trained_range(tags: dict[str, str] | None, condition: Any = None) -> TrainedRange:
    """What a model was trained on: sampling from its tags, dose from its condition, contrast from
    ``trust.contrast`` (default HAADF), the noise correlation from its condition's detector bandwidth
    (``condition.bandwidth_px``) or ``trust.noise_corr_x`` (set by `stemreg adapt`), else none."""
    tags = tags or {}
    pixel = None
    raw = tags.get("trained_pixel_size_pm") or tags.get("condition.pixel_size_pm")
    if raw:
        try:
            value = json.loads(raw)
            pixel = (float(value), float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))
        except (TypeError, ValueError, IndexError):
            pixel = None
    if pixel is None and condition is not None:
        pixel = condition.pixel_size_range_pm()
    corr = 0.0
    trained_on_detector = "condition.bandwidth_px" in tags
    try:
        # a model trained on the detector physics (simulator revision 4) saw the fast-scan bandwidth's
        # noise correlation up to its condition's largest bandwidth; an older model (no such tag) none
        bandwidth = json.loads(tags.get("condition.bandwidth_px", "0"))
        corr = lowpass_coefficient(float(max(bandwidth) if isinstance(bandwidth, list) else bandwidth))
        corr = max(corr, float(tags.get("trust.noise_corr_x", 0.0)))
    except (TypeError, ValueError):
        pass
    counts = counts_range(condition, detector=trained_on_detector) if condition is not None else None
    try:
        bright_field = float(json.loads(tags.get("condition.bright_field_fraction", "0"))) > 0
    except (TypeError, ValueError):
        bright_field = False
    return TrainedRange(pixel_size_pm=pixel, peak_counts=counts, contrast=tags.get("trust.contrast", "haadf"),
                        noise_corr_x=corr, bright_field_seen=bright_field)


@lru_cache(maxsize=32)
def _model_range(condition_name: str | None, tags: tuple[tuple[str, str], ...]) -> TrainedRange:
    """:func:`trained_range` of a model's condition and tags, once per model: reading the condition
    (every YAML file of the package) took longer than half the report's statistics, per request."""
    from stemreg.acquisition import load_condition

    condition = None
    if condition_name:
        try:
            condition = load_condition(condition_name)
        except Exception:  # a condition unknown here: the dose check is skipped, the rest stands
            condition = None
    return trained_range(dict(tags), condition)


def report_for(model: Any, noisy: np.ndarray, denoised: np.ndarray, *, pixel_size_pm: float | None = None,
               with_map: bool = False) -> TrustReport | list[TrustReport]:
    """The trust report of a loaded model's output (one per image of a stack).

    Parameters
    ----------
    model
        A :class:`~stemreg.platform.prediction.LoadedModel` (its ``tags`` and ``condition`` set the range).
    noisy, denoised
        ``(H, W)`` or ``(N, H, W)``, the model's input and output.
    pixel_size_pm
        The image's sampling when known.
    """
    tags = getattr(model, "tags", None) or {}
    condition = getattr(model, "condition", None) or None
    key = tuple(sorted((str(k), str(v)) for k, v in tags.items()))
    trained = (_model_range(condition, key) if condition is None or isinstance(condition, str)
               else _model_range.__wrapped__(condition, key))  # a Condition object: not hashable
    noisy, denoised = np.asarray(noisy), np.asarray(denoised)
    if noisy.ndim == 3:
        return [trust_report(a, b, pixel_size_pm=pixel_size_pm, trained=trained, with_map=with_map)
                for a, b in zip(noisy, denoised)]
    return trust_report(noisy, denoised, pixel_size_pm=pixel_size_pm, trained=trained, with_map=with_map)


#: The server judges at most this central square of the first image: the report's figures are
#: image-level, and the cost stays bounded whatever the upload's size. 192 px is the size the
#: thresholds were set and their hit and false-alarm rates measured at (benchmarks/bench_trust.py's
#: ``--size``; at 128 px the false alarms rose to 10 %); 256 px cost 1.8x as much per answer.
HEADER_CROP_PX = 192


def served_report(model: Any, noisy: np.ndarray, denoised: np.ndarray,
                  pixel_size_pm: float | None = None) -> TrustReport | None:
    """The trust report of a served answer, from a central crop of the first image (see
    :data:`HEADER_CROP_PX`); None when the image is too small to judge (under 16 px) or not finite."""
    noisy, denoised = np.asarray(noisy), np.asarray(denoised)
    if noisy.ndim == 3:
        noisy, denoised = noisy[0], denoised[0]
    if noisy.ndim != 2 or denoised.shape != noisy.shape or min(noisy.shape) < 16:
        return None
    h, w = noisy.shape
    top, left = max(0, (h - HEADER_CROP_PX) // 2), max(0, (w - HEADER_CROP_PX) // 2)
    crop = (slice(top, top + HEADER_CROP_PX), slice(left, left + HEADER_CROP_PX))
    try:
        return report_for(model, noisy[crop], denoised[crop], pixel_size_pm=pixel_size_pm)
    except ValueError:  # non-finite output: the answer itself says so; no verdict to give
        return None


def header_for(model: Any, noisy: np.ndarray, denoised: np.ndarray, pixel_size_pm: float | None = None) -> str | None:
    """The ``X-Stemreg-Trust`` header value (``verdict; reason``) of a served answer, or None."""
    report = served_report(model, noisy, denoised, pixel_size_pm)
    return report.header() if report is not None else None


def map_path(out: Path) -> Path:
    """Where `stemreg denoise --trust-map` writes a map: beside the output, ``<name>.trust.tif`` (float32
    keeps the z-scores, whatever the output's format)."""
    return out.with_name(out.stem + ".trust.tif")


def trust_line(trust: dict | list) -> str:
    """``verdict (reason)`` of a report's dict; for a stack, the count per verdict and the first doubt."""
    if isinstance(trust, dict):
        return f"{trust['verdict']} ({trust['reason']})"
    counts = {v: sum(t["verdict"] == v for t in trust) for v in ("ok", "doubtful", "out of range")}
    worst = next((t for t in trust if t["verdict"] != "ok"), trust[0])
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" ({worst['reason']})"
