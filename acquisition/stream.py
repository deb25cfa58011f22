"""Training data without re-used noise: clean fields rendered once, every scan and every noise draw fresh.

Rendering a field (specimen, probe, background) is the costly part of the simulation; the scan
(hysteresis, jitter, drift) and the dose noise are cheap. A :class:`FieldPool` keeps a pool of
rendered fields (synthetic, drawn from a condition's ranges, and optionally a lab's own high-dose
images) and answers every :meth:`FieldPool.batch` with random crops whose scan distortion, dose and
noise are drawn afresh, so no two training steps ever see the same noisy patch. A few pool
entries are re-rendered per batch, so over a long run the clean fields keep changing too.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stemreg.acquisition.conditions import Condition, noise_kwargs
from stemreg.acquisition.contrast import set_contrast
from stemreg.acquisition.detector import DETECTOR_KEYS
from stemreg.acquisition.dose import apply_dose_noise
from stemreg.acquisition.io import READ_SUFFIXES, read_image
from stemreg.acquisition.microscope import (Rendered, degrade_field, margin_px, normalise_user_image, render_field,
                                           scan_rendered)


@dataclass
class _Entry:
    rendered: Rendered
    params: dict
    source: str  # "synthetic" or the user file it came from


def _user_rendered(image: np.ndarray, params: dict, pixel_size_pm: float) -> Rendered:
    """A lab's high-dose image as a rendered field: the image is the clean target; the condition's
    extra blur (defocus, image blur) is applied to a reflect-padded copy (see ``degrade_field``)."""
    clean = normalise_user_image(image)
    margin = margin_px(params, pixel_size_pm)
    quiet = {**params, "hysteresis_amplitude_px": 0.0, "jitter_px": 0.0, "drift_px": 0.0}
    padded_clean = np.pad(clean, margin, mode="reflect")
    # degrade_field crops to the input's size: pass the padded image and keep all of it
    degraded = degrade_field(padded_clean, quiet, pixel_size_pm, np.random.default_rng(0))
    return Rendered(clean=clean, degraded_padded=degraded.astype(np.float32), margin=margin,
                    columns=np.zeros((0, 2), dtype=np.float32))


class FieldPool:
    """A pool of rendered fields and a source of fresh (degraded, clean) training patches.

    Parameters
    ----------
    condition : Condition
        Draws each synthetic field's parameters (sampling, probe, specimen) and each patch's dose,
        noise and scan distortion.
    n_fields : int
        Rendered fields held at once.
    size_px : int
        Edge of the synthetic fields (patches are cropped from them).
    seed : int
        The pool's fields and draws follow from it (the same seed, the same stream).
    refresh_per_batch : int
        Pool entries re-rendered after every batch (0: a fixed pool).
    targets : list of (image, pixel_size_pm or None, name), optional
        A lab's clean (high-dose) images, mixed in at ``target_fraction`` of the patches.
    target_fraction : float
        Share of patches cut from ``targets`` (0 to 1).
    perfect_fraction : float
        Share of the synthetic fields drawn as perfect crystals: no vacancies, no substitutions, no
        amorphous background (0: every field from the condition's ranges, the stream unchanged). On a
        perfect lattice every unit cell repeats the others, which a denoiser can pool over (BM3D's block
        matching does); the condition's defects and background teach the opposite.
    low_dose_fraction : float
        Share of the patches whose dose is drawn from the bottom quarter of the condition's dose range
        (log scale; :func:`low_dose_draw`) instead of all of it (0: the stream unchanged).
    """

    def __init__(self, condition: Condition, *, n_fields: int = 256, size_px: int = 256, seed: int,
                 refresh_per_batch: int = 1, targets: list[tuple[np.ndarray, float | None, str]] | None = None,
                 target_fraction: float = 0.0, perfect_fraction: float = 0.0,
                 low_dose_fraction: float = 0.0) -> None:
        if n_fields < 1:
            raise ValueError(f"n_fields must be >= 1 (got {n_fields})")
        if seed == condition.benchmark_seed:
            raise ValueError(f"seed {seed} is the condition's benchmark seed; training draws use another seed")
        if not 0.0 <= target_fraction <= 1.0:
            raise ValueError(f"target_fraction must be within 0..1 (got {target_fraction})")
        for label, share in (("perfect_fraction", perfect_fraction), ("low_dose_fraction", low_dose_fraction)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{label} must be within 0..1 (got {share})")
        if target_fraction > 0 and not targets:
            raise ValueError("target_fraction > 0 needs targets (a lab's high-dose images)")
        self.condition, self.size_px, self.refresh_per_batch = condition, size_px, refresh_per_batch
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
        self.perfect_fraction, self.low_dose_fraction = perfect_fraction, low_dose_fraction
        self.entries = [self._render() for _ in range(n_fields)]
        self.targets = [self._target(img, pm, name) for img, pm, name in (targets or [])]
        self.target_fraction = target_fraction
        self.draws = 0

    # -- the pool --------------------------------------------------------------------------------
    def _render(self) -> _Entry:
        params = self.condition.draw_params(self.rng)
        # the extra draw only when asked for, so that the default stream stays the same bytes
        if self.perfect_fraction and self.rng.random() < self.perfect_fraction:
            params.update(vacancy_fraction=0.0, substitution_fraction=0.0, background_fraction=0.0)
        return _Entry(render_field(params, self.size_px, params["pixel_size_pm"], self.rng), params, "synthetic")

    def _target(self, image: np.ndarray, pixel_size_pm: float | None, name: str) -> _Entry:
        params = self.condition.draw_params(self.rng)
        params["specimen"] = "user"
        # a multislice library's bright-field fields say so in their name (acquisition.multislice)
        set_contrast(params, "abf" if ":abf:" in name else "haadf", self.condition)
        if pixel_size_pm:
            params["pixel_size_pm"] = float(pixel_size_pm)
        return _Entry(_user_rendered(np.asarray(image, dtype=np.float64), params, params["pixel_size_pm"]),
                      params, name)

    @property
    def target_names(self) -> list[str]:
        """The lab files mixed into the stream."""
        return [t.source for t in self.targets]

    def fork(self) -> "FieldPool":
        """An independent pool that draws exactly the stream this one would draw from now on.

        The rendered fields are shared (an entry is replaced, never changed in place), the random
        state is copied: several trainings (a search's trials) see the same patches without
        rendering the pool again.
        """
        twin = copy.copy(self)
        twin.entries = list(self.entries)
        twin.rng = copy.deepcopy(self.rng)
        return twin

    # -- draws -----------------------------------------------------------------------------------
    def batch(self, batch_size: int, patch_px: int) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` fresh (degraded, clean) patches of ``patch_px``, (B, P, P) float32 each.

        Each patch: a random pool entry, a random crop, a fresh scan distortion, a fresh dose
        (the condition's ``dose_scale`` range) and fresh noise.
        """
        rng = self.rng
        degraded = np.empty((batch_size, patch_px, patch_px), dtype=np.float32)
        clean = np.empty_like(degraded)
        for i in range(batch_size):
            use_target = self.targets and rng.random() < self.target_fraction
            pool = self.targets if use_target else self.entries
            entry = pool[rng.integers(len(pool))]
            h, w = entry.rendered.clean.shape
            if min(h, w) < patch_px:
                raise ValueError(f"patch_px {patch_px} exceeds a field of {h}x{w} px ({entry.source})")
            row, col = int(rng.integers(0, h - patch_px + 1)), int(rng.integers(0, w - patch_px + 1))
            # fresh per-patch draws of what varies from scan to scan
            fresh = self.condition.draw_params(rng)
            params = dict(entry.params)
            for key in ("hysteresis_amplitude_px", "hysteresis_decay_px", "jitter_px", "drift_px",
                        "dose_scale", "bias", *DETECTOR_KEYS):
                params[key] = fresh[key]
            params["beam_current_pA"] = fresh["beam_current_pA"]
            if self.low_dose_fraction and rng.random() < self.low_dose_fraction:
                params["dose_scale"] = low_dose_draw(self.condition, rng)
                params["beam_current_pA"] = fresh["beam_current_pA"] / fresh["dose_scale"] * params["dose_scale"]
            signal = scan_rendered(entry.rendered, params, rng, window=(row, col, patch_px))
            degraded[i] = apply_dose_noise(signal, rng, **noise_kwargs(params))
            clean[i] = entry.rendered.clean[row:row + patch_px, col:col + patch_px]
        self.draws += 1
        for _ in range(self.refresh_per_batch):
            self.entries[int(rng.integers(len(self.entries)))] = self._render()
        return degraded, clean


def low_dose_draw(condition: Condition, rng: np.random.Generator) -> float:
    """A dose scale from the bottom quarter of the condition's range, log-uniform (0.25 to 0.5 of the
    condition's point for the default 0.25 to 4): where a denoiser has the fewest counts per column."""
    low, high = (condition.dose_scale, condition.dose_scale) if not isinstance(condition.dose_scale, tuple) \
        else condition.dose_scale
    top = np.exp(np.log(low) + 0.25 * (np.log(high) - np.log(low)))
    return float(np.exp(rng.uniform(np.log(low), np.log(top))))


def targets_tags(targets: list[tuple[np.ndarray, float | None, str]] | None,
                 target_fraction: float) -> dict[str, str]:
    """Tags that say which lab files a training mixed in (``{}`` without targets).

    ``training_data`` (``simulated+lab-targets``), ``lab_targets`` (the file names, JSON, cut at
    4000 characters) and ``lab_target_fraction``: the same words on a registered version, a
    training run and a search's parent run.
    """
    if not targets:
        return {}
    names = [name for _, _, name in targets]
    return {"training_data": "simulated+lab-targets", "lab_targets": json.dumps(names)[:4000],
            "lab_target_fraction": str(target_fraction)}


def load_targets(directory: str | Path, *, min_px: int = 64) -> list[tuple[np.ndarray, float | None, str]]:
    """A lab's high-dose images from ``directory`` as clean targets: ``(image, pixel_size_pm or None, name)``.

    Every format :func:`~stemreg.acquisition.io.read_image` reads; a stack gives one target per frame.

    Raises
    ------
    ValueError
        Not a folder, no readable image in it, or images smaller than ``min_px``.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"--targets {folder}: not a folder; give a folder of high-dose images "
                         f"({', '.join(sorted(READ_SUFFIXES))})")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READ_SUFFIXES
                   and not p.name.endswith(".npy.json"))
    if not paths:
        raise ValueError(f"--targets {folder}: no image files; accepted: {', '.join(sorted(READ_SUFFIXES))}")
    targets = []
    for path in paths:
        image = read_image(path, allow_stack=True)
        frames = image.data if image.data.ndim == 3 else image.data[None]
        if min(frames.shape[1:]) < min_px:
            raise ValueError(f"--targets {path}: {frames.shape[1]}x{frames.shape[2]} px is smaller than the "
                             f"{min_px} px training patches")
        for k, frame in enumerate(frames):
            name = path.name if len(frames) == 1 else f"{path.name}[{k}]"
            targets.append((np.asarray(frame, dtype=np.float64), image.calibration.pixel_size_pm(), name))
    return targets
