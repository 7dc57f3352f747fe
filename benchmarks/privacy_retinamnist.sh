#!/usr/bin/env bash
# Privacy-utility benchmark of the classification task on RetinaMNIST (3 sites, 30 rounds):
# sample-level DP-SGD at target epsilon in {inf, 16, 8, 4, 2} (inf = same GroupNorm model, no DP),
# plus the non-private BatchNorm baseline, each audited (loss / LiRA / RMIA membership inference
# with 8 reference models, gradient inversion). Results: $OUT/summary.md and each run's audit.md.
# Usage: benchmarks/privacy_retinamnist.sh [OUT]   (from the repository root; ~1 h on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/bench-privacy-retinamnist}
FEDSILO=${FEDSILO:-fedsilo}  # e.g. FEDSILO="python -m fedsilo"
CFG=configs/retinamnist-classify.toml
COMMON=(--set experiment.threads=1 --set audit.reference_models=8 --set audit.inversion_batch_sizes=[1,4])
$FEDSILO sweep "$CFG" --out "$OUT/sample-dp" --modes federated --audit \
  --grid privacy.epsilon=inf,16,8,4,2 --set privacy.mode=sample "${COMMON[@]}"
if [ ! -f "$OUT/no-dp/final.pt" ]; then
  $FEDSILO run "$CFG" --out "$OUT/no-dp" "${COMMON[@]}"
fi
[ -f "$OUT/no-dp/audit.json" ] || $FEDSILO audit "$OUT/no-dp"
