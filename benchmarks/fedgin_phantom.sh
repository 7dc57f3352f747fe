#!/usr/bin/env bash
# FedGIN on the abdomen phantom, 'limited' scenario (two CT-rich hospitals, one MRI-scarce
# hospital): every cross-modality method, federated, per organ and modality (3D Dice, 2D Dice,
# HD95). Usage (from the repository root): benchmarks/fedgin_phantom.sh [OUT] [SEEDS]
set -euo pipefail
OUT=${1:-runs/bench-fedgin-phantom}
SEEDS=${2:-1}
# The run size used for benchmarks/RESULTS.md on 2 CPU cores (the config itself is the full-size study):
SIZE=${SIZE:-"--set unet.base_width=8 --set federation.rounds=15 --set federation.eval_every=15 --set train.local_steps=20"}
FEDSILO=${FEDSILO:-fedsilo}
$FEDSILO sweep configs/fedgin-phantom-limited.toml --out "$OUT" --modes federated --seeds "$SEEDS" $SIZE \
  --grid segmentation.method=none,gin,gin+ipa,randconv,prorandconv,fmaug,raffesdg,dsbn
