"""The bad inputs of `benchmarks/fuzz_inputs.py`: request bodies, image files, raw HTTP, YAML conditions.

Each builder returns ``(name, payload)`` pairs; every payload is something a user or a client could
send by mistake (or on purpose) and that must be refused with a clear message.
"""
from __future__ import annotations

import functools
import io
import json
import os
import struct
import zlib

import numpy as np

#: 4100^2 > the server's default cap of 4096^2 pixels.
OVER_CAP_PX = 4100


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npy_header(shape: tuple, descr: str = "<f4", extra: bytes = b"\0" * 16) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + extra


def tiff(a: np.ndarray, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, a, **kw)
    return buf.getvalue()


def tiff_with_strip(strip: bytes, compression: int, width: int, height: int, extra: list | None = None) -> bytes:
    """A little-endian TIFF of ``width`` x ``height`` uint8 pixels held in one ``strip`` as given."""
    entries = sorted([(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, compression), (262, 3, 1),
                      (273, 4, None), (277, 3, 1), (278, 4, height), (279, 4, len(strip))] + (extra or []))
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        value = data_offset if value is None else value
        ifd += struct.pack("<HHII", tag, typ, 1, value) if typ == 4 else struct.pack("<HHIHH", tag, typ, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + strip


def deflate_zeros(n_bytes: int, level: int = 1) -> bytes:
    comp = zlib.compressobj(level)
    chunk = b"\0" * (1 << 22)
    return b"".join(comp.compress(chunk) for _ in range(n_bytes >> 22)) + comp.flush()


def tiff_chain(pages: int, loop: bool = False) -> bytes:
    """A TIFF header and ``pages`` empty IFDs, chained (the last back to the first when ``loop``)."""
    body = b"".join(struct.pack("<HI", 0, 8 + 6 * (i + 1) if i + 1 < pages else (8 if loop else 0))
                    for i in range(pages))
    return b"II*\x00" + struct.pack("<I", 8) + body


def microscope_files(folder) -> list[tuple[str, object]]:
    """Bad .hspy/.emd/.dm3 files (RosettaSciIO formats, CLI and API only), written into ``folder``:
    HDF5 chunks that inflate far beyond their declared size, a filter that cannot be bounded, a
    declared shape over the cap, a truncated DM3."""
    import h5py

    from stemreg.acquisition.io import write_image

    made = []

    def hdf5(name: str, suffix: str, edit) -> None:
        path = write_image(folder / f"{name}.{suffix}", np.ones((64, 64), np.float32))
        with h5py.File(path, "r+") as handle:
            found = []
            handle.visititems(lambda _, o: found.append(o) if isinstance(o, h5py.Dataset) and o.ndim == 2 else None)
            edit(handle, found[0])
        made.append((f"{suffix} {name.replace('_', ' ')}", path))

    def bomb(_, data) -> None:  # the issue's bomb in HDF5: 16 KiB declared, 1.2 GB inflated
        data.id.write_direct_chunk((0, 0), deflate_zeros(1200 << 20), 0)

    def lzf(handle, data) -> None:
        where = data.name
        del handle[where]
        handle.create_dataset(where, data=np.ones((64, 64), np.float32), chunks=(64, 64), compression="lzf")

    def huge(handle, data) -> None:
        where = data.name
        del handle[where]
        handle.create_dataset(where, shape=(100_000, 100_000), dtype="f4", chunks=(64, 64), compression="gzip")

    hdf5("gzip_bomb", "hspy", bomb)
    hdf5("lzf_filter", "hspy", lzf)
    hdf5("declares_1e10_px", "hspy", huge)
    path = write_image(folder / "bomb_emd.emd", np.ones((64, 64), np.float32))
    with h5py.File(path, "r+") as handle:
        found = []
        handle.visititems(lambda _, o: found.append(o) if isinstance(o, h5py.Dataset) and o.ndim == 2 else None)
        where = found[0].name
        del handle[where]
        handle.create_dataset(where, shape=(64, 64), dtype="f4", chunks=(64, 64), compression="gzip")
        handle[where].id.write_direct_chunk((0, 0), deflate_zeros(1200 << 20), 0)
    made.append(("emd gzip bomb", path))
    (folder / "truncated.dm3").write_bytes(b"\x00\x00\x00\x03" + b"\x00" * 60)
    made.append(("dm3 truncated", folder / "truncated.dm3"))
    return made


def png(a: np.ndarray, mode: str | None = None, text: dict | None = None, **kw) -> bytes:
    from PIL import Image, PngImagePlugin

    im = Image.fromarray(a, mode=mode) if mode else Image.fromarray(a)
    for key, value in kw.items():
        setattr(im, key, value)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def palette_png() -> bytes:
    from PIL import Image

    im = Image.fromarray(np.random.default_rng(0).integers(0, 4, (32, 32), dtype=np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def png_chunk_bomb() -> bytes:
    """A 32 x 32 grey PNG whose IDAT inflates to 256 MB (the decoder must stop at the declared size)."""
    raw = deflate_zeros(256 << 20, level=9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _ok2() -> list:
    return [[1.0, 2.0], [3.0, 4.0]]


def _deep(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


def json_cases() -> list[tuple[str, bytes]]:
    """Bad /invocations bodies (Content-Type application/json)."""
    j = lambda obj: json.dumps(obj).encode()  # noqa: E731
    rgb = np.random.default_rng(0).random((16, 16, 3)).tolist()
    cases = [
        ("empty body", b""), ("not json", b"hello"), ("truncated json", b'{"inputs": [[1, 2]'),
        ("json list", b"[1, 2]"), ("json string", b'"x"'), ("json null", b"null"), ("json number", b"3"),
        ("no input key", j({"x": 1})), ("two input keys", j({"inputs": _ok2(), "instances": _ok2()})),
        ("named tensors", j({"inputs": {"a": _ok2()}})), ("inputs null", j({"inputs": None})),
        ("inputs string", j({"inputs": "abc"})), ("inputs number", j({"inputs": 3})),
        ("rank 1", j({"inputs": [1, 2, 3]})), ("rank 4", j({"inputs": [[[[1.0] * 2] * 2]]})),
        ("ragged", j({"inputs": [[1, 2], [3]]})), ("strings in image", j({"inputs": [["a", "b"], ["c", "d"]]})),
        ("nulls in image", j({"inputs": [[None, 1], [1, 1]]})), ("1x1", j({"inputs": [[1.0]]})),
        ("1x5", j({"inputs": [[1.0] * 5]})), ("booleans", b'{"inputs": [[true, false], [false, true]]}'),
        ("mixed bool", b'{"inputs": [[1, true], [2, 3]]}'), ("empty list", j({"inputs": []})),
        ("empty rows", j({"inputs": [[]]})), ("NaN", b'{"inputs": [[NaN, 1], [1, 1]]}'),
        ("Infinity", b'{"inputs": [[Infinity, 1], [1, 1]]}'), ("huge number", b'{"inputs": [[1e999, 1], [1, 1]]}'),
        ("deep 10", _deep(10)), ("deep 1000", _deep(1000)), ("deep 100000", _deep(100_000)),
        ("objects in rows", j({"inputs": [[{"a": 1}, 1], [1, 1]]})),
        ("dataframe_split bad", j({"dataframe_split": {"columns": ["a"], "data": "x"}})),
        ("dataframe_records strings", j({"dataframe_records": [{"a": "x"}, {"a": "y"}]})),
        ("dataframe_split 1 column", j({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}})),
        ("params not object", j({"inputs": _ok2(), "params": [1]})),
        ("invalid utf-8", b'{"inputs": "\xff\xfe"}'),
        # overflow: finite as float64, infinite as float32 (the model's dtype)
        ("float32 overflow 1e39", j({"inputs": [[1e39, 1.0], [1.0, 1.0]]})),
        ("float32 overflow -3.5e38", j({"inputs": [[-3.5e38, 1.0], [1.0, 1.0]]})),
        ("near float64 max", j({"inputs": [[1e298, 1.0], [1.0, 1.0]]})),
        ("integer 1e40 spelt out", ('{"inputs": [[' + "9" * 40 + ', 1], [1, 1]]}').encode()),
        # wrong shapes / channels
        ("(H, W, 3) RGB as inputs", j({"inputs": rgb})),
        ("(1, H, W, 3) RGB stack", j({"inputs": [rgb]})),
        ("(N, H, W, 2) two channels", j({"inputs": np.zeros((2, 8, 8, 2)).tolist()})),
        ("(H, W, 4) RGBA", j({"inputs": np.zeros((8, 8, 4)).tolist()})),
        ("(H, W, 1) one channel last", j({"inputs": np.zeros((8, 8, 1)).tolist()})),
        ("instances rank 1", j({"instances": [1.0, 2.0]})), ("instances strings", j({"instances": ["a", "b"]})),
        ("instances of objects", j({"instances": [{"a": 1}, {"a": 2}]})),
        ("dataframe_records ragged", j({"dataframe_records": [{"a": 1}, {"b": 2}]})),
        ("dataframe_split no data", j({"dataframe_split": {"columns": ["a", "b"]}})),
        ("dataframe_split bool", j({"dataframe_split": {"columns": ["a", "b"], "data": [[True, False], [False, True]]}})),
        ("dataframe_split NaN", b'{"dataframe_split": {"columns": ["a", "b"], "data": [[NaN, 1], [1, 1]]}}'),
        ("numbers as strings", j({"inputs": [["1.0", "2.0"], ["3.0", "4.0"]]})),
        ("duplicate input key", b'{"inputs": [[1, 2], [3, 4]], "inputs": "x"}'),
        ("json with trailing garbage", j({"inputs": _ok2()}) + b" xyz"),
        ("ragged stack", j({"inputs": [_ok2(), [[1.0, 2.0]]]})), ("empty image in a stack", j({"inputs": [[[]]]})),
        ("dataframe_split empty", j({"dataframe_split": {"columns": [], "data": []}})),
        ("params overlap_px a string", j({"inputs": _ok2(), "params": {"tile_px": 64, "overlap_px": "x"}})),
        ("params string", j({"inputs": _ok2(), "params": "tile_px=16"})),
        ("params nested", j({"inputs": _ok2(), "params": {"tile_px": {"a": 1}}})),
        ("params batch_size huge float", j({"inputs": _ok2(), "params": {"batch_size": 1e20}})),
    ]
    for params in ({"tile_px": 0}, {"tile_px": -5}, {"tile_px": 10**9}, {"tile_px": 2402, "overlap_px": 1200},
                   {"overlap_px": -1}, {"overlap_px": 64, "tile_px": 64}, {"batch_size": 0},
                   {"batch_size": -1}, {"batch_size": 10**6}, {"tile_px": "x"}, {"tile_px": 1.5},
                   {"tile_px": True}, {"tile_px": None, "batch_size": [1]}, {"unknown": 1}, {"tile_px": 1e300}):
        cases.append((f"params {params}", j({"inputs": _ok2(), "params": params})))
    return cases


@functools.lru_cache(maxsize=1)
def image_cases() -> list[tuple[str, str, bytes]]:
    """Bad image bodies ``(name, format, bytes)``, for POST /denoise and as files for `stemreg denoise`."""
    rng = np.random.default_rng(0)
    good = npy(np.ones((8, 8), np.float32))
    img = rng.random((32, 32)).astype(np.float32)
    u8 = (img * 255).astype(np.uint8)
    bomb_strip = deflate_zeros(1200 << 20)  # 1.2 GB of zeros in ~5 MB: the issue's bomb
    return [
        ("npy empty", "npy", b""), ("npy magic only", "npy", b"\x93NUMPY"), ("npy truncated header", "npy", good[:20]),
        ("npy truncated data", "npy", good[:-10]), ("npy 1e10 px header", "npy", npy_header((100_000, 100_000))),
        ("npy 6000^2 declared", "npy", npy_header((6000, 6000))), ("npy negative dim", "npy", npy_header((-1, 8))),
        ("npy object dtype", "npy", npy_header((2, 2), "|O")),
        ("npy string dtype", "npy", npy(np.array([["a", "b"], ["c", "d"]]))),
        ("npy complex", "npy", npy(np.ones((4, 4), np.complex64))), ("npy bool", "npy", npy(np.ones((4, 4), bool))),
        ("npy 1x1", "npy", npy(np.ones((1, 1), np.float32))), ("npy 1-D", "npy", npy(np.ones(16, np.float32))),
        ("npy 4-D", "npy", npy(np.ones((2, 2, 4, 4), np.float32))), ("npy 0x8", "npy", npy(np.ones((0, 8), np.float32))),
        ("npy NaN", "npy", npy(np.array([[np.nan, 1], [1, 1]], np.float32))),
        ("npy Inf", "npy", npy(np.array([[np.inf, 1], [1, 1]], np.float32))),
        ("npy structured", "npy", npy(np.zeros((4, 4), dtype=[("a", "<f4"), ("b", "<i4")]))),
        ("npy bad version", "npy", good[:6] + b"\x09\x00" + good[8:]),
        ("npy garbage header", "npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': zzz}   \n" + b"\0" * 16),
        ("npy (H, W, 3) RGB", "npy", npy(rng.random((16, 16, 3)).astype(np.float32))),
        ("npy (N, H, W, 2) two channels", "npy", npy(np.zeros((2, 8, 8, 2), np.float32))),
        ("npy float64 1e298", "npy", npy(np.full((8, 8), 1e298))),
        ("npy float64 -1e300", "npy", npy(np.full((8, 8), -1e300))),
        ("npy complex128", "npy", npy(np.ones((4, 4), np.complex128))),
        ("npy datetime64", "npy", npy(np.zeros((4, 4), "datetime64[s]"))),
        ("npy void bytes", "npy", npy(np.zeros((4, 4), "V4"))),
        ("npy 0-size stack", "npy", npy(np.zeros((0, 8, 8), np.float32))),
        ("npy shape 1e20 header", "npy", npy_header((10**20, 10**20))),
        ("npy huge header text", "npy", b"\x93NUMPY\x01\x00\xff\xff" + b" " * 65535 + b"\0" * 16),
        ("npy v2 header declaring 1e12 px", "npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 118)
         + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }".ljust(117) + b"\n" + b"\0" * 16),
        ("tiff magic only", "tiff", b"II*\x00"), ("tiff garbage", "tiff", b"II*\x00" + os.urandom(200)),
        ("tiff deflate bomb 64x64 -> 1.2 GB", "tiff", tiff_with_strip(bomb_strip, 8, 64, 64)),
        ("tiff lzma bomb", "tiff", tiff_with_strip(__import__("lzma").compress(b"\0" * (64 << 20)), 34925, 64, 64)),
        ("tiff packbits", "tiff", tiff_with_strip(b"\x81\x00" * 64, 32773, 64, 64)),
        ("tiff jpeg compression", "tiff", tiff_with_strip(b"\xff\xd8\xff" + b"\0" * 64, 7, 64, 64)),
        ("tiff declares 100000^2", "tiff", tiff_with_strip(b"\0" * 64, 1, 100_000, 100_000)),
        ("tiff truncated strip", "tiff", tiff(img)[:-2000]),
        ("tiff 2 channels", "tiff", tiff(np.zeros((32, 32, 2), np.float32), photometric="minisblack",
                                         planarconfig="contig")),
        ("tiff bool", "tiff", tiff(u8 > 128)), ("tiff complex", "tiff", tiff(img.astype(np.complex64))),
        ("tiff float64 1e298", "tiff", tiff(np.full((8, 8), 1e298))),
        ("tiff NaN", "tiff", tiff(np.full((8, 8), np.nan, np.float32))), ("tiff 1x1", "tiff", tiff(np.ones((1, 1), np.float32))),
        ("tiff 1-D", "tiff", tiff(np.ones((1, 16), np.float32)[0])),
        ("tiff 2 million empty pages", "tiff", tiff_chain(2_000_000)), ("tiff pages in a loop", "tiff", tiff_chain(3, True)),
        ("png magic only", "png", b"\x89PNG\r\n\x1a\n"),
        ("png huge IHDR", "png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (60000).to_bytes(4, "big") * 2
         + b"\x08\x00\x00\x00\x00" + b"\0" * 8),
        ("png garbage", "png", b"\x89PNG\r\n\x1a\n" + os.urandom(100)),
        ("png 1-bit", "png", png(u8 > 128)), ("png 1x1", "png", png(np.ones((1, 1), np.uint8))),
        ("png IDAT bomb", "png", png_chunk_bomb()),
        ("png truncated IDAT", "png", png(u8)[:-40]),
        ("png data_max 1e300", "png", png(u8, text={"stemreg": json.dumps({"data_min": 0.0, "data_max": 1e300})})),
        ("png data_min > data_max NaN", "png", png(u8, text={"stemreg": '{"data_min": NaN, "data_max": 1}'})),
        ("png pixel_size abc", "png", png(u8, text={"stemreg": json.dumps({"pixel_size": "abc", "unit": "pm"})})),
        ("png pixel_size negative", "png", png(u8, text={"stemreg": json.dumps({"pixel_size": -5, "unit": "pm"})})),
        ("png stemreg chunk not json", "png", png(u8, text={"stemreg": "{not json"})),
        ("png stemreg chunk a list", "png", png(u8, text={"stemreg": "[1, 2]"})),
        ("png data_max a string", "png", png(u8, text={"stemreg": json.dumps({"data_min": 0, "data_max": "x"})})),
        ("random bytes", "npy", os.urandom(64)), ("text", "npy", b"hello world"),
    ]


@functools.lru_cache(maxsize=1)
def accepted_cases() -> list[tuple[str, str, bytes]]:
    """Odd but valid images that must be read as what they show (not refused): palette colours, grey +
    alpha, metadata that only loses the calibration. Printed apart from the bad inputs."""
    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    u8 = (img * 255).astype(np.uint8)
    return [
        ("tiff palette", "tiff", tiff(u8, photometric="palette",
                                      colormap=np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))[:, :256])),
        ("tiff zero resolution", "tiff", tiff(img, resolution=(0, 0))),
        ("tiff imagej unit garbage", "tiff", tiff(img, imagej=True, resolution=(1.0, 1.0), metadata={"unit": "\x00\x01"})),
        ("png palette", "png", palette_png()), ("png LA", "png", png(np.stack([u8, u8], -1), mode="LA")),
    ]


def raw_cases() -> list[tuple[str, bytes]]:
    """Raw bytes on a socket: malformed or hostile requests (each on its own connection)."""
    body = json.dumps({"inputs": _ok2()}).encode()
    post = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return [
        ("garbage request line", b"GARBAGE\r\n\r\n"), ("bad http version", b"GET /ping HTTP/9.9\r\n\r\n"),
        ("long content-length, short body", post + b"Content-Length: 1000\r\n\r\n" + body),
        ("no content-length", post + b"\r\n" + body), ("negative content-length", post + b"Content-Length: -5\r\n\r\n"),
        ("non-numeric content-length", post + b"Content-Length: abc\r\n\r\n"),
        ("huge content-length", post + b"Content-Length: 99999999999999\r\n\r\n"),
        ("chunked body", post + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("header too long", b"GET /ping HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
        ("too many headers", b"GET /ping HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n"),
        ("two different content-lengths", post + b"Content-Length: 5\r\nContent-Length: 50\r\n\r\n" + body),
        ("chunked and content-length", post + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("content-length with plus sign", post + b"Content-Length: +22\r\n\r\n" + body),
        ("content-length 1e3", post + b"Content-Length: 1e3\r\n\r\n" + body),
        ("536 MB declared, 1 KB sent", post + b"Content-Length: 536000000\r\n\r\n" + b"[" * 1024),
        ("URI of 70 KB", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"),
        ("NUL in the request line", b"GET /pi\x00ng HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("a body of bad JSON after a good head", post + b"Content-Length: 3\r\n\r\n{}x"),
        ("header without colon", post + b"Content-Length 22\r\n\r\n" + body),
        ("path traversal", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("absolute-form URI", b"GET http://evil/ping/x HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("CONNECT", b"CONNECT evil:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("HTTP/0.9 style", b"GET /ping\r\n\r\n"),
        ("expect 100-continue, no body", post + b"Content-Length: 22\r\nExpect: 100-continue\r\n\r\n"),
        ("pipelined garbage after a ping", b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n"),
        ("format path escape", b"POST /denoise?format=../../x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd"),
        ("json to /denoise", b"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body),
    ]


def method_cases() -> list[tuple[str, str, str]]:
    return [("DELETE /invocations", "DELETE", "/invocations"), ("PUT /invocations", "PUT", "/invocations"),
            ("PATCH /model", "PATCH", "/model"), ("OPTIONS /ping", "OPTIONS", "/ping"),
            ("FOO /ping", "FOO", "/ping"), ("GET /nothing", "GET", "/nothing"),
            ("POST /ping", "POST", "/ping"), ("GET /invocations", "GET", "/invocations"),
            ("HEAD /ping", "HEAD", "/ping"), ("GET /denoise", "GET", "/denoise")]


def yaml_cases() -> list[tuple[str, str]]:
    """Condition YAML files with bad values (for `--condition FILE.yaml` and ``condition=``)."""
    base = "name: fuzz\nversion: 1\ndescription: fuzz\nbeam_current_pA: 50.0\ndwell_time_us: 1.4\nbias: 0.2\n"
    return [
        ("yaml convergence_mrad 1e-300", base + "convergence_mrad: 1e-300\n"),
        ("yaml benchmark_spacings_px [0.0001]", base + "benchmark_spacings_px: [0.0001]\n"),
        ("yaml negative current", base.replace("50.0", "-50.0")),
        ("yaml current a string", base.replace("50.0", "lots")),
        ("yaml unknown key", base + "colour: blue\n"),
        ("yaml empty", ""), ("yaml a list", "- 1\n- 2\n"), ("yaml not yaml", "name: [unclosed\n"),
        ("yaml python tag", base + "bias: !!python/object/apply:os.system ['true']\n"),
        ("yaml dwell 1e300", base.replace("1.4", "1e300")),
        ("yaml bias NaN", base.replace("bias: 0.2", "bias: .nan")),
        ("yaml defocus reversed", base + "defocus_nm: [20.0, 5.0]\n"),
    ]
