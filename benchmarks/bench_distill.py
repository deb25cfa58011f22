"""Distilled student against the same architecture trained from scratch, for the same steps.

Both students draw the same stream of the condition (fresh fields, doses and noise over its range,
one FieldPool seed); the distilled one learns the clean target blended with the teacher's output
(:class:`stemreg.tuning.distill.TeacherStream`), the other the clean target alone. Both, and the
teacher, are scored on the condition's whole frozen benchmark (PSNR mean over bins) and timed per
megapixel by the same scorer (one thread each).

    python benchmarks/bench_distill.py [--condition low-dose] [--steps 400] [--student JSON]
        [--teacher-weight 0.5 ...] [--per-bin N] [--threads 1] [--json]

The teacher is the shipped pretrained base (the condition's champion with nothing registered).
"""
from __future__ import annotations

import argparse
import json
import time

#: A student ~3x faster than the shipped base: 3 levels after an unshuffle by 4 (~14 kFLOP/px).
DEFAULT_STUDENT = {"kind": "reverse-hourglass", "levels": 3, "widths": [32, 64, 128], "convs_per_level": 2,
                   "unshuffle": 4, "dilation": 1, "kernel_size": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-px", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--student", default=json.dumps(DEFAULT_STUDENT), help="architecture JSON")
    parser.add_argument("--teacher-weight", type=float, nargs="+", default=[0.5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-bin", type=int, default=None,
                        help="benchmark images per bin to score on (default: all of them)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from stemreg.acquisition import load_condition
    from stemreg.acquisition.stream import FieldPool
    from stemreg.models import TrainConfig, build_model, flops_per_pixel, train
    from stemreg.models.pretrained import load_pretrained
    from stemreg.tuning.distill import BenchSlice, TeacherStream
    from stemreg.tuning.latency import ms_per_mpx

    condition = load_condition(args.condition)
    bench = BenchSlice.of(condition, args.per_bin or condition.benchmark_per_bin)  # default: the whole benchmark
    teacher, card = load_pretrained()
    arch = json.loads(args.student)
    report = {"condition": condition.name, "n_images": len(bench.bins), "steps": args.steps,
              "batch_size": args.batch_size, "patch_px": args.patch_px, "threads": args.threads,
              "teacher": {"name": card["name"], "psnr": bench.psnr(teacher),
                          "ms_per_mpx": ms_per_mpx(teacher, image_px=512, repeats=5),
                          "kflop_per_px": flops_per_pixel(teacher) / 1e3},
              "student_architecture": arch, "students": []}
    epochs = 4
    config = TrainConfig(epochs=epochs, steps_per_epoch=max(1, args.steps // epochs), batch_size=args.batch_size,
                         patch_px=args.patch_px, lr=args.lr, seed=args.seed)
    for weight in [0.0, *args.teacher_weight]:
        pool = FieldPool(condition, n_fields=32, size_px=192, seed=args.seed + 11)
        stream = TeacherStream(pool, teacher, weight) if weight > 0 else pool
        torch.manual_seed(args.seed)
        student = build_model(arch)
        started = time.perf_counter()
        trained = train(student, config, train_data=stream, val_data=None, progress=False).model
        seconds = time.perf_counter() - started
        row = {"teacher_weight": weight, "kind": "distilled" if weight > 0 else "from scratch",
               "psnr": bench.psnr(trained), "ms_per_mpx": ms_per_mpx(trained, image_px=512, repeats=5),
               "kflop_per_px": flops_per_pixel(trained) / 1e3, "train_seconds": seconds}
        report["students"].append(row)
        print(f"# {row['kind']} (teacher weight {weight}): {row['psnr']:.2f} dB, {row['ms_per_mpx']:.0f} ms/Mpx, "
              f"trained {seconds:.0f} s", flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    t = report["teacher"]
    print(f"{condition.name}: benchmark, {report['n_images']} images (PSNR mean over bins); "
          f"{args.steps} steps of {args.batch_size} x {args.patch_px} px; {args.threads} thread(s)")
    print(f"teacher {t['name']}: {t['psnr']:.2f} dB, {t['ms_per_mpx']:.0f} ms/Mpx, {t['kflop_per_px']:.1f} kFLOP/px")
    scratch = report["students"][0]
    for row in report["students"]:
        print(f"student {row['kind']:<12} (teacher weight {row['teacher_weight']:.1f}): {row['psnr']:.2f} dB "
              f"({row['psnr'] - t['psnr']:+.2f} vs teacher, {row['psnr'] - scratch['psnr']:+.2f} vs scratch), "
              f"{row['ms_per_mpx']:.0f} ms/Mpx ({t['ms_per_mpx'] / row['ms_per_mpx']:.1f}x faster than the teacher), "
              f"{row['kflop_per_px']:.1f} kFLOP/px")


if __name__ == "__main__":
    main()
