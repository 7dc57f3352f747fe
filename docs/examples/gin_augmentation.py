"""GIN and GIN+IPA on a batch of slices, outside any federated run.

Run: python docs/examples/gin_augmentation.py
"""

import torch

from fedsilo.augment import GIN, IPA, build_augmentation

slices = torch.rand(4, 1, 96, 96)  # (B, C, H, W) images in [0, 1]

gin = GIN(prob=1.0, generator=0)  # own seeded RNG: the same seed gives the same augmentations
augmented = gin(slices)  # same shape; every sample gets its own random network
assert augmented.shape == slices.shape
# GIN keeps each sample's Frobenius norm (Ouyang et al., IEEE TMI 2022)
assert torch.allclose(augmented.flatten(1).norm(dim=1), slices.flatten(1).norm(dim=1), rtol=1e-4)

ipa = IPA(prob=1.0, generator=0)  # two views blended through smooth random masks
view_a, view_b = ipa(slices)

randconv = build_augmentation("randconv", prob=0.5, generator=1)  # any baseline by name
print("GIN", tuple(augmented.shape), "IPA views", tuple(view_a.shape), "RandConv", tuple(randconv(slices).shape))
