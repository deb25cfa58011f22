"""Open a registered version the one way every consumer does: its own artifacts, sha256 verified.

`stemreg denoise`, the Python API and `stemreg serve` load through
:func:`stemreg.platform.prediction.load_version`, and promotion checks a candidate
(:func:`check_runs`), all through :func:`open_version`: the version's artifacts from
this store's location (a copied project reads its own), the weights and architecture
compared with the sha256 recorded at registration, then rebuilt by the installed package.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from stemreg.models.prediction import ModelLoadError, load_pyfunc, predict
from stemreg.platform.store import local_artifacts


def open_version(client: Any, version: Any) -> Any:
    """The pyfunc of a registered `ModelVersion`, read from its own artifacts and verified.

    Raises
    ------
    ModelLoadError
        Unreadable or missing artifacts, a sha256 mismatch, weights that cannot be read (truncated).
    """
    location = local_artifacts(client.get_model_version_download_uri(version.name, version.version),
                               client.tracking_uri)
    return load_pyfunc(location, expected=dict(version.tags or {}))


def check_runs(client: Any, version: Any, image: np.ndarray) -> Any:
    """Open ``version`` (:func:`open_version`) and denoise ``image`` with it; returns the pyfunc.

    Raises
    ------
    ModelLoadError
        It cannot be loaded, fails on the image, or answers a wrong shape or non-finite pixels
        (the message says which; one line).
    """
    pyfunc = open_version(client, version)
    image = np.asarray(image, dtype=np.float32)
    try:
        out = np.asarray(predict(pyfunc, image), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - a damaged network fails in many ways
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"it fails on a benchmark image: {text}") from None
    if out.shape != image.shape:
        raise ModelLoadError(f"it answers shape {list(out.shape)} for a benchmark image of shape "
                             f"{list(image.shape)}")
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise ModelLoadError(f"its output on a benchmark image is not finite ({bad} of {out.size} pixels "
                             "NaN or Inf)")
    return pyfunc
