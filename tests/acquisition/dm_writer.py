"""A minimal writer of real DigitalMicrograph DM3/DM4 files, for tests only.

RosettaSciIO reads DM3/DM4 but has no writer, and no DM file can be downloaded here. This module builds
files per the published layout of the format (Gatan's tag-file structure, as documented by the DM3 notes
of Boothroyd and Jefferis and the DM4 notes used by ncempy and RosettaSciIO):

    header      version (int32 BE: 3 or 4), root length (int32 DM3 / int64 DM4), byte order (int32 BE, 1 =
                little-endian data)
    tag group   sorted (uint8), open (uint8), number of tags (int32 / int64), the tags
    tag         type (uint8: 20 group, 21 data), name length (uint16 BE), name (bytes),
                [DM4 only: total length of what follows, int64 BE],
                a group's contents, or for data: "%%%%", info length (int32/int64 BE), the info array
                (int32/int64 BE each: the encoded type and, for arrays, element type and length), then the
                value(s) in the file's byte order
    end         eight zero bytes

An image lives in ``ImageList`` as an unnamed group holding ``ImageData`` (``Data``, ``DataType``,
``Dimensions`` X first, ``Calibrations.Dimension`` with Origin/Scale/Units per axis), ``ImageTags`` and
``Name``; like DigitalMicrograph itself, a thumbnail comes first and ``Thumbnails`` points at it.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# DM tag-data encodings (element types) and DM image data types, for the dtypes the tests use.
_ENCODING = {"int16": (2, "h"), "int32": (3, "i"), "uint16": (4, "H"), "uint32": (5, "I"), "float32": (6, "f"),
             "float64": (7, "d"), "bool": (8, "?"), "uint8": (10, "B")}
_IMAGE_DATA_TYPE = {"int16": 1, "float32": 2, "uint8": 6, "int32": 7, "uint16": 10, "uint32": 11, "float64": 12}
_GROUP, _DATA, _ARRAY = 20, 21, 20  # tag kinds (group, data) and the array encoding


class _Writer:
    def __init__(self, version: int):
        if version not in (3, 4):
            raise ValueError("DM version must be 3 or 4")
        self.version = version
        self.size_fmt = ">i" if version == 3 else ">q"

    def size(self, n: int) -> bytes:
        return struct.pack(self.size_fmt, n)

    def _tag(self, kind: int, name: str, body: bytes) -> bytes:
        label = name.encode("latin-1")
        head = struct.pack(">BH", kind, len(label)) + label
        if self.version == 4:
            head += struct.pack(">q", len(body))
        return head + body

    def group(self, name: str, tags: list[bytes]) -> bytes:
        return self._tag(_GROUP, name, self.group_body(tags))

    def group_body(self, tags: list[bytes]) -> bytes:
        return struct.pack(">BB", 0, 1) + self.size(len(tags)) + b"".join(tags)

    def _data(self, name: str, info: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + self.size(len(info)) + b"".join(self.size(i) for i in info) + payload
        return self._tag(_DATA, name, body)

    def value(self, name: str, value, dtype: str) -> bytes:
        code, fmt = _ENCODING[dtype]
        return self._data(name, [code], struct.pack("<" + fmt, value))

    def string(self, name: str, text: str) -> bytes:
        # DM stores text as an array of 2-byte characters
        chars = [ord(c) for c in text]
        return self._data(name, [_ARRAY, _ENCODING["uint16"][0], len(chars)],
                          struct.pack(f"<{len(chars)}H", *chars))

    def array(self, name: str, data: np.ndarray) -> bytes:
        code, _ = _ENCODING[data.dtype.name]
        flat = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).ravel()
        return self._data(name, [_ARRAY, code, flat.size], flat.tobytes())

    def image(self, data: np.ndarray, *, pixel_size: float, unit: str, name: str) -> bytes:
        dims = data.shape[::-1]  # DM lists X (columns) first
        calibrations = [self.group("", [self.value("Origin", 0.0, "float32"),
                                        self.value("Scale", float(pixel_size if axis < 2 else 1.0), "float32"),
                                        self.string("Units", unit if axis < 2 else "")])
                        for axis in range(len(dims))]
        image_data = self.group("ImageData", [
            self.group("Calibrations", [
                self.group("Brightness", [self.value("Origin", 0.0, "float32"), self.value("Scale", 1.0, "float32"),
                                          self.string("Units", "Counts")]),
                self.group("Dimension", calibrations),
                self.value("DisplayCalibratedUnits", True, "bool"),
            ]),
            self.array("Data", data),
            self.value("DataType", _IMAGE_DATA_TYPE[data.dtype.name], "int32"),
            self.group("Dimensions", [self.value("", int(n), "uint32") for n in dims]),
            self.value("PixelDepth", data.dtype.itemsize, "uint32"),
        ])
        tags = self.group("ImageTags", [
            self.group("Microscope Info", [self.value("Voltage", 200000.0, "float32"),
                                           self.string("Illumination Mode", "STEM")]),
        ])
        return self.group("", [image_data, tags, self.string("Name", name),
                               self.group("UniqueID", [self.value("", 1, "uint32") for _ in range(4)])])


def write_dm(path: str | Path, data: np.ndarray, *, pixel_size: float, unit: str, version: int = 3,
             name: str = "HAADF") -> Path:
    """Write ``data`` (2-D image or 3-D stack) as a DM3 (``version=3``) or DM4 file with a thumbnail first."""
    path = Path(path)
    data = np.asarray(data)
    writer = _Writer(version)
    thumbnail = np.zeros((8, 8), dtype=np.uint8)
    images = writer.group("ImageList", [writer.image(thumbnail, pixel_size=1.0, unit="", name="thumbnail"),
                                        writer.image(data, pixel_size=pixel_size, unit=unit, name=name)])
    thumbnails = writer.group("Thumbnails", [writer.group("", [writer.value("ImageIndex", 0, "uint32")])])
    root = writer.group_body([writer.group("ApplicationBounds", []), images, thumbnails])
    body = root + b"\x00" * 8
    if version == 3:
        header = struct.pack(">iii", 3, len(body), 1)
    else:
        header = struct.pack(">iqi", 4, len(body), 1)
    path.write_bytes(header + body)
    return path
