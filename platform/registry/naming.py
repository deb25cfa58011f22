"""Names in the registry: one registered model per condition, its aliases, its benchmark tags.

Also the registry's errors, and :func:`as_condition` (a `Condition` from a name or a YAML path).
"""
from __future__ import annotations

import json
from typing import Any

from stemreg.acquisition import load_condition
from stemreg.platform.errors import BadInputError, StemregError

MODEL_PREFIX = "stem-denoiser-"
CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "promotion.history"
# Tag values in the registry may hold 100 000 characters; keep well under it.
MAX_HISTORY_ENTRIES = 200
ALIAS_POLICIES = ("auto", "champion", "challenger", "none")
BENCHMARK_KEYS = ("psnr", "psnr_std", "ssim", "ssim_std", "noisy_psnr", "noisy_ssim", "column_f1",
                  "column_error_pm", "ms_per_mpx", "n_images", "n_bins", "id")
#: Per-bin figures live in `benchmark.<figure>_by_bin` tags (compact JSON {bin: value}).
BY_BIN_SUFFIX = "_by_bin"
#: Figures that may carry per-bin tags; `bm3d_*` appear when the evaluation has scored BM3D.
BY_BIN_FIGURES = ("psnr", "ssim", "noisy_psnr", "noisy_ssim", "column_f1", "column_error_pm",
                  "bm3d_psnr", "bm3d_ssim")


class RegistryError(StemregError):
    """A registry operation that could not be done (the CLI exits 1)."""


class NotRegisteredError(BadInputError):
    """No such registered model, version or alias (the CLI exits 2)."""


class PromotionRefused(RegistryError):
    """Promotion refused: the candidate does not beat the champion."""


#: A `Condition` from a name, a YAML path or a `Condition`: the one converter,
#: :func:`stemreg.acquisition.load_condition`, under the name registry code has long used.
as_condition = load_condition


#: Condition parameters whose degradation a restoration model must undo (besides the noise).
RESTORATION_PARAMS = ("blur_sigma_px", "defocus_nm", "hysteresis_amplitude_px", "jitter_px", "drift_px")


def is_restoration(condition: Any) -> bool:
    """Whether ``condition`` degrades beyond noise (blur, defocus, scan distortion): its models restore."""
    cond = as_condition(condition)

    def present(name: str) -> bool:
        value = getattr(cond, name, 0.0)
        return any(float(v) != 0.0 for v in (value if isinstance(value, (tuple, list)) else (value,)))

    return any(present(name) for name in RESTORATION_PARAMS)


def benchmark_id(condition: Any) -> str:
    """`<condition>@v<version>:<hash>`: which frozen benchmark set a score belongs to."""
    return as_condition(condition).benchmark_id()


def condition_name(condition: Any) -> str:
    """The condition's name, from a `Condition` or a plain string."""
    return condition if isinstance(condition, str) else str(condition.name)


def model_name(condition: Any) -> str:
    """`stem-denoiser-<condition>` for a condition name or `Condition`."""
    return MODEL_PREFIX + condition_name(condition)


def model_uri(condition: Any, alias: str = CHAMPION) -> str:
    """`models:/stem-denoiser-<condition>@alias` (or `/<version>` for a number)."""
    sep = "/" if str(alias).isdigit() else "@"
    return f"models:/{model_name(condition)}{sep}{alias}"


def benchmark_of(version) -> dict[str, Any]:
    """The `benchmark.*` tags of a model version as numbers (text for `id`); {} when unscored.

    Per-bin figures, where the version has them, come as `by_bin`: {figure: {bin: value}}
    (bins in benchmark order; a value is None where the figure was undefined in that bin).
    """
    out: dict[str, Any] = {}
    for key in BENCHMARK_KEYS:
        value = version.tags.get(f"benchmark.{key}")
        if value is None:
            continue
        out[key] = value if key == "id" else float(value)
    by_bin = {}
    for figure in BY_BIN_FIGURES:
        text = version.tags.get(f"benchmark.{figure}{BY_BIN_SUFFIX}")
        if text:
            try:
                by_bin[figure] = json.loads(text)
            except ValueError:
                continue  # a hand-edited tag: show the rest
    if by_bin:
        out["by_bin"] = by_bin
    return out
