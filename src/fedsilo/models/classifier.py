"""A small CNN for diabetic-retinopathy grading (5 ICDR grades) on 28-256 px fundus images.

It is also the reference feature extractor for the FedGAN metrics (FD/KID/precision-recall
in the feature space of a DR-grade classifier trained on real data): :meth:`GradeCNN.features`.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsilo.models.norms import make_norm


class GradeCNN(nn.Module):
    """Conv blocks (two 3x3 convs + norm + ReLU, then 2x2 max-pool), global pooling, linear head.

    Parameters
    ----------
    in_channels
        Image channels (1 or 3).
    num_classes
        Output classes (5 DR grades).
    width
        Channels of the first block; block ``i`` has ``width * 2**i``.
    depth
        Number of blocks (each halves the resolution).
    norm
        ``batch``, ``group``, ``instance`` or ``none``.
    dropout
        Dropout probability before the head.

    Shapes
    ------
    input (B, in_channels, H, W) in [-1, 1]; output logits (B, num_classes).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 5,
        width: int = 32,
        depth: int = 3,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2),
                                 ("width", width, 1), ("depth", depth, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i in range(depth):
            c_out = width * 2**i
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
                make_norm(norm, c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none"),
                make_norm(norm, c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.body = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)
        self.num_features = c_in

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (B, num_features)."""
        return self.pool(self.body(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
