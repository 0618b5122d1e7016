#!/usr/bin/env bash
# Issue 23's stage-1 levers under the scene-disjoint protocol (train on 0016E5 + 0001TP, evaluate on 0006R0), two
# runs at a time with one torch thread each (2 cores). Each is `study build --stop-after pretrain`, so running this
# again resumes every unfinished run from its last checkpoint and skips finished ones; a finished run's stage-1 cache
# on 0006R0 (runs/sd-NAME-0006R0.npz, what lever_delta reads) is built next, once. Logs: runs/logs/sd-NAME.log.
#   bash benchmarks/levers_sd.sh [NAME ...]          # default: every studies/experiments/camvid-sd-*.yaml
#   .venv/bin/python -m benchmarks.exit_table runs/camvid-sd-*/pretrain   # the tables BENCHMARKS.md records
#   .venv/bin/python -m benchmarks.stage1_cache runs/camvid-sd-NAME/pretrain --data camvid \
#       --data-root ../shared/datasets/camvid --split train --groups 0006R0 --size 180 240 --out runs/sd-NAME-0006R0.npz
#   .venv/bin/python -m benchmarks.lever_delta runs/sd-base-0006R0.npz runs/sd-*-0006R0.npz   # with 90% intervals
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/logs
if [ $# -gt 0 ]; then names=("$@"); else
  names=(); for f in studies/experiments/camvid-sd-*.yaml; do n=${f##*/camvid-sd-}; names+=("${n%.yaml}"); done
fi
printf '%s\n' "${names[@]}" | OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 xargs -P 2 -I{} sh -c \
  '.venv/bin/python -m mess_core study build studies/experiments/camvid-sd-{}.yaml --stop-after pretrain >> runs/logs/sd-{}.log 2>&1 \
   && { [ -f runs/sd-{}-0006R0.npz ] || .venv/bin/python -m benchmarks.stage1_cache runs/camvid-sd-{}/pretrain --data camvid \
        --data-root ../shared/datasets/camvid --split train --groups 0006R0 --size 180 240 --out runs/sd-{}-0006R0.npz \
        >> runs/logs/sd-{}.log 2>&1; } && echo "sd-{}: done" || echo "sd-{}: failed, see runs/logs/sd-{}.log"'
