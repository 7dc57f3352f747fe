"""Checking client updates before they reach aggregation.

A malformed or poisoned update must never silently enter the global model: wrong keys, shapes
or dtypes, or non-finite values reject the whole update (the site is named in the log and in
metrics.jsonl), and the round goes on with the remaining sites if enough are left.
"""

from __future__ import annotations

from collections.abc import Mapping

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


def check_train_reply(msg: Message, template: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    """Why a training reply must be rejected, or None when it is valid."""
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
    return check_arrays(content.array_records[ARRAYS], template)
