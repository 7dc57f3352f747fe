"""What travels in Flower messages between the ServerApp and the ClientApps.

Every message to a site carries the resolved experiment config as TOML text (``config`` record,
key ``fedsilo-config``), so a SuperNode needs nothing but the installed package and its own
data. Model weights travel as an :class:`~flwr.app.ArrayRecord` under ``arrays``; replies carry
one ArrayRecord (training) and one MetricRecord with ``num-examples`` (the FedAvg weight).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from io import BytesIO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"
SITE_STATE = "site-state"
CONFIG_TOML = "fedsilo-config"
NUM_EXAMPLES = "num-examples"
#: Metric of the stand-in reply of a secure round: how many sites' updates its mean holds.
SUMMED_SITES = "summed-sites"
QUERY_SITE_INFO = "query.site_info"
#: Evaluation messages of a task with federated test metrics: what the coordinator asks every site
#: (an ArrayRecord, e.g. a GAN's generated features) and the site's statistics in reply.
EVAL_REQUEST = "eval-request"
EVAL_STATS = "eval-stats"
#: Fused evaluation (``federation.fused_evaluation``): the training message's config key asking the
#: site to score the weights it received on its validation split before it trains (the value: the
#: round those weights are the aggregate of), and the reply's MetricRecord of those metrics (as an
#: evaluation reply's ``metrics``: ``num-examples`` and ``val_*``), kept apart from the training metrics.
EVALUATE_FIRST = "evaluate-first"
VALIDATION = "validation"


class KeptArray(Array):
    """A Flower :class:`~flwr.app.Array` that keeps a private copy of its ndarray.

    It travels, and is counted, exactly as a plain Array: ``data`` are the usual ``.npy`` bytes.
    But those bytes are only made when something reads ``data`` (Flower serialising the message
    for another process, ``ArrayRecord.count_bytes``), and :meth:`numpy` returns a fresh copy of
    the kept ndarray instead of parsing them. In-process, a site's update is read several times
    (the site's model, update validation, aggregation, dtype casting) and never needs its bytes;
    encoding and decoding them was most of the local engine's round overhead
    (``benchmarks/RESULTS.md``, "Profile of the local engine's round overhead"). A message that
    crosses a process boundary is rebuilt by Flower as a plain Array and decodes as usual.
    """

    # Flower names an object's type on the wire by its class's qualified name (and looks the
    # class up by it when inflating): a KeptArray must travel, byte for byte, as an Array.
    __qualname__ = "Array"

    def __init__(self, ndarray: np.ndarray) -> None:
        kept = np.array(ndarray, copy=True, order="C")  # never a view of a live model's memory
        self.__dict__.update(dtype=str(kept.dtype), shape=tuple(kept.shape), stype=SType.NUMPY, _kept=kept)

    def __getattr__(self, name: str) -> object:
        # Only reached for attributes not set yet: ``data`` is encoded on first use.
        kept = self.__dict__.get("_kept")
        if name != "data" or kept is None:
            raise AttributeError(name)
        buffer = BytesIO()
        np.save(buffer, kept, allow_pickle=False)  # exactly Array.from_numpy_ndarray's bytes
        self.__dict__["data"] = data = buffer.getvalue()
        return data

    def __reduce__(self) -> tuple[type[Array], tuple[str, tuple[int, ...], str, bytes]]:
        # Pickled (Ray, deepcopy) as the plain Array it stands for.
        return Array, (self.dtype, tuple(self.shape), self.stype, self.data)

    def numpy(self) -> np.ndarray:
        """A fresh, writable copy of the array (as :meth:`Array.numpy` returns)."""
        kept = self.__dict__.get("_kept")
        return super().numpy() if kept is None else kept.copy()

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("dtype", "shape", "stype", "data"):
            if "data" not in self.__dict__ and name != "data":
                _ = self.data  # keep the fields consistent before one of them changes
            self.__dict__.pop("_kept", None)  # the bytes changed: decode them from now on
        super().__setattr__(name, value)


def state_to_arrays(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """ArrayRecord of a state dict (tensors or numpy arrays), keys kept in order."""
    out = ArrayRecord()
    for k, v in state.items():
        out[k] = KeptArray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
    return out


def arrays_to_numpy(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    """Numpy arrays of an ArrayRecord, in record order."""
    return OrderedDict((k, v.numpy()) for k, v in record.items())


def arrays_to_state(record: ArrayRecord | Mapping[str, np.ndarray]) -> OrderedDict[str, torch.Tensor]:
    """torch state dict of an ArrayRecord or a dict of numpy arrays."""
    items = arrays_to_numpy(record).items() if isinstance(record, ArrayRecord) else record.items()
    return OrderedDict((k, torch.from_numpy(np.array(v, copy=True))) for k, v in items)


def cast_like(arrays: ArrayRecord, template: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Cast aggregated arrays back to the template's dtypes (averaging turns int counters into floats)."""
    out = ArrayRecord()
    for k, v in arrays.items():
        a = v.numpy()
        ref = template.get(k)
        if ref is not None and a.dtype != ref.dtype:
            a = np.round(a).astype(ref.dtype) if np.issubdtype(ref.dtype, np.integer) else a.astype(ref.dtype)
        out[k] = KeptArray(a)
    return out
