#!/usr/bin/env bash
# The FedGAN paper's table on RetinaMNIST: realism, FD, KID, precision/recall and "% of
# centralised" per number of severity-specialised sites, federated vs centralised (MODES; add
# ",local" for the local references), mean +- std over 3 seeds. About 55 CPU-minutes; SEEDS can
# split the work over processes (e.g. SEEDS=0,1 and SEEDS=2 into two OUT folders; copy the second's
# run folders into the first and run once more with all seeds into a fresh OUT holding both: finished
# runs are skipped and the summary covers them all).
# Usage (from the repository root): benchmarks/fedgan_retinamnist.sh [OUT]
set -euo pipefail
OUT=${1:-runs/bench-fedgan-retinamnist}
FEDSILO=${FEDSILO:-fedsilo}  # e.g. FEDSILO="python -m fedsilo"
MODES=${MODES:-federated,centralised}
SEEDS=${SEEDS:-0,1,2}
$FEDSILO sweep configs/fedgan-retinamnist.toml --out "$OUT" --grid federation.num_sites=3,5,7,10 --seed-list "$SEEDS" \
  --modes "$MODES"
