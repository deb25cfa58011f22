"""Bright field: annular bright-field (ABF) images, columns dark on a bright background.

Why drawn within every condition and not a condition of its own (docs/DESIGN.md, "Bright field"):
a condition is what the *acquisition* does to an image (dose, defocus, blur, scan distortion),
and each of those happens to an ABF image as to a HAADF one; ABF is recorded *at the same time*
as HAADF on most aberration-corrected microscopes, and users send both to the same served model.
A separate condition would double every condition (abf-defocus, abf-hysteresis, ...) and make
the user pick the model by contrast. The per-image normalisation leaves the network only the
sign and shape of the contrast to recognise, which a CNN does from the background alone.

The model here, in the fast renderer's terms: ABF contrast grows slowly with the atomic number
(roughly ``Z ** (1/3)``, Findlay et al., Ultramicroscopy 110, 2010: light columns such as oxygen
show), and the transmitted bright-field intensity falls with the projected potential, so

    abf = exp(-abf_depth * H / H99.5)

where ``H`` is the image the renderer makes with ``Z ** (1/3)`` column weights (probe, source, and
the amorphous background at a fifth of its HAADF weight: a thin amorphous layer scatters little
out of the bright-field disc) and ``H99.5`` the columns' 99.5th percentile: a bright background
of 1, columns dipping by ``1 - exp(-abf_depth)`` (14 to 50 % over the default range), never
negative. The ABF detector collects a large part of the direct beam, so its counts are those of
``bf_detector_efficiency`` (0.3 by default, against the HAADF detector's 0.1) times the beam at
the bright background: the bright-field signal's own, higher count level and lower relative
contrast. The multislice library (:mod:`.multislice`) checks the shapes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: Atomic-number exponent of ABF column contrast (HAADF: 1.7).
ABF_Z_EXPONENT = 1.0 / 3.0
#: Weight of the amorphous background in bright field, relative to HAADF.
ABF_BACKGROUND_WEIGHT = 0.2
CONTRASTS = ("haadf", "abf")


def set_contrast(params: dict[str, Any], contrast: str, condition: Any) -> dict[str, Any]:
    """Record an image's contrast in its drawn ``params`` and give it that detector's efficiency."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast {contrast!r}: accepted {', '.join(CONTRASTS)}")
    params["contrast"] = contrast
    params["detector_efficiency"] = float(condition.bf_detector_efficiency if contrast == "abf"
                                          else condition.detector_efficiency)
    return params


def abf_brightness(haadf_brightness: np.ndarray) -> np.ndarray:
    """Column weights for ABF from the HAADF ones (``sum Z^1.7`` -> about ``Z^(1/3)``)."""
    from stemreg.acquisition.specimens import Z_EXPONENT

    return np.asarray(haadf_brightness, np.float64) ** (ABF_Z_EXPONENT / Z_EXPONENT)


def to_bright_field(image: np.ndarray, depth: float, reference: float) -> np.ndarray:
    """``exp(-depth * image / reference)``: the transmitted bright-field intensity."""
    scale = reference if reference > 0 else 1.0
    return np.exp(-depth * np.asarray(image, np.float64) / scale)
