"""Domain-specific batch normalisation (DSBN) and the keys of normalisation layers.

Chang, You, Seo, Kwak, Han, "Domain-Specific Batch Normalization for Unsupervised Domain
Adaptation", CVPR 2019. Every BatchNorm layer is replaced by one BatchNorm per domain (e.g. "ct"
and "mr"); convolution weights are shared, normalisation statistics and affine parameters are not.
In a federation, the domain BN parameters are aggregated only among the sites of that modality
(state_dict keys contain ``.bns.<domain>.``) while everything else is averaged over all sites.

:func:`norm_parameter_keys` lists the state_dict keys of all normalisation layers of any model
(FedBN, Li et al. ICLR 2021, keeps exactly these local) and :func:`norm_key_domains` tells which
DSBN domain each belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

__all__ = [
    "DomainSpecificBatchNorm",
    "convert_to_dsbn",
    "set_domain",
    "use_domain",
    "norm_parameter_keys",
    "norm_key_domains",
    "NORM_LAYER_TYPES",
]

#: Module types whose parameters and buffers count as normalisation state.
NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = (_NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)

_DOMAIN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BN_BY_DIMS: dict[int, type[_BatchNorm]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _check_domains(domains: Sequence[str]) -> tuple[str, ...]:
    if isinstance(domains, str):
        domains = (domains,)
    doms = tuple(domains)
    if not doms or any(not isinstance(d, str) or not _DOMAIN_RE.match(d) for d in doms) or len(set(doms)) != len(doms):
        raise ValueError(
            f"domains must be a non-empty sequence of distinct identifiers (letters, digits, _), got {domains!r}"
        )
    return doms


class DomainSpecificBatchNorm(nn.Module):
    """One BatchNorm per domain; ``forward`` uses the BatchNorm of :attr:`active_domain`.

    Parameters
    ----------
    num_features
        Channels ``C`` of the input ``(B, C, ...)``.
    domains
        Domain names, e.g. ``("ct", "mr")``; each becomes a key of :attr:`bns`.
    spatial_dims
        1, 2 or 3 (BatchNorm1d/2d/3d).
    eps, momentum, affine, track_running_stats
        As for :class:`torch.nn.BatchNorm2d`.

    Notes
    -----
    State-dict keys are ``<prefix>.bns.<domain>.{weight, bias, running_mean, running_var,
    num_batches_tracked}``. The active domain is a plain attribute, not saved in the state dict;
    set it with :func:`set_domain`, :func:`use_domain` or ``SegUNet.forward(x, domain=...)``.
    """

    def __init__(self, num_features: int, domains: Sequence[str], spatial_dims: int = 2, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        if spatial_dims not in _BN_BY_DIMS:
            raise ValueError(f"spatial_dims must be one of (1, 2, 3), got {spatial_dims!r}")
        self.domains = _check_domains(domains)
        bn = _BN_BY_DIMS[spatial_dims]
        self.bns = nn.ModuleDict(
            {d: bn(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
             for d in self.domains}
        )
        self.num_features = num_features
        self.active_domain: str | None = None

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm, domains: Sequence[str]) -> DomainSpecificBatchNorm:
        """A DSBN whose every domain starts as a copy of ``bn`` (parameters and running stats)."""
        dims = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}.get(type(bn))
        if dims is None:
            raise ValueError(f"bn must be a BatchNorm1d/2d/3d, got {type(bn).__name__}")
        new = cls(bn.num_features, domains, dims, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        state = bn.state_dict()
        for sub in new.bns.values():
            sub.load_state_dict(state)
        ref = next(iter(state.values()), None)
        return new if ref is None else new.to(ref.device)

    def set_domain(self, domain: str | None) -> None:
        """Select the domain whose BatchNorm ``forward`` uses (``None`` to unset)."""
        if domain is not None and domain not in self.domains:
            raise ValueError(f"domain must be one of {self.domains}, got {domain!r}")
        self.active_domain = domain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active_domain is None:
            raise RuntimeError(
                f"DomainSpecificBatchNorm has no active domain (one of {self.domains}); "
                "call set_domain(model, d), use `with use_domain(model, d)` or pass forward(x, domain=d)"
            )
        return self.bns[self.active_domain](x)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, domains={self.domains}, active_domain={self.active_domain!r}"


def convert_to_dsbn(model: nn.Module, domains: Sequence[str]) -> nn.Module:
    """Replace, in place, every BatchNorm1d/2d/3d of ``model`` by a :class:`DomainSpecificBatchNorm`.

    Each domain's BatchNorm starts as a copy of the replaced layer. Returns ``model``.
    """
    doms = _check_domains(domains)
    for name, child in list(model.named_children()):
        if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            setattr(model, name, DomainSpecificBatchNorm.from_batchnorm(child, doms))
        elif not isinstance(child, DomainSpecificBatchNorm):
            convert_to_dsbn(child, doms)
    return model


def _dsbn_modules(model: nn.Module) -> list[DomainSpecificBatchNorm]:
    return [m for m in model.modules() if isinstance(m, DomainSpecificBatchNorm)]


def set_domain(model: nn.Module, domain: str | None) -> None:
    """Set the active domain of every DSBN layer of ``model`` (no-op for a model without DSBN)."""
    for m in _dsbn_modules(model):
        m.set_domain(domain)


@contextmanager
def use_domain(model: nn.Module, domain: str) -> Iterator[nn.Module]:
    """Context manager: the DSBN layers of ``model`` use ``domain`` inside the block.

    The previous active domains are restored on exit, even after an exception.
    """
    layers = _dsbn_modules(model)
    previous = [m.active_domain for m in layers]
    try:
        for m in layers:
            m.set_domain(domain)
        yield model
    finally:
        for m, d in zip(layers, previous):
            m.active_domain = d


def norm_key_domains(model: nn.Module) -> dict[str, str | None]:
    """Map every state_dict key of a normalisation layer to its DSBN domain (``None`` if shared).

    Normalisation layers are instances of :data:`NORM_LAYER_TYPES` (batch, instance, group,
    layer norm); their keys cover weights, biases, running stats and ``num_batches_tracked``.
    A layer holding no state (e.g. InstanceNorm without affine or running stats) has no key.
    """
    state_keys = set(model.state_dict().keys())
    dsbn_prefixes = {name: m for name, m in model.named_modules() if isinstance(m, DomainSpecificBatchNorm)}
    out: dict[str, str | None] = {}
    for name, module in model.named_modules():
        if not isinstance(module, NORM_LAYER_TYPES):
            continue
        domain = None
        parent, _, leaf = name.rpartition(".")
        grand, _, bns = parent.rpartition(".")
        if bns == "bns" and grand in dsbn_prefixes:
            domain = leaf
        prefix = f"{name}." if name else ""
        for key in module.state_dict(prefix=prefix):
            if key in state_keys:
                out[key] = domain
    return out


def norm_parameter_keys(model: nn.Module, domain: str | None = None) -> set[str]:
    """State_dict keys of the normalisation layers of ``model``.

    Parameters
    ----------
    model
        Any module.
    domain
        If given, only the keys of that DSBN domain's BatchNorms (e.g. ``"mr"``).

    Returns
    -------
    set[str]
        Keys of weights, biases, running means/vars and ``num_batches_tracked`` of every norm layer
        (every DSBN domain included when ``domain`` is ``None``).
    """
    mapping = norm_key_domains(model)
    if domain is None:
        return set(mapping)
    known = {d for d in mapping.values() if d is not None}
    if domain not in known:
        raise ValueError(f"domain must be one of the model's DSBN domains {sorted(known)}, got {domain!r}")
    return {k for k, d in mapping.items() if d == domain}
