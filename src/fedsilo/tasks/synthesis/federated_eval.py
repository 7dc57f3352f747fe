"""The synthesis task's federated evaluation (``gan.evaluation = "federated"``): what the
coordinator sends, what a site computes, how the coordinator combines it.

The math is in :mod:`~fedsilo.tasks.synthesis.federated_stats`, the feature network in
:mod:`~fedsilo.tasks.synthesis.fixed_features`. Messages carry plain arrays:

- request (coordinator -> every site): ``fake_features`` ``(m, 64)`` float64 of the round's
  generated images (``gan.eval_samples``, the same latent codes as the coordinator's diversity),
  their k-NN radii ``fake_radii`` ``(m,)`` and the feature network's ``fingerprint`` (ASCII bytes);
- reply (site -> coordinator): :func:`~fedsilo.tasks.synthesis.federated_stats.site_statistics`
  over the site's *training* images (the distribution the GAN learns), whose features and radii a
  site computes once and keeps (the network never changes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedsilo.tasks.synthesis.evaluation import balanced_grades, flat, generate
from fedsilo.tasks.synthesis.federated_stats import (
    K,
    check_site_statistics,
    combine_site_statistics,
    site_statistics,
)
from fedsilo.tasks.synthesis.fixed_features import FixedFeatureNet, fixed_features
from fedsilo.tasks.synthesis.manifold import knn_radii

__all__ = ["FederatedEvaluation"]

logger = logging.getLogger(__name__)

BATCH = 256


class FederatedEvaluation:
    """Federated GAN evaluation for images of ``image_shape`` ``(C, H, W)``.

    Parameters
    ----------
    image_shape
        Channels and size of the run's images.
    n, seed, conditional
        Generated images per evaluation, the seed of their latent codes (and grades), and
        whether the generator is conditional (then the grades are balanced).
    """

    def __init__(self, image_shape: tuple[int, int, int], *, n: int, seed: int, conditional: bool) -> None:
        self.n, self.seed, self.conditional = n, seed, conditional
        self.image_shape = image_shape
        self._net: FixedFeatureNet | None = None
        self._real: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def net(self, device: torch.device | str = "cpu") -> FixedFeatureNet:
        if self._net is None:
            self._net = FixedFeatureNet(self.image_shape[0], self.image_shape[1])
        return self._net.to(device)

    def features(self, images: Any, device: torch.device) -> torch.Tensor:
        """Features ``(N, 64)`` (float64, CPU) of a data set (``batch(idx, device)``) or an image tensor."""
        net = self.net(device)
        if isinstance(images, torch.Tensor):
            parts = [fixed_features(net, images[s:s + BATCH].to(device)).cpu() for s in range(0, len(images), BATCH)]
        else:
            parts = [fixed_features(net, images.batch(torch.arange(s, min(s + BATCH, len(images))), device)[0]).cpu()
                     for s in range(0, len(images), BATCH)]
        return torch.cat(parts) if parts else torch.zeros(0, net.num_features, dtype=torch.float64)

    # -- coordinator -----------------------------------------------------------------------

    def request(self, generator: torch.nn.Module, device: torch.device) -> dict[str, np.ndarray]:
        """The arrays every site receives: generated features, their radii, the network's fingerprint."""
        grades = balanced_grades(self.n, self.seed) if self.conditional else None
        fake = generate(generator, self.n, self.seed, device, grades)
        ff = self.features(fake, device)
        return {"fake_features": ff.numpy(), "fake_radii": knn_radii(ff, K).numpy(),
                "fingerprint": np.frombuffer(self.net().fingerprint().encode(), dtype=np.uint8).copy()}

    def combine(self, request: Mapping[str, np.ndarray], stats: Sequence[Mapping[str, np.ndarray]],
                names: Sequence[str]) -> dict[str, float]:
        """Test metrics from the sites' statistics (``names``: the sites, for warnings); sites whose
        statistics are malformed are left out (logged). Empty when no site's statistics remain."""
        ff = torch.from_numpy(np.asarray(request["fake_features"], dtype=np.float64))
        good = []
        for name, s in zip(names, stats, strict=True):
            why = check_site_statistics(s, ff.shape[1], ff.shape[0])
            if why is None:
                good.append(s)
            else:
                logger.warning("Federated evaluation: statistics of %s left out: %s", name, why)
        if not good or not any(int(s["n"][0]) for s in good):
            logger.warning("Federated evaluation: no site sent usable statistics; no FD, precision or realism")
            return {}
        out = {"eval_sites": float(len(good))}
        for result in combine_site_statistics(ff, good, k=K, seed=self.seed).values():
            out.update(flat(result))
        return out

    # -- site ------------------------------------------------------------------------------

    def site(self, name: str, train: Any, request: Mapping[str, np.ndarray], device: torch.device) -> dict[str, np.ndarray]:
        """A site's statistics over its training images ``train`` against the request.

        Raises
        ------
        ValueError
            The coordinator's feature network differs from this site's (another fedsilo version),
            or the request is malformed.
        """
        ours = self.net().fingerprint()
        theirs = bytes(np.asarray(request.get("fingerprint", np.zeros(0, np.uint8)), dtype=np.uint8)).decode(
            errors="replace")
        if theirs != ours:
            raise ValueError(f"site {name!r}: the coordinator's feature network (fingerprint {theirs!r}) differs "
                             f"from this site's ({ours!r}); install the same fedsilo version everywhere")
        ff = torch.from_numpy(np.asarray(request["fake_features"], dtype=np.float64))
        fr_radii = torch.from_numpy(np.asarray(request["fake_radii"], dtype=np.float64))
        if ff.dim() != 2 or fr_radii.shape != (ff.shape[0],):
            raise ValueError(f"site {name!r}: malformed evaluation request (features {tuple(ff.shape)}, radii "
                             f"{tuple(fr_radii.shape)})")
        key = (name, len(train))
        if key not in self._real:
            real = self.features(train, device)
            self._real[key] = (real, knn_radii(real, K) if len(real) > K else None)
        real, radii = self._real[key]
        return site_statistics(real, ff, fr_radii, k=K, real_radii=radii)
