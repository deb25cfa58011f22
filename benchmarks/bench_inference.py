"""Inference speed of the shipped base's architecture against this machine's own matmul peak.

Prints: Mpixel/s through ``denoise_array`` (normalisation + tiling included)
and through the bare network, FLOP per pixel, achieved GFLOP/s, and the
float32 matmul GFLOP/s measured in the same run, so the figures say how
far from the hardware's compute bound the convolutions run; the seconds per
frame and the tiling overhead (denoise_array against the bare network on the
same image, side by side); also the time of one training step.

Usage::

    python benchmarks/bench_inference.py [--size-px 1024] [--repeats 3] [--threads N]
                                         [--arch '{"kind": "reverse-hourglass", ...}'] [--device auto] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch


def best_seconds(fn: Callable[[], Any], *, repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def train_step_seconds(model: torch.nn.Module, device: torch.device, *, batch_size: int, patch_px: int,
                       repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of one Adam step (forward, L2 loss, backward) on a patch batch; restores the weights."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(batch_size, 1, patch_px, patch_px, device=device)
    y = torch.randn_like(x)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = torch.mean((model(x) - y) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    try:
        return best_seconds(step, repeats=repeats, sync=sync)
    finally:
        model.load_state_dict(state)
        model.eval()


def matmul_peak_gflops(device: torch.device, *, n: int, repeats: int, sync: Callable[[], None]) -> float:
    """float32 GFLOP/s of an n x n matmul: a practical compute ceiling for this device."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    seconds = best_seconds(lambda: torch.mm(a, b), repeats=repeats, sync=sync)
    return 2 * n ** 3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-px", type=int, default=1024, help="edge of the square test image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--arch", default=None, help="architecture JSON (default: the multi-scale preset, the "
                                                     "shipped base's shape)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tile-px", type=int, default=0, help="tile edge (0: denoise_array's default, the whole "
                                                               "image up to 1024 px)")
    parser.add_argument("--train-batch", type=int, default=8, help="patches per timed training step")
    parser.add_argument("--train-patch-px", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    from stemreg.models import architecture_of, build_model, denoise_array, flops_per_pixel, pick_device
    from stemreg.models.config import ArchitectureName, architecture

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    arch = json.loads(args.arch) if args.arch else architecture(ArchitectureName.MULTISCALE)
    model = build_model(arch).to(device).eval()
    flops = flops_per_pixel(model)
    pixels = args.size_px ** 2
    image = np.random.default_rng(0).poisson(20, (args.size_px, args.size_px)).astype(np.float32)

    tile = args.tile_px or None
    tiled_s = best_seconds(lambda: denoise_array(model, image, tile_px=tile, device=device),
                           repeats=args.repeats, sync=sync)
    x = torch.from_numpy(image)[None, None].to(device)
    with torch.inference_mode():
        bare_s = best_seconds(lambda: model(x), repeats=args.repeats, sync=sync)
    train_s = train_step_seconds(model, device, batch_size=args.train_batch, patch_px=args.train_patch_px,
                                 repeats=max(args.repeats, 5), sync=sync)
    peak = matmul_peak_gflops(device, n=2048 if device.type == "cpu" else 8192, repeats=args.repeats, sync=sync)

    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        "architecture": architecture_of(model),
        "image_px": [args.size_px, args.size_px],
        "flops_per_pixel": flops,
        "denoise_array_seconds": tiled_s,
        "bare_network_seconds": bare_s,
        "tiling_overhead": tiled_s / bare_s - 1,
        "denoise_array_mpix_per_s": pixels / tiled_s / 1e6,
        "denoise_array_gflops": flops * pixels / tiled_s / 1e9,
        "bare_network_mpix_per_s": pixels / bare_s / 1e6,
        "bare_network_gflops": flops * pixels / bare_s / 1e9,
        "matmul_peak_gflops": peak,
    }
    train_pixels = args.train_batch * args.train_patch_px ** 2
    result.update({
        "train_step_s": train_s,
        "train_batch": [args.train_batch, args.train_patch_px, args.train_patch_px],
        "train_mpix_per_s": train_pixels / train_s / 1e6,
        # backward costs about twice the forward pass
        "train_gflops": 3 * flops * train_pixels / train_s / 1e9,
    })
    result["fraction_of_matmul_peak"] = result["bare_network_gflops"] / peak
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"device                 {result['device']} ({result['torch_threads']} threads)")
    print(f"architecture           {json.dumps(result['architecture'])}")
    print(f"image                  {args.size_px} x {args.size_px} px")
    print(f"FLOP per pixel         {flops:,.0f}")
    print(f"denoise_array          {result['denoise_array_mpix_per_s']:.3f} Mpixel/s "
          f"({result['denoise_array_gflops']:.1f} GFLOP/s, {'tiles of %d px' % args.tile_px if args.tile_px else 'default tiling'}); "
          f"{tiled_s:.3f} s per frame")
    print(f"bare network           {result['bare_network_mpix_per_s']:.3f} Mpixel/s "
          f"({result['bare_network_gflops']:.1f} GFLOP/s); {bare_s:.3f} s per frame")
    print(f"tiling overhead        {100 * result['tiling_overhead']:+.1f} % (denoise_array vs bare network)")
    print(f"training step          {train_s * 1e3:.0f} ms for {args.train_batch} x {args.train_patch_px}^2 px "
          f"({result['train_mpix_per_s']:.3f} Mpixel/s, ~{result['train_gflops']:.1f} GFLOP/s fwd+bwd)")
    print(f"matmul peak (float32)  {peak:.1f} GFLOP/s")
    print(f"network / matmul peak  {100 * result['fraction_of_matmul_peak']:.0f} %")


if __name__ == "__main__":
    main()
