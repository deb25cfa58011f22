"""stemreg.models: the networks, how one is trained, and the MLflow model wrapper.

Names are imported lazily (PEP 562), so ``import stemreg.models`` stays cheap
and torch/mlflow load only when a name is first used.
"""
from __future__ import annotations

from stemreg.models.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ReverseHourglass": "stemreg.models.hourglass",
    "hourglass_widths": "stemreg.models.hourglass",
    "ARCHITECTURES": "stemreg.models.architectures",
    "build_model": "stemreg.models.architectures",
    "architecture_of": "stemreg.models.architectures",
    "architecture_for_mode": "stemreg.models.architectures",
    "psnr": "stemreg.models.metrics",
    "ssim": "stemreg.models.metrics",
    "psnr_batch": "stemreg.models.metrics",
    "ssim_batch": "stemreg.models.metrics",
    "data_range_of": "stemreg.models.metrics",
    "NormStats": "stemreg.models.inference",
    "normalise": "stemreg.models.inference",
    "denormalise": "stemreg.models.inference",
    "denoise_array": "stemreg.models.inference",
    "TrainConfig": "stemreg.models.training",
    "TrainingMode": "stemreg.models.training",
    "TrainResult": "stemreg.models.training",
    "train": "stemreg.models.training",
    "pick_device": "stemreg.models.training",
    "flops_per_pixel": "stemreg.models.flops",
    "DenoiserPyfunc": "stemreg.models.mlflow_model",
    "models_from_code_path": "stemreg.models.mlflow_model",
    "save_artifacts": "stemreg.models.mlflow_model",
    "load_denoiser": "stemreg.models.mlflow_model",
    "model_signature": "stemreg.models.mlflow_model",
    "input_example": "stemreg.models.mlflow_model",
    "pip_requirements": "stemreg.models.mlflow_model",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
