#!/bin/sh
# The fast student of issue 20, rerunnable: (1) a teacher fine-tuned from the shipped base on the
# current simulator (the shipped base predates revision 5), (2) one long distillation of a
# student 3.4x faster than the base (the base's topology, widths 10-20-40-80 instead of 24-48-96-128, started from a
# pruned copy of the teacher), scored on the whole low-dose benchmark beside the teacher and the
# shipped base, timed side by side. About 30 min on one core of the busy machine (load ~11). OUT defaults to ./fast_student.
set -e
OUT=${OUT:-fast_student}
STEPS=${STEPS:-4000}
mkdir -p "$OUT"
[ -f "$OUT/teacher/low-dose-rev5.pth" ] || stemreg pretrain --condition low-dose --from-base low-dose-base \
    --steps 400 --seed 121 --lr 5e-4 --threads 1 --fields 48 --out "$OUT/teacher" --name low-dose-rev5
python benchmarks/bench_distill.py --condition low-dose --steps "$STEPS" --epochs 8 --patch-px 96 --lr 2e-3 \
    --student '{"kind":"reverse-hourglass","levels":4,"widths":[10,20,40,80],"convs_per_level":2,"unshuffle":2,"dilation":1,"kernel_size":3}' \
    --pruned --no-scratch --only-pruned --teacher-weight 0.5 --teacher-dir "$OUT/teacher" --teacher-name low-dose-rev5 \
    --threads 1 --save "$OUT/students"
