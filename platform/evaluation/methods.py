"""The leaderboard's methods: the CNNs trained here (or the registered champion) and the classical filters."""
from __future__ import annotations

import logging
from typing import Any, Sequence

from stemreg.models.architectures import build_model
from stemreg.models.classical import estimate_noise_model, fit_classical
from stemreg.models.config import ArchitectureName, TrainBudget, architecture
from stemreg.models.inference import denoise_array
from stemreg.models.prediction import predict_fn
from stemreg.models.scoring import PredictFn
from stemreg.models.training import pick_device, train
from stemreg.platform.errors import BadInputError
from stemreg.platform.evaluation.data import TestSet, _Data
from stemreg.platform.evaluation.restoration import DESCRIPTIONS as RESTORATION_DESCRIPTIONS
from stemreg.platform.evaluation.restoration import RESTORATION, applies, build_restoration
from stemreg.platform.prediction import load_model
from stemreg.platform.registry import CHAMPION, NotRegisteredError, model_uri

log = logging.getLogger(__name__)

LEARNED_METHODS: tuple[str, ...] = ("hourglass", "hourglass-family", "autoencoder", "sdndti", "n2v")
CLASSICAL: tuple[str, ...] = ("gaussian", "nlm", "tv", "wavelet", "bm3d")
METHODS: tuple[str, ...] = LEARNED_METHODS + CLASSICAL + RESTORATION
NOISY = "noisy"

METHOD_DESCRIPTIONS: dict[str, str] = {
    NOISY: "noisy input (no denoising)",
    "hourglass": "reverse-hourglass CNN, supervised: the condition's registered champion (what a user gets), "
                 "else the seed's net trained here",
    "hourglass-family": "the reverse-hourglass family's multi-scale member, supervised, trained here at the "
                        "same budget and data as the other CNNs",
    "autoencoder": "STEM denoising autoencoder (Gambini et al. 2023), supervised",
    "sdndti": "DnCNN trained noise2noise on repeats (SDnDTI, Tian et al. 2022), no clean data",
    "n2v": "reverse hourglass trained blind-spot (Noise2Void), no clean data",
    "gaussian": "Gaussian filter, width fitted on validation",
    "nlm": "non-local means in the Anscombe domain (noise model per image), h fitted on validation",
    "tv": "total variation (Chambolle) in the Anscombe domain (noise model per image), weight fitted on validation",
    "wavelet": "wavelet BayesShrink in the Anscombe domain (noise model per image), sigma fitted on validation",
    "bm3d": "BM3D + GAT (exact unbiased inverse), noise model per image, sigma multiplier fitted on validation",
    **RESTORATION_DESCRIPTIONS,
}

#: The family's multi-scale member (models/hourglass.py, ScaledReverseHourglass) as the leaderboard trains it.
FAMILY_MULTISCALE: dict[str, Any] = architecture(ArchitectureName.MULTISCALE)


def default_methods(condition: Any) -> list[str]:
    """Every method that has something to do on ``condition`` (restoration rows only where there is
    blur, defocus or scan distortion to undo)."""
    return [m for m in METHODS if applies(m, condition)]


def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Validate a method list (comma-separated text or a sequence); None means all.

    Raises
    ------
    BadInputError
        Naming the unknown methods and the accepted ones.
    """
    if methods is None:
        return list(METHODS)
    names = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = [m for m in names if m and m != NOISY]  # the noisy row is always there
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise BadInputError(f"unknown method(s) {', '.join(unknown)}; accepted: {', '.join(METHODS)}")
    if not names:
        raise BadInputError(f"no method given; accepted: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def _cnn_predict(model: Any, device: Any) -> PredictFn:
    return lambda image: denoise_array(model, image, device=device)


def _train_cnn(method: str, arch: dict[str, Any], mode: str, train_data: Any, data: _Data, budget: TrainBudget, *,
               seed: int, device: str, use_val: bool, progress: bool) -> tuple[PredictFn, dict[str, Any]]:
    import torch

    # the initial weights from the seed, not from whatever this process drew before (the same row in a
    # worker process, alone or after another CNN, as here)
    torch.manual_seed(seed)
    model = build_model(dict(arch))
    config = budget.train_config(mode, seed=seed, device=device)
    val = (data.val_degraded[:budget.n_val], data.val_clean[:budget.n_val]) if use_val else None
    result = train(model, config, train_data=train_data, val_data=val, progress=progress)
    details = {"architecture": arch, "mode": mode, "epochs": budget.epochs,
               "steps_per_epoch": budget.steps_per_epoch, "batch_size": budget.batch_size,
               "patch_px": budget.patch_px, "train_seconds": round(result.seconds, 2),
               "best_epoch": result.best_epoch, "best_val_psnr": result.best_val_psnr,
               "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
               "clean_images_seen": mode == "supervised"}
    return _cnn_predict(result.model, pick_device(device)), details


def champion_version(condition: Any) -> Any | None:
    """The condition's registered champion (an MLflow model version, not loaded), or None when there is none."""
    from stemreg.platform.registry import resolve

    try:
        return resolve(condition, CHAMPION)
    except NotRegisteredError:
        return None
    except Exception as exc:  # noqa: BLE001 - an unreachable/odd registry means "train here", said in the log
        log.warning("could not look up a registered champion for %s (%s); training one here", condition.name, exc)
        return None


def _registered_champion(condition: Any, version: Any = None) -> tuple[PredictFn, str, dict[str, Any]] | None:
    """The condition's registered champion (or that version of its model) as a predict function, or None
    when there is none."""
    try:
        alias = CHAMPION if version is None else str(version.version)
        model = load_model(condition, alias=alias, fallback_pretrained=False)
    except NotRegisteredError:
        return None
    except Exception as exc:  # noqa: BLE001 - an unreachable/odd registry means "train here", said in the log
        log.warning("could not look up a registered champion for %s (%s); training one here", condition.name, exc)
        return None
    uri = model_uri(condition, CHAMPION)
    tags = model.tags or {}
    details = {"model_uri": uri, "version": model.version, "architecture": tags.get("architecture"),
               "registered_benchmark_id": tags.get("benchmark.id")}
    return predict_fn(model.pyfunc), f"registered champion v{model.version}", details


def _build_method(method: str, condition: Any, data: _Data, budget: TrainBudget, test: TestSet, *, seed: int,
                  device: str, use_registry: bool, progress: bool, champion: Any = None
                  ) -> tuple[PredictFn | list[PredictFn], str, dict[str, Any]]:
    """A predict function for one method (or one per test image), trained or fitted on the shared
    non-benchmark data. ``champion``: the registered version to score as ``hourglass`` (default: the
    condition's champion when ``use_registry``)."""
    if method == "hourglass":
        if use_registry:
            found = _registered_champion(condition, champion)
            if found is not None:
                return found
        predict, details = _train_cnn(method, architecture(ArchitectureName.DEFAULT), "supervised",
                                      (data.train_degraded, data.train_clean), data, budget, seed=seed,
                                      device=device, use_val=True, progress=progress)
        return predict, f"trained here ({budget.name})", details
    if method == "hourglass-family":
        predict, details = _train_cnn(method, dict(FAMILY_MULTISCALE), "supervised",
                                      (data.train_degraded, data.train_clean), data, budget, seed=seed,
                                      device=device, use_val=True, progress=progress)
        return predict, f"trained here ({budget.name}), multi-scale member", details
    if method == "autoencoder":
        predict, details = _train_cnn(method, architecture(ArchitectureName.AUTOENCODER), "supervised",
                                      (data.train_degraded, data.train_clean), data, budget, seed=seed,
                                      device=device, use_val=True, progress=progress)
        return predict, f"trained here ({budget.name})", details
    if method == "sdndti":
        predict, details = _train_cnn(method, architecture(ArchitectureName.DNCNN), "noise2noise",
                                      data.train_repeats, data, budget, seed=seed, device=device, use_val=False, progress=progress)
        details["repeats"] = budget.repeats
        return predict, f"trained here ({budget.name}, {budget.repeats} repeats)", details
    if method == "n2v":
        predict, details = _train_cnn(method, architecture(ArchitectureName.DEFAULT), "blind-spot",
                                      data.train_degraded, data, budget, seed=seed, device=device, use_val=False, progress=progress)
        return predict, f"trained here ({budget.name})", details
    if method in RESTORATION:
        return build_restoration(method, data, budget, test)
    if method in CLASSICAL:
        n = budget.n_classical_val
        val_degraded, val_clean = data.val_degraded[:n], data.val_clean[:n]
        if method == "gaussian":
            fitted = fit_classical(method, val_degraded, val_clean)
            return fitted, f"width fitted on {n} validation images", fitted.describe()
        # each validation image with its own exact noise model, as each test image below
        fitted = fit_classical(method, val_degraded, val_clean, noise=data.val_noise_models(n))
        per_image = [fitted.with_noise(model if model is not None else estimate_noise_model(image))
                     for model, image in zip(test.noise_models, test.degraded)]
        details = {**fitted.describe(), "noise": test.noise_source}
        return per_image, f"{test.noise_source}, strength fitted on {n} validation images", details
    raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")
