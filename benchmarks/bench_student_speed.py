"""Candidate student shapes against the shipped base: kFLOP per pixel, receptive field, ms per megapixel.

Every network is timed in turn, round after round, on the same 512^2 image through
``denoise_array`` (normalisation and tiling included), one thread, so the speed-ups share the
machine's drift (:func:`stemreg.tuning.latency.side_by_side_ms_per_mpx`). Untrained weights: the
time of a convolution does not depend on its values.

    python benchmarks/bench_student_speed.py [--rounds 9] [--threads 1] [--student JSON ...]
"""
from __future__ import annotations

import argparse
import json
import os

#: Candidates: narrower copies of the base's topology (they can start from a pruned copy of its
#: weights) and the unshuffle-by-4 students of the search space.
CANDIDATES = [
    {"levels": 4, "widths": [16, 32, 64, 128], "convs_per_level": 2, "unshuffle": 2},
    {"levels": 4, "widths": [12, 24, 48, 96], "convs_per_level": 2, "unshuffle": 2},
    {"levels": 4, "widths": [12, 24, 48, 64], "convs_per_level": 2, "unshuffle": 2},
    {"levels": 4, "widths": [8, 16, 32, 64], "convs_per_level": 2, "unshuffle": 2},
    {"levels": 4, "widths": [24, 48, 96, 128], "convs_per_level": 1, "unshuffle": 2},
    {"levels": 3, "widths": [32, 64, 128], "convs_per_level": 2, "unshuffle": 4},
    {"levels": 3, "widths": [48, 96, 128], "convs_per_level": 1, "unshuffle": 4},
    {"levels": 3, "widths": [64, 96, 128], "convs_per_level": 1, "unshuffle": 4},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-px", type=int, default=512)
    parser.add_argument("--student", action="append", help="architecture JSON (repeatable; default: the candidates)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from stemreg.models import build_model, flops_per_pixel
    from stemreg.models.pretrained import load_pretrained
    from stemreg.tuning.distill import Teacher, prunable
    from stemreg.tuning.latency import side_by_side_ms_per_mpx

    base, card = load_pretrained()
    teacher = Teacher(base, card["architecture"], "pretrained:" + card["name"])
    archs = [json.loads(s) for s in args.student] if args.student else CANDIDATES
    models = {"base": base}
    for arch in archs:
        full = {"kind": "reverse-hourglass", "dilation": 1, "kernel_size": 3, **arch}
        models[json.dumps(arch, separators=(",", ":"))] = build_model(full)
    ms = side_by_side_ms_per_mpx(models, image_px=args.image_px, rounds=args.rounds)
    print(f"{args.image_px}^2 image, {args.threads} thread(s), median of {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'network':<86} {'kFLOP/px':>8} {'RF px':>6} {'ms/Mpx':>7} {'speed-up':>8} pruned-warm-start")
    for name, model in models.items():
        label = f"base {json.dumps(card['architecture']['widths'])}, unshuffle 2" if name == "base" else name
        print(f"{label:<86} {flops_per_pixel(model) / 1e3:8.1f} {2 * model.receptive_radius_px + 1:6d} "
              f"{ms[name]:7.0f} {ms['base'] / ms[name]:7.2f}x {'-' if name == 'base' else prunable(teacher.model, model)}")


if __name__ == "__main__":
    main()
