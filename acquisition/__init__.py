"""stemreg.acquisition: the microscope.

Specimens, probe optics, dose and detector noise, scan distortions, named
acquisition conditions, and reading/writing real microscope files. Knows
physics, not networks (never imports stemreg.models).
"""
from stemreg.acquisition.conditions import Condition, PairBatch
from stemreg.acquisition.condition_files import ConditionLike, get_condition, list_conditions, load_condition
from stemreg.acquisition.errors import ConditionFileError, ImageReadError, UnknownConditionError
from stemreg.acquisition.frames import FrameSeries, read_frames, read_noisy_images
from stemreg.acquisition.io import Calibration, ImageWithCalibration, read_image, write_image

__all__ = [
    "Condition", "ConditionLike", "PairBatch", "get_condition", "list_conditions", "load_condition",
    "read_image", "write_image", "ImageWithCalibration", "Calibration",
    "UnknownConditionError", "ConditionFileError", "ImageReadError",
    "FrameSeries", "read_frames", "read_noisy_images",
]
