"""Architectures as JSON-able dicts: one table from ``kind`` to the class that builds it.

Every class in the table offers ``from_config(arch) -> module`` and
``config() -> dict``, so a model travels as ``{"kind": ..., ...}`` plus a
state_dict, and no pickled code ever goes into the registry.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

#: kind -> "module:Class"; imported lazily so a broken baseline never breaks the hourglass.
ARCHITECTURES: dict[str, str] = {
    "reverse-hourglass": "stemreg.models.hourglass:ReverseHourglass",
    "autoencoder": "stemreg.models.baselines:StemAutoencoder",
    "dncnn": "stemreg.models.baselines:DnCNN",
}

#: An architecture key any kind takes: the model repairs its input's defective pixels first, with this
#: threshold in noise sigmas (:mod:`stemreg.models.impulses`; :func:`~stemreg.models.inference.denoise_array`
#: reads the module's ``impulse_k`` attribute). Absent: no repair (every model before `stemreg adapt` set it).
IMPULSE_KEY = "impulse_k"


def model_class(kind: str) -> type[nn.Module]:
    """The class registered for an architecture ``kind``.

    Raises
    ------
    ValueError
        For an unknown kind, naming the accepted ones.
    """
    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown architecture kind {kind!r}; accepted kinds: {sorted(ARCHITECTURES)}")
    module_name, class_name = ARCHITECTURES[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build an untrained network from an architecture dict.

    Parameters
    ----------
    arch : dict
        ``{"kind": "reverse-hourglass", "depth": 8, "widths": [...], "kernel_size": 3}``
        or another registered kind (``"autoencoder"``, ``"dncnn"``); any kind may add
        :data:`IMPULSE_KEY`.

    Returns
    -------
    torch.nn.Module
        Takes and returns ``(B, 1, H, W)`` tensors.

    Raises
    ------
    ValueError
        Unknown kind, unknown keys, or bad depth/widths; the message names
        what is accepted.
    """
    if not isinstance(arch, dict):
        raise ValueError(f"an architecture must be a dict with a 'kind' key (got {type(arch).__name__})")
    if "kind" not in arch:
        raise ValueError(f"architecture {arch!r} has no 'kind'; accepted kinds: {sorted(ARCHITECTURES)}")
    arch = dict(arch)
    impulse_k = arch.pop(IMPULSE_KEY, None)
    model = model_class(arch["kind"]).from_config(arch)
    if impulse_k is not None:
        if isinstance(impulse_k, bool) or not isinstance(impulse_k, (int, float)) or not impulse_k > 0:
            raise ValueError(f"{IMPULSE_KEY} must be a positive number of noise sigmas (got {impulse_k!r})")
        model.impulse_k = float(impulse_k)
    return model


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """The architecture dict that :func:`build_model` turns back into ``model``'s shape."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config(); only models built by build_model are supported")
    arch = config()
    if getattr(model, IMPULSE_KEY, None) is not None:
        arch[IMPULSE_KEY] = float(model.impulse_k)
    return arch


def architecture_for_mode(arch: dict[str, Any], mode: str) -> dict[str, Any]:
    """The architecture to build for a training mode.

    Blind-spot training needs a network without a residual input-to-output
    path (it would pass the noisy centre pixel straight through), so a
    reverse hourglass gets ``"residual": False`` there. :func:`train` makes
    the same switch on the module itself; building it right from the start
    keeps logged architecture params equal to the saved model's.
    """
    out = dict(arch)
    if str(getattr(mode, "value", mode)) == "blind-spot" and out.get("kind") == "reverse-hourglass":
        out["residual"] = False
    return out
