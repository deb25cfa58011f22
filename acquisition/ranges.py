"""The parameters a condition may give as a ``[low, high]`` range, drawn per image, and their bounds."""
from __future__ import annotations

import numpy as np

# Parameters that may be a range, drawn per image; the bounds each must respect.
RANGED_PARAMS: dict[str, tuple[float, float]] = {
    "pixel_size_pm": (0.5, 1000.0),
    "dose_scale": (1e-3, 1e3),
    "beam_current_pA": (1e-6, 1e6),    # up to 1 uA: beyond any STEM probe
    "dwell_time_us": (1e-6, 1e6),      # up to 1 s per pixel
    "bias": (0.0, np.inf),
    "defocus_nm": (-1e4, 1e4),
    "source_size_pm": (0.0, 1e3),
    "blur_sigma_px": (0.0, 50.0),
    "hysteresis_amplitude_px": (-100.0, 100.0),
    "hysteresis_decay_px": (0.1, 1e4),
    "jitter_px": (0.0, 20.0),
    "drift_px": (0.0, 100.0),
    "vacancy_fraction": (0.0, 1.0),
    "substitution_fraction": (0.0, 1.0),
    "background_fraction": (0.0, 10.0),
    "lattice_strain": (0.0, 0.3),
    "brightness_spread": (0.0, 2.0),
    "bandwidth_px": (0.0, 20.0),
    "gain_adu_per_e": (0.0, 1e5),      # 0: no ADC, the electrons themselves (the ideal detector)
    "dark_offset_adu": (0.0, 65535.0),
    "impulse_fraction": (0.0, 0.5),
    "line_jump": (0.0, 1.0),
    "line_glitch_rate": (0.0, 0.5),
    "abf_depth": (0.0, 5.0),
}
# Scale parameters, drawn log-uniformly: a range of 5 to 40 pm/px is as much about 5-10 as about 20-40.
LOG_UNIFORM = frozenset({"pixel_size_pm", "dose_scale", "source_size_pm", "gain_adu_per_e"})
