#!/usr/bin/env bash
# FedGAN on RetinaMNIST at 3 sites without DP and with sample-level DP-SGD on the discriminator
# (epsilon 8 per site, delta 1e-5), each audited (LOGAN, GAN-Leaks, DCR, inversion): membership AUC,
# TPR at 1% FPR and FD side by side. Usage: benchmarks/fedgan_dp_retinamnist.sh [OUT]
set -euo pipefail
OUT=${1:-runs/bench-fedgan-dp}
FEDSILO=${FEDSILO:-fedsilo}
$FEDSILO sweep configs/fedgan-retinamnist.toml --out "$OUT" --modes federated --audit \
  --grid privacy.epsilon=inf,8 --set privacy.mode=sample --set privacy.delta=1e-5 \
  --set audit.max_samples=500 --set audit.latent_steps=100
