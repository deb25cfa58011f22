#!/usr/bin/env bash
# Rebuild the shipped pretrained base for simulator revision 5 (detector read-out, bright field) with
# the multislice library mixed in: the commands behind models/pretrained/low-dose-base.* (its card
# records the pretrain command as run). Measured on 2 shared CPU cores (load 5-14): the library's
# three crystals in 14 minutes, the 1000 steps in 20 minutes.
#
#   scripts/retrain_base.sh [WORK_DIR]     (default: ./retrain-base; nothing in the repository changes
#                                          until you copy WORK_DIR/base/low-dose-base.* to models/pretrained/)
#
# abTEM 1.0.11 needs zarr >= 3, which RosettaSciIO's .zspy writer in the main environment does not
# accept (zarr < 3), so the library is built in a separate virtual environment that sees the main
# one's packages (--system-site-packages) and adds abTEM and ASE on top. Reading the library needs
# neither: only numpy.
set -euo pipefail
WORK="${1:-retrain-base}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
if [ ! -x "$WORK/abtem-env/bin/stemreg" ]; then
    python -m venv --system-site-packages "$WORK/abtem-env"
    "$WORK/abtem-env/bin/pip" install -q "abtem==1.0.11" "ase>=3.23"
    "$WORK/abtem-env/bin/pip" install -q --no-deps -e "$REPO"
fi
# Si [110] is left out: it had not finished after 25 CPU-minutes on the shared machine.
OMP_NUM_THREADS=1 "$WORK/abtem-env/bin/stemreg" multislice --out "$WORK/multislice" --phonons 3 \
    --crystal MoS2-001 --crystal SrTiO3-001 --crystal Au-110
mkdir -p "$WORK/base"
stemreg pretrain --condition low-dose --from-base low-dose-base --steps 1000 --seed 121 --lr 5e-4 \
    --threads 1 --fields 48 --library "$WORK/multislice" --out "$WORK/base"
