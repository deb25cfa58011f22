"""stemreg: CNN denoisers for low-dose, atomic-resolution STEM images.

The Python API in three functions; the `stemreg` command, the HTTP server
and the MLflow pyfunc predict through the same path.

- :func:`denoise`: denoise an array, an image file or a HyperSpy `Signal2D`
  with a condition's registered model (its champion by default);
- :func:`load_model`: load that model once, for many calls;
- :func:`simulate`: degraded/clean image pairs of an acquisition condition.

Examples
--------
>>> import stemreg
>>> pairs = stemreg.simulate("low-dose", 2, seed=1)
>>> pairs.degraded.shape
(2, 256, 256)
>>> clean = stemreg.denoise(pairs.degraded[0], condition="low-dose")  # doctest: +SKIP

Importing this package is light: numpy, torch and MLflow load on first use.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

# `stemreg.platform` is a folder without __init__.py (DESIGN's packaging note: it would shadow the
# standard library's `platform`). Installed from a wheel it is an ordinary namespace subfolder; an
# editable install resolves such folders through a path entry that setuptools puts on sys.path,
# which the lookup of a regular package's submodules reaches only through the package's __path__.
__path__ += [entry for entry in sys.path if entry.startswith("__editable__.") and entry not in __path__]

if TYPE_CHECKING:
    from stemreg.acquisition import ConditionLike, PairBatch
    from stemreg.platform.prediction import LoadedModel

__all__ = ["denoise", "load_model", "simulate"]


def denoise(image: Any, *, condition: "ConditionLike | None" = None, alias: str = "champion", model: "LoadedModel | None" = None,
            tracking_uri: str | None = None, params: dict | None = None, report: bool = False) -> Any:
    """Denoise a low-dose STEM image with a condition's registered model.

    Parameters
    ----------
    image : numpy.ndarray, dask.array.Array, str, pathlib.Path, ImageWithCalibration or hyperspy Signal2D
        A float image `(H, W)` or stack `(N, H, W)`; a file (.tif/.tiff,
        .png, .npy, .dm3/.dm4, .emd, .hspy); or a HyperSpy `Signal2D`.
        A Dask array or a lazy signal (``hs.load(..., lazy=True)``) is
        denoised lazily: frames map over chunks of whole frames, the model
        is loaded once per Dask worker (sha256 verified), and nothing is
        computed until the caller asks (``.compute()``, ``.save()``).
    condition : str or Condition, optional
        The acquisition condition whose model to use (`stemreg conditions`
        lists them), e.g. ``"low-dose"``. Needed unless ``model`` is given.
    alias : str, default "champion"
        Registered alias (``champion``, ``challenger``) or version number.
    model : LoadedModel, optional
        A model from :func:`load_model`, to load once and denoise many images.
    tracking_uri : str, optional
        The MLflow store holding the models; default ``MLFLOW_TRACKING_URI``,
        else ``sqlite:///mlflow.db`` in the working directory.
    params : dict, optional
        Tiling options: ``tile_px``, ``overlap_px``, ``batch_size``.
    report : bool, default False
        Also return a trust report, judged from the input and the output alone
        (no clean image): ``(denoised, trust)``; ``trust.verdict`` is ``ok``,
        ``doubtful`` or ``out of range``, ``trust.reason`` says why,
        ``trust.figures`` holds every figure and ``trust.map`` where the
        residual holds structure (a list of reports for a stack).

    Returns
    -------
    numpy.ndarray, ImageWithCalibration or Signal2D
        The kind that came in: an array for an array (float32, same shape);
        for a file path an ``ImageWithCalibration`` with the file's pixel
        size; for a ``Signal2D`` a new signal with the same axes (scale,
        units) and metadata; for lazy input a lazy result of the same shape
        and calibration, whose values are those of the in-memory path.

    Raises
    ------
    stemreg.platform.registry.NotRegisteredError
        No model registered for the condition, or none behind the alias.
    stemreg.acquisition.ImageReadError
        The file cannot be read as an image.
    ValueError
        The array is not `(H, W)` / `(N, H, W)`, is empty or holds NaN/Inf.

    Examples
    --------
    >>> import numpy as np, stemreg
    >>> noisy = np.load("scan.npy")                                   # doctest: +SKIP
    >>> clean = stemreg.denoise(noisy, condition="low-dose")          # doctest: +SKIP
    >>> image = stemreg.denoise("scan.dm4", condition="defocus")      # doctest: +SKIP
    >>> image.calibration.pixel_size_pm()                             # doctest: +SKIP
    8.0
    >>> import hyperspy.api as hs                                     # doctest: +SKIP
    >>> signal = hs.load("scan.emd")                                  # doctest: +SKIP
    >>> stemreg.denoise(signal, condition="low-dose").axes_manager    # doctest: +SKIP
    >>> clean, trust = stemreg.denoise(noisy, condition="low-dose", report=True)  # doctest: +SKIP
    >>> trust.verdict, trust.reason                                   # doctest: +SKIP
    ('ok', "residual looks like the input's noise (variance 1.01x, no structure, no dots)")
    >>> series = hs.load("series.zspy", lazy=True)                    # doctest: +SKIP
    >>> stemreg.denoise(series, condition="low-dose").save("clean.zspy")  # doctest: +SKIP
    """
    from stemreg.errors import BadInputError
    from stemreg.platform.lazy import denoise_lazy_input, is_lazy
    from stemreg.platform.prediction import (LoadedModel, denoise as _denoise,  # mlflow, torch: now
                                             load_model as _load_model)

    if params is not None and not isinstance(params, dict):
        raise BadInputError(f"params must be a dict of tiling settings (tile_px, overlap_px, ...) or None, "
                            f"got {type(params).__name__}")
    if model is not None and not isinstance(model, LoadedModel):
        raise BadInputError(f"model must be what stemreg.load_model() returns (or None: the condition's "
                            f"{alias}), got {type(model).__name__}")
    if is_lazy(image):  # a Dask array or a lazy signal: a lazy result; workers load the model themselves
        if report:
            raise BadInputError("report=True needs the values: compute a lazy input first, or denoise it "
                                "without report")
        model = model or _load_model(condition, alias=alias, tracking_uri=tracking_uri)
        return denoise_lazy_input(image, model, params=params, tracking_uri=tracking_uri)
    return _denoise(image, condition=condition, alias=alias, model=model, tracking_uri=tracking_uri, params=params,
                    report=report)


def load_model(condition: "ConditionLike | None" = None, *, alias: str = "champion", model_uri: str | None = None,
               tracking_uri: str | None = None, fallback_pretrained: bool = True) -> "LoadedModel":
    """Load a condition's registered denoiser (or any stemreg model URI) once.

    Parameters
    ----------
    condition : str or Condition, optional
        The acquisition condition; the model is ``stem-denoiser-<condition>``.
    alias : str, default "champion"
        Registered alias or version number.
    model_uri : str, optional
        Instead of ``condition``: an MLflow model URI or a local model folder.
    tracking_uri : str, optional
        The MLflow store; default as for :func:`denoise`.
    fallback_pretrained : bool, default True
        With nothing registered for the condition, the champion is the pretrained base that
        ships with stemreg (``.name`` says so, ``.version`` is None).

    Returns
    -------
    LoadedModel
        ``.predict(array)`` denoises; ``.name``, ``.version``, ``.model_uri``
        say what was loaded. Pass it to :func:`denoise` as ``model=``.

    Examples
    --------
    >>> import stemreg
    >>> model = stemreg.load_model("low-dose")                         # doctest: +SKIP
    >>> model.version                                                  # doctest: +SKIP
    '3'
    >>> outputs = [stemreg.denoise(f, model=model) for f in files]     # doctest: +SKIP
    """
    from stemreg.platform.registry.loading import load_model as _load_model

    return _load_model(condition, alias=alias, model_uri=model_uri, tracking_uri=tracking_uri,
                       fallback_pretrained=fallback_pretrained)


def simulate(condition: "ConditionLike", n: int, *, seed: int = 0, size_px: int | None = None) -> "PairBatch":
    """Simulate ``n`` degraded/clean image pairs of an acquisition condition.

    Parameters
    ----------
    condition : str, path or Condition
        A built-in condition name (``"low-dose"``, ``"defocus"``, ...) or a
        condition YAML file.
    n : int
        Number of pairs.
    seed : int, default 0
        The same seed gives the same images (the benchmark's seed is refused).
    size_px : int, optional
        Image edge in pixels; default the condition's.

    Returns
    -------
    PairBatch
        ``degraded`` and ``clean`` float32 stacks `(n, H, W)`, ``columns``
        (atomic column positions per image, pixels), ``params`` (the
        physical parameters drawn per image), ``pixel_size_pm``.

    Examples
    --------
    >>> import stemreg
    >>> pairs = stemreg.simulate("low-dose", 2, seed=1, size_px=64)
    >>> pairs.degraded.shape, pairs.clean.dtype
    ((2, 64, 64), dtype('float32'))
    """
    from stemreg.acquisition import load_condition

    cond = load_condition(condition)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        from stemreg.errors import BadInputError

        raise BadInputError(f"n must be a whole number of at least 1, got {n!r}")
    return cond.sample_pairs(n, size_px=size_px, seed=seed)
