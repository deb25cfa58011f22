"""Peak memory of denoising one image with the default reverse hourglass, per image size.

Each size runs in a fresh Python process, so the figure is that process's peak
resident set (``ru_maxrss``) after import and model build ("baseline") and after
one ``denoise_array`` call ("peak"); their difference is what the denoising
itself costs. Tiling (256 px tiles, 8 per forward pass) should keep that cost
close to a few copies of the image, whatever its size.

Usage::

    python benchmarks/bench_memory.py [--sizes 512,1024,2048,4096] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys
import numpy as np
import torch
from stemreg.models import ReverseHourglass, denoise_array

torch.set_num_threads(2)
size = int(sys.argv[1])
model = ReverseHourglass().eval()  # the seed's 8 layers, 8-16-32-64-32-16-8
image = np.random.default_rng(0).poisson(40.0, (size, size)).astype(np.float32)
denoise_array(model, image[:64, :64])  # warm-up: allocator and kernels, not the image
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = denoise_array(model, image)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size_px": size, "image_mib": image.nbytes / 2**20,
                  "baseline_mib": baseline / 1024, "peak_mib": peak / 1024}))
"""


def measure(size_px: int) -> dict[str, float]:
    """Run one size in a child process; returns its figures (MiB; ru_maxrss is KiB on Linux)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(size_px)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"size {size_px} px failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["denoise_mib"] = row["peak_mib"] - row["baseline_mib"]
    row["denoise_per_image"] = row["denoise_mib"] / row["image_mib"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024,2048,4096", help="comma-separated image edges in pixels")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    rows = [measure(int(s)) for s in args.sizes.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| image (px) | image (MiB) | baseline RSS (MiB) | peak RSS (MiB) | denoising (MiB) | x image |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size_px']}^2 | {r['image_mib']:.1f} | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} "
              f"| {r['denoise_mib']:.0f} | {r['denoise_per_image']:.1f} |")


if __name__ == "__main__":
    main()
