#!/usr/bin/env bash
# The FedGAN paper's table on RetinaMNIST: realism, FD, KID, precision/recall and "% of
# centralised" per number of severity-specialised sites, federated vs centralised vs local,
# mean +- std over 3 seeds. Usage (from the repository root, ~35 min on 2 CPU cores):
#   benchmarks/fedgan_retinamnist.sh [OUT]
set -euo pipefail
OUT=${1:-runs/bench-fedgan-retinamnist}
FEDSILO=${FEDSILO:-fedsilo}  # e.g. FEDSILO="python -m fedsilo"
$FEDSILO sweep configs/fedgan-retinamnist.toml --out "$OUT" --grid federation.num_sites=3,5,7,10 --seeds 3
