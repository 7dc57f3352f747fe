"""Measure membership leakage of any PyTorch classifier with the loss-threshold attack.

A model trained to memorise 32 random images tells them apart from 32 images it never saw;
fedsilo's attacks return AUC and TPR at low FPR (Carlini et al. 2022's recommended reporting).
Run: python docs/examples/membership_attack.py
"""

import torch
from torch import nn

from fedsilo.audit.attacks import loss_attack, sample_losses

gen = torch.Generator().manual_seed(0)
members, nonmembers = torch.randn(32, 3, 8, 8, generator=gen), torch.randn(32, 3, 8, 8, generator=gen)
y_in, y_out = torch.randint(0, 5, (32,), generator=gen), torch.randint(0, 5, (32,), generator=gen)

torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(192, 256), nn.ReLU(), nn.Linear(256, 5))
opt = torch.optim.Adam(model.parameters(), 1e-2)
for _ in range(200):  # memorise the members
    opt.zero_grad()
    nn.functional.cross_entropy(model(members), y_in).backward()
    opt.step()

result = loss_attack(sample_losses(model, members, y_in), sample_losses(model, nonmembers, y_out))
print(f"AUC {result.auc:.3f}, TPR at 1% FPR {result.tpr_at_1pct_fpr:.3f}")
assert result.auc > 0.9  # a memorising model leaks its members
