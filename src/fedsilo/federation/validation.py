"""Checking client updates before they reach aggregation.

A malformed or poisoned update must never silently enter the global model: wrong keys, shapes
or dtypes, or non-finite values reject the whole update (the site is named in the log and in
metrics.jsonl), and the round goes on with the remaining sites if enough are left.

Two more rules stop one site from steering the aggregate:

- ``num-examples``, FedAvg's weight, may not exceed the training examples the site reported when it
  described itself at setup (``sites.json``). A larger claim is *refused*, not capped: an honest
  site reports exactly that count, so a larger one is a faulty or malicious site, and its update
  is not trusted either.
- Opt-in norm bounds (``federation.validation``): an update ``w_i - g`` (trained minus the weights
  the site was sent, L2 over every floating-point array) longer than ``max_update_norm``, or than
  ``max_update_norm_factor`` times the round's median update norm, is *rejected*, as a NaN update
  is. Rejection rather than clipping to the bound: a clipped sign-flipped update still pulls the
  aggregate backwards by the full bound, which with few sites cancels most of the honest progress
  (the centered-clipping rows of ``benchmarks/poisoning.py`` show the effect); a rejected one
  pulls by nothing. An attacker that stays just under the bound gets at most the bound's pull
  either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message

from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES


def describe_template(state: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Expected (shape, dtype) per key of the global state."""
    return {k: (tuple(v.shape), np.asarray(v).dtype) for k, v in state.items()}


def check_arrays(arrays: ArrayRecord, template: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    """Why ``arrays`` cannot be aggregated with the global state, or None when it can."""
    keys, expected = set(arrays.keys()), set(template)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected keys {extra[:5]}{'...' if len(extra) > 5 else ''}")
        return "; ".join(parts)
    for k, (shape, dtype) in template.items():
        arr = arrays[k]
        if tuple(arr.shape) != shape:
            return f"array {k!r} has shape {tuple(arr.shape)}, expected {shape}"
        if np.dtype(arr.dtype) != dtype:
            return f"array {k!r} has dtype {arr.dtype}, expected {dtype}"
        values = arr.numpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            return f"array {k!r} has {bad} non-finite value(s)"
    return None


def check_train_reply(msg: Message, template: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                      max_examples: int | None = None) -> str | None:
    """Why a training reply must be rejected, or None when it is valid.

    Parameters
    ----------
    msg
        The site's training reply.
    template
        Expected (shape, dtype) per key (:func:`describe_template`).
    max_examples
        The training examples the site reported at setup: a larger ``num-examples`` is refused.
        None = no bound.
    """
    if msg.has_error():
        return f"site reported an error: {msg.error.reason}"
    content = msg.content
    if ARRAYS not in content.array_records:
        return f"reply has no {ARRAYS!r} ArrayRecord"
    if METRICS not in content.metric_records:
        return f"reply has no {METRICS!r} MetricRecord"
    n = content.metric_records[METRICS].get(NUM_EXAMPLES)
    if not isinstance(n, (int, float)) or isinstance(n, bool) or not np.isfinite(n) or n <= 0:
        return f"reply has an invalid {NUM_EXAMPLES!r}: {n!r} (expected a positive number)"
    return check_num_examples(n, max_examples) or check_arrays(content.array_records[ARRAYS], template)


def check_num_examples(n: float, max_examples: int | None) -> str | None:
    """Why a claimed ``num-examples`` above ``max_examples`` (the site's count at setup) is refused."""
    if max_examples is not None and n > max_examples:
        return (f"reply claims {NUM_EXAMPLES} = {n}, more than the {max_examples} training examples the site "
                f"reported at setup")
    return None


def update_norm(trained: ArrayRecord, start: ArrayRecord) -> float:
    """L2 norm of the update ``trained - start`` over every floating-point array (in float64)."""
    total = 0.0
    for k in start.keys():
        base = start[k].numpy()
        if np.issubdtype(base.dtype, np.floating):
            diff = np.asarray(trained[k].numpy(), dtype=np.float64) - base
            total += float(np.dot(diff.ravel(), diff.ravel()))
    return float(np.sqrt(total))


def norm_rejections(norms: Sequence[float], max_norm: float = 0.0, factor: float = 0.0) -> list[str | None]:
    """Why each update must be rejected for its norm (None where it passes).

    Parameters
    ----------
    norms
        The round's update norms (:func:`update_norm`), of the updates that passed the other checks.
    max_norm
        Absolute bound (``federation.validation.max_update_norm``); 0 = off.
    factor
        Bound as a multiple of the median of ``norms`` (``federation.validation.max_update_norm_factor``);
        0 = off.

    Returns
    -------
    list of str or None
        One entry per norm, in order.
    """
    if max_norm < 0 or factor < 0:
        raise ValueError(f"max_norm and factor must be >= 0 (0 = off), got {max_norm} and {factor}")
    median = float(np.median(norms)) if len(norms) else 0.0
    out: list[str | None] = []
    for norm in norms:
        if max_norm > 0 and norm > max_norm:
            out.append(f"update norm {norm:.4g} exceeds federation.validation.max_update_norm = {max_norm:g}")
        elif factor > 0 and norm > factor * median:
            out.append(f"update norm {norm:.4g} exceeds {factor:g} x the round's median update norm {median:.4g} "
                       f"(federation.validation.max_update_norm_factor)")
        else:
            out.append(None)
    return out
