"""stemreg.acquisition: the microscope.

Specimens, probe optics, dose and detector noise, scan distortions, named
acquisition conditions, and reading/writing real microscope files. Knows
physics, not networks (never imports stemreg.models).
"""
from stemreg.acquisition.conditions import Condition, PairBatch, get_condition, list_conditions, load_condition
from stemreg.acquisition.errors import ImageReadError, UnknownConditionError
from stemreg.acquisition.frames import FrameSeries, read_frames, read_noisy_images
from stemreg.acquisition.io import Calibration, ImageWithCalibration, read_image, write_image

__all__ = [
    "Condition", "PairBatch", "get_condition", "list_conditions", "load_condition",
    "read_image", "write_image", "ImageWithCalibration", "Calibration",
    "UnknownConditionError", "ImageReadError",
    "FrameSeries", "read_frames", "read_noisy_images",
]
