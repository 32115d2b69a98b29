#!/usr/bin/env bash
# The data-volume learning curve (issue 17 item 2): 3DVar's statistics, VAE-Var and DiffDA
# trained on the first 1, 2 and 5 years of heldsuarez-5.625-long, one forecast model for all
# (the emulator trained on all five years), cycled 15 days on the long world's test period and
# checked on its validation period. Resumable: rerun after a kill and finished parts are reused
# (the caches, `run --resume`; finished runs are skipped). Writes to
# ${OUT:-/tmp/learning-curve}; summarise.py makes this folder's tables and figure from there.
set -euo pipefail
OUT=${OUT:-/tmp/learning-curve}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=PASSIVE
WORLD=(--world heldsuarez-5.625-long --emulator-train-period 2001-01-01T00:00..2006-01-01T00:00
       --threads "${THREADS:-2}" -q)
# VAE-Var: the same number of optimiser steps at every data volume (60 epochs x 363 samples),
# so that the data, not the compute, changes: 363 / 728 / 1824 daily NMC samples.
declare -A END=([1]=2002 [2]=2003 [5]=2006) EPOCHS=([1]=60 [2]=30 [5]=12)
bench() { python -m bench "$@"; }

bench prepare --world heldsuarez-5.625-long -q
bench train emulator "${WORLD[@]}" --train-period 2001-01-01T00:00..2006-01-01T00:00 \
    --results "$OUT/emulator"
for y in 1 2 5; do
    SETS=(--train-period "2001-01-01T00:00..${END[$y]}-01-01T00:00"
          --set 3dvar.nmc_days=0 --set vaevar.sample_days=0 --set "vaevar.epochs=${EPOCHS[$y]}")
    resume=(); [ -f "$OUT/run-${y}y/config.json" ] && resume=(--resume)
    [ -f "$OUT/run-${y}y/tables/skill.csv" ] || \
    bench run "${WORLD[@]}" "${SETS[@]}" --methods none,3dvar,vaevar --density 0.001,0.01,0.5 \
        --days 15 --seeds 0 --out "$OUT/run-${y}y" "${resume[@]}"
    [ -f "$OUT/check-${y}y/analysis_check.csv" ] || bench check "${WORLD[@]}" "${SETS[@]}" \
        --methods 3dvar,vaevar --density 0.001,0.01,0.05,0.5 --out "$OUT/check-${y}y"
done
# DiffDA (two denoisers, 600 steps each whatever the data; ~4 s per analysis): its matched
# regime (1 %) only, after the cheaper methods; the ends of the curve first.
for y in 1 5 2; do
    SETS=(--train-period "2001-01-01T00:00..${END[$y]}-01-01T00:00")
    resume=(); [ -f "$OUT/diffda-${y}y/config.json" ] && resume=(--resume)
    [ -f "$OUT/diffda-${y}y/tables/skill.csv" ] || \
    bench run "${WORLD[@]}" "${SETS[@]}" --methods diffda --density 0.01 --days 15 --seeds 0 \
        --out "$OUT/diffda-${y}y" "${resume[@]}"
    [ -f "$OUT/check-diffda-${y}y/analysis_check.csv" ] || bench check "${WORLD[@]}" "${SETS[@]}" \
        --methods diffda --density 0.01,0.05 --out "$OUT/check-diffda-${y}y"
done
# VAE-Var with five years and 5 x the optimiser steps (60 epochs of 1824 samples): is the flat
# curve the data or the compute? (the same 3DVar and none rows as run-5y; VAE-Var only)
SETS=(--train-period "2001-01-01T00:00..2006-01-01T00:00" --set vaevar.sample_days=0
      --set vaevar.epochs=60)
resume=(); [ -f "$OUT/run-5y-steps5x/config.json" ] && resume=(--resume)
[ -f "$OUT/run-5y-steps5x/tables/skill.csv" ] || \
bench run "${WORLD[@]}" "${SETS[@]}" --methods vaevar --density 0.001,0.01,0.5 --days 15 \
    --seeds 0 --out "$OUT/run-5y-steps5x" "${resume[@]}"
[ -f "$OUT/check-5y-steps5x/analysis_check.csv" ] || bench check "${WORLD[@]}" "${SETS[@]}" \
    --methods vaevar --density 0.001,0.01,0.05,0.5 --out "$OUT/check-5y-steps5x"
