"""The fixed feature network of federated GAN evaluation: a random convolutional network that
ships with fedsilo as code and a seed, identical at every site and on the coordinator.

Why a fixed network. Fréchet distance, precision/recall/density/coverage and the k-NN realism
need a feature space that every party computes the same way and that no site's images had to
leave for. Two candidates were weighed:

- a DR-grade classifier trained federatedly in a first stage: semantic features (lesions,
  grades), but a second federated training before every GAN run (its own rounds, settings and
  failure modes), a feature space that depends on that stage's outcome (a run's FD then compares
  only with runs that share its classifier), nothing for ungraded CT slices, and a network
  trained on the sites' images that every site must also receive;
- a fixed random network: no training, no data, nothing to download, the same on every host
  for ever (its weights are a function of this module's seed alone; a fingerprint of them is
  checked at the coordinator), equally usable for fundus photographs and CT slices. Randomly
  initialised embeddings are a documented choice for these metrics off ImageNet's domain (Naeem
  et al., "Reliable fidelity and diversity metrics for generative models", ICML 2020, sec. 5:
  precision/recall/density/coverage with a random VGG16 behave sensibly). Its features are
  texture, colour and local-structure statistics rather than grades: FD in this space is less
  sensitive to the grade-specific lesions than a trained classifier's, which is the price.

fedsilo takes the second (``gan.evaluation = "federated"``); ``"reference"`` keeps the networks
trained centrally on the pooled images (:mod:`~fedsilo.tasks.synthesis.references`).

The network: one 3x3 convolution + ReLU per stage, stages halving the resolution by 2x2 average
pooling until the map is at most 8 px (28 and 32 px: 2 poolings; 64: 3; 128: 4), widths 32, 64,
64, ... and a global average of the last stage's 64 channels: 64 non-negative features. Weights
are He-normal draws from NumPy's PCG64 seeded with :data:`FEATURE_SEED` (plus the input
channels), biases zero; images go in as they are, in [-1, 1].
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FEATURE_SEED", "NUM_FEATURES", "FixedFeatureNet", "fixed_features"]

#: Part of the metrics' definition: changing it changes every federated FD and realism.
FEATURE_SEED = 20250118
NUM_FEATURES = 64
_WIDTHS = (32, 64)


class FixedFeatureNet(nn.Module):
    """The fixed random feature network for ``channels``-channel images of side ``size`` (see module notes).

    Parameters
    ----------
    channels
        Image channels (1 grey, 3 RGB).
    size
        Image side in pixels (>= 8).
    """

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        if channels < 1 or size < 8:
            raise ValueError(f"channels must be >= 1 and size >= 8, got channels={channels}, size={size}")
        stages, side = 1, size
        while side > 8:
            side //= 2
            stages += 1
        rng = np.random.Generator(np.random.PCG64([FEATURE_SEED, channels]))
        widths = [_WIDTHS[min(i, len(_WIDTHS) - 1)] for i in range(stages - 1)] + [NUM_FEATURES]
        convs, c_in = [], channels
        for c_out in widths:
            conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            std = np.sqrt(2.0 / (c_in * 9))
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(rng.standard_normal((c_out, c_in, 3, 3)) * std))
                conv.bias.zero_()
            conv.requires_grad_(False)
            convs.append(conv)
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.channels, self.size, self.num_features = channels, size, NUM_FEATURES
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, 64)`` of images ``(B, C, size, size)`` in [-1, 1]."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images (B, {self.channels}, H, W), got shape {tuple(x.shape)}")
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i < len(self.convs) - 1:
                x = F.avg_pool2d(x, 2)
        return x.mean(dim=(2, 3))

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the weights: equal on every host that builds the same network."""
        h = hashlib.sha256(f"{self.channels}x{self.size}".encode())
        for p in self.parameters():
            h.update(np.ascontiguousarray(p.detach().cpu().numpy()).tobytes())
        return h.hexdigest()[:16]


def fixed_features(net: FixedFeatureNet, batch: Tensor) -> Tensor:
    """Float64 features ``(B, 64)`` of a batch of images (no gradients, on the network's device)."""
    with torch.no_grad():
        return net(batch.float()).double()
