"""A real (untrained, tiny) stemreg pyfunc folder to register, where a test needs a version that loads.

Promotion loads the candidate and runs it on a benchmark image before any alias moves, so a version
registered from an empty folder can no longer be promoted. The folder is saved once per process and
copied (a few kB) for each version.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_TEMPLATES: dict[float | None, Path] = {}


def _template(impulse_k: float | None = None) -> Path:
    if impulse_k not in _TEMPLATES:
        import mlflow.pyfunc
        import torch

        from stemreg.models.architectures import build_model
        from stemreg.models.mlflow_model import log_model_args, model_signature

        torch.manual_seed(0)
        arch = {"kind": "reverse-hourglass", "depth": 3, "widths": [4, 4], "kernel_size": 3}
        net = build_model({**arch, "impulse_k": impulse_k} if impulse_k else arch)
        root = Path(tempfile.mkdtemp(prefix="stemreg-tiny-model-"))
        mlflow.pyfunc.save_model(str(root / "model"), **log_model_args(net, root / "data"),
                                 signature=model_signature(), pip_requirements=["torch==2.13.0"])
        _TEMPLATES[impulse_k] = root / "model"
    return _TEMPLATES[impulse_k]


def tiny_model_folder(dest: Path, impulse_k: float | None = None) -> Path:
    """A copy of the tiny saved pyfunc at ``dest`` (created; must not exist yet); ``impulse_k``: a model
    that repairs defective pixels first (as `stemreg adapt` registers them)."""
    shutil.copytree(_template(impulse_k), dest)
    return dest
