"""Evaluate denoisers on a lab's raw images, where no clean image exists: trust figures per method.

`stemreg evaluate --images DIR --raw`. PSNR needs a truth; the trust report does not
(:mod:`stemreg.models.trust`). Each method denoises every image of DIR and is judged from the input
and its output alone: the verdicts, the residual variance against the input's noise (~1), the
residual structure (lag 1-3 correlation beyond or short of the input noise's), the share of the
lattice found in the residual, and single-pixel dots the input does not hold.

Methods: the condition's champion, its challenger (e.g. a version made by `stemreg adapt`), BM3D
(GAT, each image's own noise model estimated from it) and an N2V-style blind-spot hourglass trained
here on DIR itself (no clean image; the blind spot covers the correlated neighbours along x).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stemreg.acquisition.frames import read_noisy_images
from stemreg.models.architectures import build_model
from stemreg.models.classical import denoise_classical, estimate_noise_model
from stemreg.models.inference import denoise_array
from stemreg.models.training import TrainConfig, train
from stemreg.models.trust import TrainedRange, trust_report
from stemreg.platform.errors import BadInputError
from stemreg.platform.registry import NotRegisteredError
from stemreg.platform.trust import trained_range

log = logging.getLogger(__name__)

RAW_METHODS = ("champion", "challenger", "bm3d", "n2v")
#: Blind-spot training steps of the N2V baseline per budget.
N2V_STEPS = {"tiny": 20, "quick": 300, "full": 3000}


@dataclass
class RawRow:
    """One method's trust figures over the images (means; verdict counts)."""

    method: str
    source: str
    verdicts: dict[str, int]
    variance_ratio: float
    residual_structure: float
    lattice_removed: float
    dots_per_mpx: float
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _registered(condition: Any, alias: str) -> tuple[Callable[[np.ndarray], np.ndarray], str, TrainedRange] | None:
    from stemreg.platform.prediction import load_model

    try:
        model = load_model(condition, alias=alias, fallback_pretrained=alias == "champion")
    except NotRegisteredError:
        return None
    label = f"{model.name} v{model.version}" if model.version else str(model.name)
    return (lambda image: np.asarray(model.predict(image), np.float32)), label, trained_range(model.tags, condition)


def _n2v(images: list[np.ndarray], budget: str, struct_px: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    h, w = min(a.shape[0] for a in images), min(a.shape[1] for a in images)
    stack = np.stack([a[:h, :w] for a in images]).astype(np.float32)
    patch = min(64, h, w)
    config = TrainConfig(mode="blind-spot", epochs=1, steps_per_epoch=N2V_STEPS[budget], batch_size=8,
                         patch_px=patch, seed=seed, blind_spot_struct_px=struct_px)
    from stemreg.platform.training.runs import DEFAULT_ARCHITECTURE, canonical_architecture

    network = build_model(canonical_architecture(DEFAULT_ARCHITECTURE))
    network = train(network, config, train_data=stack, val_data=None, progress=False).model
    return lambda image: denoise_array(network, image)


def evaluate_raw(condition: Any, images_dir: str | Path, *, methods: tuple[str, ...] = RAW_METHODS,
                 budget: str = "quick", seed: int = 0) -> list[RawRow]:
    """Trust figures of each method over the raw images of ``images_dir`` (see the module docstring).

    Raises
    ------
    BadInputError
        An unreadable folder or file, or an unknown method.
    """
    from stemreg.platform.training.adapt import noise_corr_along_x, struct_span

    unknown = [m for m in methods if m not in RAW_METHODS]
    if unknown:
        raise BadInputError(f"unknown method(s) {', '.join(unknown)} for raw images; accepted: {', '.join(RAW_METHODS)}")
    try:
        images, calibration, _ = read_noisy_images(images_dir)
    except ValueError as exc:
        raise BadInputError(str(exc).splitlines()[0]) from None
    pixel_size_pm = calibration.pixel_size_pm() if calibration is not None else None
    corr = noise_corr_along_x(images)
    rows = []
    for method in methods:
        if method in ("champion", "challenger"):
            found = _registered(condition, method)
            if found is None:
                log.info("no %s registered for %s: row left out", method, condition.name)
                continue
            run, source, trained = found
        elif method == "bm3d":
            run = lambda image: denoise_classical(image, "bm3d", noise=estimate_noise_model(image), sigma=1.0)  # noqa: E731
            source, trained = "BM3D + GAT, noise model estimated from each image", TrainedRange(contrast=None, noise_corr_x=None)
        else:
            span = struct_span(corr)
            run = _n2v(images, budget, span, seed)
            source = f"blind-spot hourglass trained here on the images ({N2V_STEPS[budget]} steps, +-{span} px along x)"
            trained = TrainedRange(contrast=None, noise_corr_x=corr[0])
        reports = [trust_report(a, run(a), pixel_size_pm=pixel_size_pm, trained=trained) for a in images]
        verdicts = {v: sum(r.verdict == v for r in reports) for v in ("ok", "doubtful", "out of range")}
        rows.append(RawRow(method, source, verdicts,
                           float(np.mean([r.figures["variance_ratio"] for r in reports])),
                           float(np.mean([max(r.figures["excess_corr"], r.figures["missing_corr"]) for r in reports])),
                           float(np.mean([r.figures["lattice_removed"] for r in reports])),
                           float(np.mean([r.figures["dots_per_mpx"] for r in reports])),
                           sorted({r.reason for r in reports if r.verdict != "ok"})[:3]))
    return rows


def raw_table(rows: list[RawRow]) -> str:
    """The rows as a markdown table."""
    lines = ["| method | ok | doubtful | out of range | residual variance | residual structure | lattice removed "
             "| dots/Mpx |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        v = r.verdicts
        lines.append(f"| {r.method} | {v['ok']} | {v['doubtful']} | {v['out of range']} | {r.variance_ratio:.2f} | "
                     f"{r.residual_structure:.3f} | {r.lattice_removed:.2f} | {r.dots_per_mpx:.0f} |")
    return "\n".join(lines)
