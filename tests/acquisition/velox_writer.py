"""A minimal writer of Thermo Fisher Velox EMD files, for tests only.

RosettaSciIO reads Velox EMD but writes only the Berkeley (NCEM) flavour, and no Velox file can be
downloaded here. Velox EMD is HDF5 laid out as Velox writes it (the layout RosettaSciIO's reader and
its test files follow):

    /Version                      one JSON string: {"format": "Velox", "version": 11}
    /Data/Image/<uuid>/Data       the frames, (y, x, frame)
    /Data/Image/<uuid>/Metadata   JSON as uint8 bytes, zero-padded, one column per frame
                                  (BinaryResult.PixelSize in PixelUnitX, the detector, the scan, ...)
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import h5py
import numpy as np


def _metadata(detector: str, pixel_size_m: float, frame_time_s: float) -> dict:
    return {
        "BinaryResult": {"PixelSize": {"width": f"{pixel_size_m:.6e}", "height": f"{pixel_size_m:.6e}"},
                         "PixelUnitX": "m", "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"},
                         "DetectorIndex": "0", "Detector": detector},
        "Detectors": {"Detector-0": {"DetectorName": detector, "DetectorType": "ScanningDetector"}},
        "Scan": {"FrameTime": f"{frame_time_s}", "DwellTime": "1.4e-06"},
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1764000000"}},
        "Optics": {"AccelerationVoltage": "200000", "BeamConvergence": "0.03"},
        "Instrument": {"InstrumentClass": "Titan", "InstrumentModel": "Themis Z"},
    }


def write_velox(path: str | Path, images: dict[str, np.ndarray], *, pixel_size_m: float) -> Path:
    """Write ``{detector name: (H, W) image or (N, H, W) frames}`` as one Velox EMD file, in that order."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": 11}).encode()]))
        group = f.create_group("Data").create_group("Image")
        for index, (detector, data) in enumerate(images.items()):
            frames = np.asarray(data)
            frames = frames[None] if frames.ndim == 2 else frames
            # Velox names each image by a UUID; fixed ones keep the file's order (h5py lists names sorted)
            sub = group.create_group(uuid.UUID(int=index + 1).hex)
            sub.create_dataset("Data", data=np.moveaxis(frames, 0, -1), chunks=frames.shape[1:] + (1,))
            text = json.dumps(_metadata(detector, pixel_size_m, 0.5)).encode()
            column = np.frombuffer(text + b"\x00" * 16, dtype=np.uint8)
            sub.create_dataset("Metadata", data=np.repeat(column[:, None], len(frames), axis=1))
    return path
