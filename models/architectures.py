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
        or another registered kind (``"autoencoder"``, ``"dncnn"``).

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
    return model_class(arch["kind"]).from_config(dict(arch))


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """The architecture dict that :func:`build_model` turns back into ``model``'s shape."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config(); only models built by build_model are supported")
    return config()


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
