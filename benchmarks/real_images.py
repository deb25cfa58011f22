"""Real microscope images that public Python packages ship as example data: fetched, never committed.

``pip download --no-deps`` brings each wheel into a cache folder (default
``~/.cache/stemreg/real-images``), and the images are read out of the wheel (a zip) from there.
Nothing of theirs enters this repository. Used by ``bench_real.py``; never for training.

- atomap 0.4.2 (GPL-3.0), ``atomap/tests/datasets/test_ADF_cropped.hdf5`` and
  ``test_ABF_cropped.hdf5``: simultaneously recorded high-dose ADF and ABF images of a perovskite
  (400 x 380 px, 9.3 pm/px): the real benchmark's ADF and ABF images.
- temul-toolkit 0.1.9 (GPL-3.0), ``temul/example_data/experimental/``: a low-dose HAADF survey of
  Se-implanted MoS2 (.dm3, 1024 px, 12.7 pm/px, uint32 counts) and a raw Velox HAADF frame of Au
  nanoparticles (.emd, 2048 px, 7.5 pm/px, uint16 ADU with a dark offset near 15000): raw frames,
  looked at (no truth).
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("STEMREG_REAL_CACHE", Path.home() / ".cache" / "stemreg" / "real-images"))


@dataclass(frozen=True)
class RealImage:
    """One image inside a public wheel."""

    name: str
    wheel: str          # pip requirement, pinned
    member: str         # path inside the wheel
    reader: str         # rosettasciio plugin: hspy, digitalmicrograph, emd
    contrast: str       # "adf" or "abf"
    role: str           # "high-dose" (degraded and scored) or "raw" (looked at)


IMAGES = (
    RealImage("perovskite-ADF", "atomap==0.4.2", "atomap/tests/datasets/test_ADF_cropped.hdf5", "hspy", "adf",
              "high-dose"),
    RealImage("perovskite-ABF", "atomap==0.4.2", "atomap/tests/datasets/test_ABF_cropped.hdf5", "hspy", "abf",
              "high-dose"),
    RealImage("MoS2-Se-lowdose", "temul-toolkit==0.1.9",
              "temul/example_data/experimental/example_Se_implanted_MoS2.dm3", "digitalmicrograph", "adf", "raw"),
    RealImage("Au-velox-raw", "temul-toolkit==0.1.9",
              "temul/example_data/experimental/example_Au_nanoparticle.emd", "emd", "adf", "raw"),
)


def wheel_file(spec: str, cache: Path) -> Path:
    """The wheel of ``spec`` (``name==version``) in ``cache/wheels``, downloaded with pip when absent."""
    name, version = spec.split("==")
    folder = cache / "wheels"
    stem = name.replace("-", "_").lower()
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}")]
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec, "-d", str(folder)],
                   check=True)
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}")]
    if not found:
        raise FileNotFoundError(f"pip download {spec} left no wheel in {folder}")
    return found[0]


def extract(image: RealImage, cache: Path) -> Path:
    """The image's file, extracted from its wheel into ``cache/files`` (once)."""
    target = cache / "files" / image.member
    if not target.is_file():
        with zipfile.ZipFile(wheel_file(image.wheel, cache)) as wheel:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(image.member))
    return target


def load(image: RealImage, cache: Path = DEFAULT_CACHE) -> tuple[np.ndarray, float | None]:
    """``(data float64 (H, W), pixel size in pm or None)`` of one real image."""
    import importlib

    reader = importlib.import_module(f"rsciio.{image.reader}").file_reader
    signal = reader(str(extract(image, cache)))[0]
    data = np.asarray(signal["data"], dtype=np.float64)
    axis = signal["axes"][-1]
    scale, units = float(axis.get("scale", 1.0)), str(axis.get("units") or "")
    factor = {"nm": 1e3, "pm": 1.0, "Å": 100.0, "A": 100.0, "µm": 1e6, "um": 1e6, "microns": 1e6}.get(units)
    if factor is None and image.reader == "hspy" and 0.001 < scale < 0.1:
        factor = 1e3  # atomap's test images carry the scale without units: nanometres (9.3 pm/px)
    return data, (scale * factor if factor else None)
