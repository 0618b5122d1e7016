#!/usr/bin/env bash
# The three MESS training stages end to end on the synthetic dataset (CPU, about 10 minutes on 2 cores).
# Usage: bash benchmarks/three_stages_synthetic.sh [RUN_DIR]   (default /tmp/runs/syn)
set -euo pipefail
RUN=${1:-/tmp/runs/syn}
cd "$(dirname "$0")/.."
C="--model mobilenetv2_fcn --data synthetic --crop 120x160 --data-option size=[120,160] --batch-size 16 --no-progress --exits 6"
.venv/bin/python -m mess_core train --stage backbone $C --epochs 12 --optimizer adamw --lr 0.002 --out "$RUN"/backbone
.venv/bin/python -m mess_core train --stage pretrain $C --epochs 4 --optimizer adamw --lr 0.0005 --init "$RUN"/backbone/model.pt --out "$RUN"/pretrain
.venv/bin/python -m mess_core train --stage exits $C --epochs 3 --optimizer adamw --lr 0.002 --space nocrm-b0-fcn,crm25p-b1-rdi-fcn,crm50p-b2-rdi-deeplab --init "$RUN"/pretrain/model.pt --out "$RUN"/exits
