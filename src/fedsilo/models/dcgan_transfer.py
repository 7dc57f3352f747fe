"""Transfer pre-trained DCGAN weights across channel count, resolution and conditioning.

Used for CT/MR pre-training -> fundus fine-tuning in the FedGAN study. Kamran et al. (PLOS ONE
2025) describe such a transfer but their code never loaded the pre-trained weights; here every
transferred, adapted, skipped or missing tensor is listed in an :class:`AdaptSummary` meant to be
logged and saved with the run.

Rules (networks from :mod:`fedsilo.models.dcgan`, whose widths depend on the distance from the
image, so networks of different resolution share the shapes of their image-side layers):

* Blocks are aligned from the image side: generator blocks from the end (the last block before
  the head matches the last block of the source), discriminator blocks from the start.
  Every tensor whose shape then matches is copied.
* Channel count (image-facing layers only). Generator head 1 -> C: the output weights are
  replicated, so the adapted generator draws grey images identical in every channel to the
  source's output; C -> 1: averaged. Discriminator stem 1 -> C: replicated and divided by C, so
  ``D_C(grey image repeated C times) == D_1(grey image)``; C -> 1: summed, the same identity the
  other way round.
* Unconditional -> conditional generator: the stem's input rows of z are copied and the rows of
  the label embedding zero-filled, so the adapted generator initially ignores the label and
  equals the source; the embedding keeps its random initialisation (zeroing it too would stop
  gradients reaching either). Conditional -> unconditional: the z rows are kept. A different
  latent size is handled the same way (first ``min`` rows copied).
* Unconditional -> conditional (projection) discriminator: the projection embedding is zeroed, so
  the adapted discriminator initially equals the source.
* Spectral normalisation (Miyato et al. 2018) on either side: ``<layer>.weight`` and
  ``<layer>.parametrizations.weight.original`` are the same layer. From a normalised source into
  a plain network the weight is divided by its estimated spectral norm ``u^T W v`` (the function
  is kept); into a normalised network it is copied and is normalised from then on. The power
  iteration vectors (``_u``, ``_v``) come only from a normalised source; a normalised projection
  embedding keeps its initialisation (a zero matrix has no spectral norm to divide by).
* Anything else whose shape differs (the stem of the generator and head of the discriminator when
  the resolution changes) keeps the destination's initialisation and is reported as skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fedsilo.models.dcgan import DCGANDiscriminator, DCGANGenerator

logger = logging.getLogger(__name__)

__all__ = ["AdaptSummary", "adapt_state_dict", "load_adapted_"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SN = ".parametrizations.weight.original"


def _plain(key: str) -> str:
    """A key without spectral normalisation's parametrisation (``x.parametrizations.weight.original`` -> ``x.weight``)."""
    return key[: -len(_SN)] + ".weight" if key.endswith(_SN) else key


@dataclass
class AdaptSummary:
    """What :func:`adapt_state_dict` did with each tensor.

    Attributes
    ----------
    copied
        Destination keys copied unchanged from the source.
    adapted
        Destination key -> how its source tensor was transformed.
    skipped
        Destination key -> why the source tensor could not be used (destination init kept).
    missing
        Destination keys without a source counterpart (destination init kept).
    unused
        Source keys that no destination key used.
    """

    copied: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable copy (for the run's metrics/log files)."""
        return {
            "copied": list(self.copied),
            "adapted": dict(self.adapted),
            "skipped": dict(self.skipped),
            "missing": list(self.missing),
            "unused": list(self.unused),
        }

    def lines(self) -> list[str]:
        """Human-readable lines: counts first, then each adapted/skipped/missing/unused key."""
        out = [
            f"copied {len(self.copied)}, adapted {len(self.adapted)}, skipped {len(self.skipped)}, "
            f"missing {len(self.missing)}, unused {len(self.unused)}"
        ]
        out += [f"adapted {k}: {v}" for k, v in self.adapted.items()]
        out += [f"skipped {k}: {v}" for k, v in self.skipped.items()]
        out += [f"missing {k}: kept initialisation" for k in self.missing]
        out += [f"unused source {k}" for k in self.unused]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _num_blocks(state: Mapping[str, Tensor]) -> int:
    idx = [int(m.group(1)) for k in state if (m := _BLOCK.match(k))]
    return max(idx) + 1 if idx else 0


def _channel_adapt(src: Tensor, dst: Tensor, dim: int, mode: str) -> tuple[Tensor, str] | None:
    """Adapt ``src`` to ``dst``'s size along the channel ``dim``; ``None`` when not possible.

    ``mode="output"`` (generator head): 1 -> C replicate, C -> 1 mean.
    ``mode="input"`` (discriminator stem): 1 -> C replicate / C, C -> 1 sum.
    """
    same_elsewhere = all(a == b for i, (a, b) in enumerate(zip(src.shape, dst.shape)) if i != dim)
    if src.dim() != dst.dim() or not same_elsewhere:
        return None
    cs, cd = src.shape[dim], dst.shape[dim]
    if cs == 1:
        reps = [1] * src.dim()
        reps[dim] = cd
        out = src.repeat(*reps)
        if mode == "input":
            return out / cd, f"channels 1 -> {cd}: replicated / {cd}"
        return out, f"channels 1 -> {cd}: replicated"
    if cd == 1:
        if mode == "input":
            return src.sum(dim=dim, keepdim=True), f"channels {cs} -> 1: summed"
        return src.mean(dim=dim, keepdim=True), f"channels {cs} -> 1: averaged"
    return None


def _rows_adapt(src: Tensor, dst: Tensor) -> tuple[Tensor, str] | None:
    """Generator stem ``(in, out, k, k)``: copy the first ``min(in_src, in_dst)`` input rows, zero the rest."""
    if src.dim() != dst.dim() or src.shape[1:] != dst.shape[1:]:
        return None
    m = min(src.shape[0], dst.shape[0])
    out = torch.zeros(dst.shape, dtype=src.dtype)
    out[:m] = src[:m]
    return out, f"input rows {src.shape[0]} -> {dst.shape[0]}: first {m} copied, rest zero"


def _fold_spectral_norm(state: Mapping[str, Tensor], key: str) -> Tensor:
    """The effective weight ``W / (u^T W v)`` of a spectrally normalised layer's ``original`` entry."""
    base = key[: -len("original")]
    w = state[key].detach().cpu()
    u, v = state[base + "0._u"].detach().cpu(), state[base + "0._v"].detach().cpu()
    return w / torch.dot(u, w.flatten(1) @ v)


def adapt_state_dict(
    src_state: Mapping[str, Tensor], dst_model: DCGANGenerator | DCGANDiscriminator
) -> tuple[dict[str, Tensor], AdaptSummary]:
    """Build a full state dict for ``dst_model`` from a pre-trained ``src_state`` (see module rules).

    Parameters
    ----------
    src_state
        State dict of a source network of the same kind (generator or discriminator), possibly with
        other channels, resolution, normalisation or conditioning.
    dst_model
        Destination network; tensors that cannot be transferred keep its current values.

    Returns
    -------
    state, summary
        ``state`` loads into ``dst_model`` with ``strict=True`` (on ``dst_model``'s devices/dtypes);
        ``summary`` lists what happened to each key.
    """
    if not isinstance(dst_model, (DCGANGenerator, DCGANDiscriminator)):
        raise ValueError(f"dst_model must be a DCGANGenerator or DCGANDiscriminator, got {type(dst_model).__name__}")
    if not isinstance(src_state, Mapping) or not src_state:
        raise ValueError("src_state must be a non-empty state dict")
    is_gen = isinstance(dst_model, DCGANGenerator)
    dst_state = dst_model.state_dict()
    offset = _num_blocks(src_state) - len(dst_model.blocks) if is_gen else 0
    n_src = _num_blocks(src_state)
    out: dict[str, Tensor] = {k: v.detach().clone() for k, v in dst_state.items()}
    src_by_plain = {_plain(k): k for k in src_state}
    summary = AdaptSummary()
    used: set[str] = set()

    for key, dst_t in dst_state.items():
        plain = _plain(key)
        src_key: str | None = plain
        if m := _BLOCK.match(plain):
            i = int(m.group(1)) + offset
            src_key = f"blocks.{i}.{m.group(2)}" if 0 <= i < n_src else None
        src_key = src_by_plain.get(src_key) if src_key is not None else None
        if src_key is None:
            if not is_gen and key == "embed.weight":
                out[key] = torch.zeros_like(dst_t)
                summary.adapted[key] = "projection embedding absent in source: zero-initialised"
            else:
                summary.missing.append(key)
            continue
        used.add(src_key)
        src_t = src_state[src_key].detach().cpu()
        if src_key.endswith(_SN) and not key.endswith(_SN):
            src_t = _fold_spectral_norm(src_state, src_key)
        label = key if src_key == key else f"{key} (from {src_key})"
        if src_t.shape == dst_t.shape:
            out[key] = src_t.to(dst_t.device, dst_t.dtype).clone()
            summary.copied.append(label)
            continue
        result: tuple[Tensor, str] | None = None
        if is_gen and plain in ("head.0.weight", "head.0.bias"):
            result = _channel_adapt(src_t, dst_t, 1 if plain.endswith("weight") else 0, "output")
        elif is_gen and plain == "stem.0.weight":
            result = _rows_adapt(src_t, dst_t)
        elif not is_gen and plain == "stem.0.weight":
            result = _channel_adapt(src_t, dst_t, 1, "input")
        if result is None:
            summary.skipped[label] = f"shape {tuple(src_t.shape)} -> {tuple(dst_t.shape)} not adaptable"
        else:
            out[key] = result[0].to(dst_t.device, dst_t.dtype)
            summary.adapted[label] = result[1]
    summary.unused = [k for k in src_state if k not in used]
    return out, summary


def load_adapted_(
    model: DCGANGenerator | DCGANDiscriminator, src_state: Mapping[str, Tensor], level: int = logging.INFO
) -> AdaptSummary:
    """Adapt ``src_state`` to ``model``, load it in place (strict) and log the summary at ``level``."""
    state, summary = adapt_state_dict(src_state, model)
    model.load_state_dict(state, strict=True)
    for line in summary.lines():
        logger.log(level, "%s: %s", type(model).__name__, line)
    return summary
