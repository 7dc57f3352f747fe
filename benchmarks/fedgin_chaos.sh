#!/usr/bin/env bash
# FedGIN on real MRI: CHAOS T2 patients at two MRI hospitals + a phantom CT hospital; federated
# GIN vs centralised GIN vs no augmentation vs local-only, tested on 5 held-out CHAOS patients
# (and the TotalSegmentator CT). Needs ../shared/data. Usage: benchmarks/fedgin_chaos.sh [OUT] [SEEDS]
set -euo pipefail
OUT=${1:-runs/bench-fedgin-chaos}
SEEDS=${2:-1}
# The run size used for benchmarks/RESULTS.md on 2 CPU cores (the config itself is the full-size study):
SIZE=${SIZE:-"--set unet.base_width=8 --set federation.rounds=15 --set federation.eval_every=15 --set train.local_steps=20"}
FEDSILO=${FEDSILO:-fedsilo}
$FEDSILO sweep configs/fedgin-chaos.toml --out "$OUT" --modes federated,centralised,local --seeds "$SEEDS" $SIZE \
  --grid segmentation.method=none,gin
