#!/usr/bin/env bash
# The learned methods at the papers' observation regimes (issue 17, item 5): VAE-Var tuned per
# density on the validation period by `bench tune` (its declared grid: λ x inner iterations, 5
# days, seed 0), then frozen on the test period next to its defaults; DiffDA with its defaults
# (its tuning at these densities is not run: ~30 min more). Densities from
# presets/paper-regimes.toml not already in results/heldsuarez-paper: 0.001 (VAE-Var's 1,000
# columns relative to the resolved scales), 0.2, 0.5 (its spacing in km). Resumable: finished
# steps are skipped. Writes to ${OUT:-/tmp/regimes-learned}.
set -euo pipefail
OUT=${OUT:-/tmp/regimes-learned}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
bench() { python -m bench "$@"; }
DENSITIES=0.001,0.2,0.5
[ -f "$OUT/tune/tuned.toml" ] || bench tune --methods vaevar --density "$DENSITIES" --days 5 \
    --seeds 0 --threads 1 -q --out "$OUT/tune"
[ -f "$OUT/default/tables/skill.csv" ] || bench run --methods none,vaevar,diffda \
    --density "$DENSITIES" --days 15 --seeds 0 --threads 1 -q --out "$OUT/default"
[ -f "$OUT/tuned/tables/skill.csv" ] || bench run --methods vaevar --density "$DENSITIES" \
    --days 15 --seeds 0 --tuned "$OUT/tune/tuned.toml" --threads 1 -q --out "$OUT/tuned"
# DiffDA tuned at the dense regimes (its declared grid: mask σ x steps), where it cycles stably
[ -f "$OUT/tune-diffda/tuned.toml" ] || bench tune --methods diffda --density 0.2,0.5 \
    --days 5 --seeds 0 --threads 1 -q --out "$OUT/tune-diffda"
[ -f "$OUT/tuned-diffda/tables/skill.csv" ] || bench run --methods diffda --density 0.2,0.5 \
    --days 15 --seeds 0 --tuned "$OUT/tune-diffda/tuned.toml" --threads 1 -q \
    --out "$OUT/tuned-diffda"
