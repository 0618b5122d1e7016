#!/usr/bin/env bash
# Issue 14's stage-2 lever experiments: heads trained on a frozen backbone with one setting changed at a time, each
# run a resumable `mess_core train --stage exits` (re-running skips finished runs). Tables: benchmarks/exit_table.py.
#   bash benchmarks/levers_stage2.sh BACKBONE.pt OUT_DIR [EXPERIMENT ...]
# BACKBONE.pt: a model.pt or multi_exit.pt whose backbone weights start the run (stage 1's result).
set -euo pipefail
cd "$(dirname "$0")/.."
init=$1; out=$2; shift 2
common=(--stage exits --init "$init" --model mobilenetv2_fcn --data camvid --data-root ../shared/datasets/camvid
        --exits 6 --crop 180x240 --eval-size 180x240 --scale 0.4 0.8 --batch-size 8 --optimizer adamw
        --eval-every 2 --no-progress --space crm50p-b1-rdi-fcn,crm25p-b0-fcn)
run() {  # name, extra arguments
  local dir="$out/$1"; shift
  if [ -f "$dir/multi_exit.pt" ]; then echo "$dir: done"; return; fi
  if [ -f "$dir/checkpoint.pt" ]; then
    .venv/bin/python -m mess_core train --resume --out "$dir"
  else
    .venv/bin/python -m mess_core train "${common[@]}" "$@" --out "$dir"
  fi
}
for name in "${@:-pfd-6}"; do
  case "$name" in
    pfd-6)     run "$name" --loss pfd --lr 0.002 --epochs 6 ;;
    pfd-12)    run "$name" --loss pfd --lr 0.002 --epochs 12 ;;
    pfd-6-lr5) run "$name" --loss pfd --lr 0.005 --epochs 6 ;;
    ce-6)      run "$name" --loss ce --lr 0.002 --epochs 6 ;;
    kd-6)      run "$name" --loss kd --lr 0.002 --epochs 6 ;;
    cb05-6)    run "$name" --loss pfd --lr 0.002 --epochs 6 --class-balance 0.5 ;;
    cb1-6)     run "$name" --loss pfd --lr 0.002 --epochs 6 --class-balance 1.0 ;;
    # stage 1's light exits (nocrm-b0-fcn) kept instead of discarded: that configuration starts from them
    init-6)    run "$name" --loss pfd --lr 0.002 --epochs 6 --space nocrm-b0-fcn,crm50p-b1-rdi-fcn --init-exits ;;
    init-cb05-6) run "$name" --loss pfd --lr 0.002 --epochs 6 --space nocrm-b0-fcn,crm50p-b1-rdi-fcn --init-exits \
                   --class-balance 0.5 ;;
    # what successive halving cost: configurations the reference study stopped at its rungs (nocrm-b1-fcn at exits
    # 1-2 after epoch 1, crm50p-b2-fcn at exits 3-5) trained alone for the study's whole stage 2; the exits at which
    # they survived must reproduce the study's heads (per-head random streams), the others say what stopping lost
    halving-check) run "$name" --loss pfd --lr 0.002 --epochs 8 --class-balance 0.5 --space nocrm-b1-fcn,crm50p-b2-fcn ;;
    *) echo "unknown experiment $name" >&2; exit 2 ;;
  esac
done
