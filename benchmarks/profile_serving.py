"""Where one request's time goes in `stemreg serve`: POST /denoise (.npy) beside POST /invocations (JSON).

No sockets: each request is answered in-process by the server's own handler
(`stemreg.platform.serving.handler.answer_request`, what the front end calls once a request is read),
on the model `benchmarks/bench_serving.py --temp-model` serves (the shipped base, a temp store). It
prints the whole answer's time per endpoint, then the time of each stage of it measured alone:
decoding the body, the forward pass, encoding the answer, the sampling check and the trust report.

    python benchmarks/profile_serving.py [--size 256] [--n 20] [--threads 1]

Times are medians over ``--n`` requests, on whatever else the machine runs (quote the load average):
wall time, and the CPU time of the thread that answers (less inflated by the other processes).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _median_ms(fn, n: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this thread (what the other processes on a busy machine do
    not inflate as much), in ms."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def _request(path: str, body: bytes, ctype: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the server's per forward call)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from bench_serving import register_temp_model, temp_network

    from stemreg.platform.serving.handler import answer_request
    from stemreg.platform.serving.http_io import decode_image, encode_image_parts
    from stemreg.platform.serving.json_io import parse_inputs, parse_json_body, predictions_json
    from stemreg.platform.serving.server import make_server
    from stemreg.platform.prediction import sampling_warning
    from stemreg.platform.trust import header_for

    root = Path(tempfile.mkdtemp(prefix="stemreg-profile-"))
    network, label = temp_network("shipped")
    uri = register_temp_model(root, network)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    server = make_server("low-dose", port=0, tracking_uri=uri, max_pixels=8 * args.size ** 2)
    try:
        holder = server.holder
        holder.load()
        image = np.random.default_rng(0).random((args.size, args.size)).astype(np.float32)
        buffer = io.BytesIO()
        np.save(buffer, image)
        npy = buffer.getvalue()
        js = json.dumps({"inputs": image[None].tolist()}).encode()
        figures: dict[str, tuple[float, float]] = {}
        for name, path, body, ctype in (("denoise_npy", "/denoise", npy, "application/x-npy"),
                                        ("invocations_json", "/invocations", js, "application/json")):
            head = _request(path, body, ctype)

            def answer(head=head, body=body):
                parts, _ = answer_request(server, head, bytearray(body), ("127.0.0.1", 1))
                status = bytes(parts[0][:13])
                assert b" 200 " in status, bytes(parts[0][:200])

            figures[f"{name}_whole_ms"] = _median_ms(answer, args.n)
        decoded = decode_image(bytearray(npy), "npy", max_pixels=8 * args.size ** 2)
        predictions, served = holder.denoise(decoded.data)
        denoised = np.asarray(predictions, np.float32).reshape(image.shape)
        stages = {
            "decode .npy": lambda: decode_image(bytearray(npy), "npy", max_pixels=8 * args.size ** 2),
            "decode JSON": lambda: parse_inputs("inputs", parse_json_body(js)["inputs"], holder.input_schema()),
            "forward (holder.denoise)": lambda: holder.denoise(decoded.data),
            "encode .npy": lambda: encode_image_parts(denoised, "npy", like=decoded),
            "encode JSON": lambda: predictions_json(denoised[None]),
            "sampling warning": lambda: sampling_warning(served, decoded.calibration.pixel_size_pm()),
            "trust report (header)": lambda: header_for(served, decoded.data, denoised,
                                                        decoded.calibration.pixel_size_pm()),
        }
        for stage, fn in stages.items():
            figures[stage] = _median_ms(fn, args.n)
    finally:
        server.server_close()
    load = os.getloadavg()
    print(f"profile_serving: {args.size}^2 float32, {label}, torch threads {args.threads}, median of {args.n}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"  {'':28s} {'wall':>8s}    {'CPU':>8s}")
    for key, (wall, cpu) in figures.items():
        print(f"  {key:28s} {wall:8.1f} ms {cpu:8.1f} ms")


if __name__ == "__main__":
    main()
