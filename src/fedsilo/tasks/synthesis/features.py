"""Feature extractors for feature-space metrics (Fréchet distance, KID, precision/recall, ...).

No Inception-v3 weights are available offline, and Inception features are a poor fit for 28-64 px
fundus or CT images anyway, so the feature space is supplied by the caller: typically the
penultimate layer of a DR-grade classifier trained on real data (``fedsilo.models.classifier``).

torchmetrics' ``FrechetInceptionDistance(feature=module)`` needs to know the feature size: it reads
``module.num_features`` and otherwise probes the module with a random ``uint8`` image of shape
``(1, 3, 299, 299)`` (``normalize=False``), which a small-image network cannot take. With a custom
module, ``normalize`` does not rescale inputs (images go to the module as given), and
``KernelInceptionDistance`` needs no size at all. :class:`FeatureAdapter` therefore gives any
callable a ``num_features`` attribute (probed on an image shape the caller names), runs it in eval
mode without gradients and flattens its output to ``(B, d)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from fedsilo.tasks.synthesis.stats import check_images

__all__ = ["FeatureAdapter", "FeatureFn", "as_features", "eval_mode", "extract_features"]

FeatureFn = nn.Module | Callable[[Tensor], Tensor]


@contextmanager
def eval_mode(fn: FeatureFn) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode for the block and restore every submodule's previous mode."""
    modes = [(m, m.training) for m in fn.modules()] if isinstance(fn, nn.Module) else []
    if isinstance(fn, nn.Module):
        fn.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class FeatureAdapter(nn.Module):
    """Make a feature function usable by torchmetrics and by the metrics here.

    Parameters
    ----------
    feature_fn
        Module or callable mapping images ``(B, C, H, W)`` in [-1, 1] to features ``(B, ...)``.
    num_features
        Feature size ``d``; probed with a zero image of ``probe_shape`` when ``None``.
    probe_shape
        ``(C, H, W)`` of the images the extractor takes; needed only to probe ``num_features``.

    Notes
    -----
    ``forward`` returns ``(B, d)`` features computed in eval mode under ``torch.no_grad()``; the
    extractor's train/eval mode is restored afterwards.
    """

    def __init__(
        self,
        feature_fn: FeatureFn,
        num_features: int | None = None,
        probe_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if not callable(feature_fn):
            raise ValueError(f"feature_fn must be an nn.Module or callable, got {type(feature_fn).__name__}")
        self.feature_fn = feature_fn  # registered as a submodule when it is an nn.Module
        if num_features is None:
            if probe_shape is None or len(probe_shape) != 3:
                raise ValueError(f"probe_shape must be (C, H, W) when num_features is None, got {probe_shape}")
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
            with torch.no_grad(), eval_mode(feature_fn):
                num_features = int(feature_fn(torch.zeros(1, *probe_shape, device=device)).flatten(1).shape[1])
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, num_features)`` of ``x``."""
        with torch.no_grad(), eval_mode(self.feature_fn):
            f = self.feature_fn(x)
        f = f.flatten(1) if f.dim() > 1 else f[:, None]
        if f.shape[1] != self.num_features:
            raise ValueError(f"feature_fn returned {f.shape[1]} features, expected num_features={self.num_features}")
        return f


def extract_features(feature_fn: FeatureFn, images: Tensor, batch_size: int = 256, name: str = "images") -> Tensor:
    """Features ``(N, d)`` of ``images`` ``(N, C, H, W)`` in [-1, 1], in batches, eval mode, no gradients."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_images(images, name)
    adapter = feature_fn if isinstance(feature_fn, FeatureAdapter) else None
    parts = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        if adapter is not None:
            parts.append(adapter(chunk))
        else:
            with torch.no_grad(), eval_mode(feature_fn):
                parts.append(feature_fn(chunk).flatten(1))
    return torch.cat(parts)


def as_features(
    x: Tensor, feature_fn: FeatureFn | None, name: str, batch_size: int = 256, pixels_ok: bool = False
) -> Tensor:
    """Return features ``(N, d)`` from images ``(N, C, H, W)`` or pass features ``(N, d)`` through.

    Images need ``feature_fn`` unless ``pixels_ok`` (then they are flattened: pixel space).
    Features must come with ``feature_fn=None``.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() == 2:
        if feature_fn is not None:
            raise ValueError(f"{name} is already a feature matrix (N, d); pass feature_fn=None")
        if not x.is_floating_point():
            raise ValueError(f"{name} features must be floating point, got {x.dtype}")
        return x.detach()
    if x.dim() != 4:
        raise ValueError(f"{name} must be images (N, C, H, W) or features (N, d), got shape {tuple(x.shape)}")
    if feature_fn is None:
        if not pixels_ok:
            raise ValueError(f"feature_fn is required to compare images ({name} has shape {tuple(x.shape)})")
        check_images(x, name)
        return x.detach().flatten(1)
    return extract_features(feature_fn, x, batch_size, name)
