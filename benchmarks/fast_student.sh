#!/bin/sh
# The fast student of issue 20, rerunnable: one long distillation of a student about 3x faster than the
# shipped base (the base's topology, widths 10-20-40-80 instead of 24-48-96-128, started from a pruned
# copy of the base's weights, target 0.5 clean + 0.5 the base's output), scored on the whole low-dose
# benchmark beside the base and timed side by side with it in the same process.
# The teacher is the shipped base (retrained for simulator revision 5 on 2026-12-07; before that a
# revision-5 teacher had to be fine-tuned first: TEACHER_DIR/TEACHER_NAME still take one).
# 16000 steps: about 16 minutes on one core at load 2-4. OUT defaults to ./fast_student.
# WIDTHS=9,18,36,72 gave 31.76 dB (-0.15 vs the base) at 2.9-4.9x its speed (docs/RESULTS.md, issue 20).
set -e
OUT=${OUT:-fast_student}
STEPS=${STEPS:-16000}
# WIDTHS: the student's widths per level (the base's topology); 10-20-40-80 by default.
WIDTHS=${WIDTHS:-10,20,40,80}
mkdir -p "$OUT"
TEACHER=""
[ -n "$TEACHER_DIR" ] && TEACHER="--teacher-dir $TEACHER_DIR --teacher-name ${TEACHER_NAME:-low-dose-base}"
python benchmarks/bench_distill.py --condition low-dose --steps "$STEPS" --epochs 8 --patch-px 96 --lr 2e-3 \
    --student '{"kind":"reverse-hourglass","levels":4,"widths":['"$WIDTHS"'],"convs_per_level":2,"unshuffle":2,"dilation":1,"kernel_size":3}' \
    --pruned --no-scratch --only-pruned --teacher-weight 0.5 $TEACHER --threads 1 --save "$OUT/students"
