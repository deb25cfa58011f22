"""Distilled student against the same architecture trained from scratch, for the same steps.

Every student draws the same stream of the condition (fresh fields, doses and noise over its range,
one FieldPool seed) from the same initial weights and seed. ``from scratch`` learns the clean
target; ``distilled`` the clean target blended with the teacher's output
(:class:`stemreg.tuning.distill.TeacherStream`, ``--teacher-weight``); with ``--pruned`` two more
rows start from a pruned copy of the teacher (:func:`stemreg.tuning.distill.prune_into`; the student
must be a narrower member of the teacher's topology): ``pruned, clean target`` and ``pruned +
distilled`` (the warm start and the target, one at a time). The teacher, the shipped base (when it
is not the teacher) and every student are scored on the same benchmark images (PSNR mean over
bins) and timed side by side (:func:`stemreg.tuning.latency.side_by_side_ms_per_mpx`, one thread).

    python benchmarks/bench_distill.py [--condition low-dose] [--steps 400] [--student JSON]
        [--teacher-weight 0.5 ...] [--pruned] [--teacher-dir DIR --teacher-name NAME]
        [--no-scratch] [--only-pruned] [--per-bin N] [--epochs 4] [--save DIR] [--threads 1] [--json]

The teacher is the shipped pretrained base unless ``--teacher-dir`` names a folder written by
``stemreg pretrain --out DIR --name NAME``. ``--epochs`` only sets how often progress is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import time

#: A student ~3x faster than the shipped base: 3 levels after an unshuffle by 4 (~14 kFLOP/px).
DEFAULT_STUDENT = {"kind": "reverse-hourglass", "levels": 3, "widths": [32, 64, 128], "convs_per_level": 2,
                   "unshuffle": 4, "dilation": 1, "kernel_size": 3}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="low-dose")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4, help="progress lines (slice PSNR) per student")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-px", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--student", default=json.dumps(DEFAULT_STUDENT), help="architecture JSON")
    parser.add_argument("--teacher-weight", type=float, nargs="+", default=[0.5])
    parser.add_argument("--pruned", action="store_true", help="also students warm-started from a pruned teacher")
    parser.add_argument("--no-scratch", action="store_true", help="skip the clean-target rows (long runs)")
    parser.add_argument("--only-pruned", action="store_true", help="with --pruned: skip the randomly initialised rows")
    parser.add_argument("--teacher-dir", default=None, help="folder of a `stemreg pretrain --out` teacher")
    parser.add_argument("--teacher-name", default="low-dose-base")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-bin", type=int, default=None,
                        help="benchmark images per bin to score on (default: all of them)")
    parser.add_argument("--save", default=None, help="folder for each student's state_dict (<kind>.pth)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    from pathlib import Path

    from stemreg.acquisition import load_condition
    from stemreg.acquisition.stream import FieldPool
    from stemreg.models import TrainConfig, build_model, flops_per_pixel, train
    from stemreg.models.pretrained import load_pretrained
    from stemreg.tuning.distill import BenchSlice, TeacherStream, prune_into
    from stemreg.tuning.latency import side_by_side_ms_per_mpx

    condition = load_condition(args.condition)
    bench = BenchSlice.of(condition, args.per_bin or condition.benchmark_per_bin)  # default: the whole benchmark
    base, base_card = load_pretrained()
    teacher, card = (load_pretrained(args.teacher_name, Path(args.teacher_dir)) if args.teacher_dir
                     else (base, base_card))
    arch = json.loads(args.student)
    if args.pruned:
        prune_into(build_model(arch), teacher)  # refuses, in one line, a student that is no pruned member
    started = time.perf_counter()
    report = {"condition": condition.name, "n_images": len(bench.bins), "steps": args.steps,
              "batch_size": args.batch_size, "patch_px": args.patch_px, "lr": args.lr, "threads": args.threads,
              "teacher": {"name": card["name"], "psnr": bench.psnr(teacher),
                          "kflop_per_px": flops_per_pixel(teacher) / 1e3},
              "student_architecture": arch, "students": []}
    if args.teacher_dir:
        report["base"] = {"name": base_card["name"], "psnr": bench.psnr(base), "kflop_per_px": flops_per_pixel(base) / 1e3}
    print(f"# teacher {card['name']}: {report['teacher']['psnr']:.2f} dB on {len(bench.bins)} images", flush=True)
    epochs = max(1, min(args.epochs, args.steps))
    config = TrainConfig(epochs=epochs, steps_per_epoch=max(1, args.steps // epochs), batch_size=args.batch_size,
                         patch_px=args.patch_px, lr=args.lr, seed=args.seed)
    rows = [] if args.no_scratch else [("from scratch", 0.0, False)]
    rows += [("distilled", w, False) for w in args.teacher_weight]
    rows = [] if args.only_pruned and args.pruned else rows
    if args.pruned:
        rows += ([] if args.no_scratch else [("pruned, clean target", 0.0, True)])
        rows += [("pruned + distilled", w, True) for w in args.teacher_weight]
    trained_models = {}
    for kind, weight, pruned in rows:
        pool = FieldPool(condition, n_fields=32, size_px=192, seed=args.seed + 11)
        stream = TeacherStream(pool, teacher, weight) if weight > 0 else pool
        torch.manual_seed(args.seed)
        student = build_model(arch)
        if pruned:
            prune_into(student, teacher)
        t0 = time.perf_counter()

        def progress(epoch: int, metrics: dict, kind=kind, student=student, t0=t0) -> None:
            if epoch < epochs:
                print(f"#   {kind} w={weight}: step {epoch * config.steps_per_epoch}, loss {metrics['train_loss']:.4f}, "
                      f"{bench.psnr(student):.2f} dB, {time.perf_counter() - t0:.0f} s", flush=True)
                student.train()

        trained = train(student, config, train_data=stream, val_data=None, progress=False, on_epoch=progress).model
        seconds = time.perf_counter() - t0
        label = f"{kind} (teacher weight {weight:.2f})"
        trained_models[label] = trained
        row = {"kind": kind, "teacher_weight": weight, "pruned_warm_start": pruned, "psnr": bench.psnr(trained),
               "kflop_per_px": flops_per_pixel(trained) / 1e3, "train_seconds": seconds, "label": label}
        report["students"].append(row)
        print(f"# {label}: {row['psnr']:.2f} dB, trained {seconds:.0f} s", flush=True)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            torch.save(trained.state_dict(), Path(args.save) / f"{kind.replace(' ', '_').replace(',', '')}-w{weight}.pth")
    timed = {"teacher": teacher, **({"base": base} if args.teacher_dir else {}), **trained_models}
    ms = side_by_side_ms_per_mpx(timed, image_px=512, rounds=7)
    report["teacher"]["ms_per_mpx"] = ms["teacher"]
    if args.teacher_dir:
        report["base"]["ms_per_mpx"] = ms["base"]
    for row in report["students"]:
        row["ms_per_mpx"] = ms[row["label"]]
    report["noisy_psnr"] = bench.noisy_psnr()
    report["seconds"] = time.perf_counter() - started
    report["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_report(report, args)


def print_report(report: dict, args: argparse.Namespace) -> None:
    t = report["teacher"]
    print(f"{report['condition']}: benchmark, {report['n_images']} images (PSNR mean over bins); {args.steps} steps of "
          f"{args.batch_size} x {args.patch_px} px at lr {args.lr}; {args.threads} thread(s); timed side by side; "
          f"load average {report['load_average_end']:.1f} at the end, {report['seconds']:.0f} s in all")
    print(f"noisy input: {report['noisy_psnr']:.2f} dB")
    print(f"teacher {t['name']}: {t['psnr']:.2f} dB, {t['ms_per_mpx']:.0f} ms/Mpx, {t['kflop_per_px']:.1f} kFLOP/px")
    ref = report.get("base", t)
    if "base" in report:
        print(f"shipped base {ref['name']}: {ref['psnr']:.2f} dB, {ref['ms_per_mpx']:.0f} ms/Mpx")
    scratch = next((r for r in report["students"] if r["kind"] == "from scratch"), None)
    for row in report["students"]:
        vs = f", {row['psnr'] - scratch['psnr']:+.2f} vs scratch" if scratch else ""
        print(f"student {row['label']:<42}: {row['psnr']:.2f} dB ({row['psnr'] - t['psnr']:+.2f} vs teacher, "
              f"{row['psnr'] - ref['psnr']:+.2f} vs base{vs}), {row['ms_per_mpx']:.0f} ms/Mpx "
              f"({ref['ms_per_mpx'] / row['ms_per_mpx']:.2f}x faster than the base), {row['kflop_per_px']:.1f} kFLOP/px")


if __name__ == "__main__":
    main()
