"""Client updates are validated before aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES
from fedsilo.federation.validation import check_arrays, check_train_reply, describe_template
from helpers import arrays

TEMPLATE = describe_template({"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64)})


pytestmark = pytest.mark.usefixtures("superlink_identity")


def test_valid_update_passes():
    assert check_arrays(arrays(w=np.ones((2, 3), np.float32), n=np.array(3, np.int64)), TEMPLATE) is None


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"w": np.full((2, 3), np.nan, np.float32), "n": np.array(3, np.int64)}, "array 'w' has 6 non-finite value(s)"),
        ({"w": np.array([[1, np.inf, 0], [0, 0, 0]], np.float32), "n": np.array(3, np.int64)},
         "array 'w' has 1 non-finite value(s)"),
        ({"w": np.ones((3, 2), np.float32), "n": np.array(3, np.int64)}, "array 'w' has shape (3, 2), expected (2, 3)"),
        ({"w": np.ones((2, 3), np.float64), "n": np.array(3, np.int64)}, "array 'w' has dtype float64, expected float32"),
        ({"w": np.ones((2, 3), np.float32)}, "missing keys ['n']"),
        ({"w": np.ones((2, 3), np.float32), "n": np.array(3, np.int64), "x": np.ones(1)}, "unexpected keys ['x']"),
    ],
)
def test_bad_updates_are_rejected(values, reason):
    assert check_arrays(arrays(**values), TEMPLATE) == reason


def _reply(content=None, error=None):
    ins = Message(RecordDict(), dst_node_id=1, message_type="train")
    return Message(error, reply_to=ins) if error is not None else Message(content, reply_to=ins)


def test_reply_level_checks():
    good = arrays(w=np.ones((2, 3), np.float32), n=np.array(3, np.int64))
    assert check_train_reply(_reply(RecordDict({ARRAYS: good, METRICS: MetricRecord({NUM_EXAMPLES: 5})})),
                             TEMPLATE) is None
    assert "site reported an error: boom" == check_train_reply(_reply(error=Error(code=2, reason="boom")), TEMPLATE)
    assert "no 'metrics' MetricRecord" in check_train_reply(_reply(RecordDict({ARRAYS: good})), TEMPLATE)
    assert "no 'arrays' ArrayRecord" in check_train_reply(
        _reply(RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: 5})})), TEMPLATE)
    assert "invalid 'num-examples': 0" in check_train_reply(
        _reply(RecordDict({ARRAYS: good, METRICS: MetricRecord({NUM_EXAMPLES: 0})})), TEMPLATE)


def test_kept_array_is_a_plain_array_that_decodes_once():
    import torch

    from fedsilo.federation.messages import KeptArray, state_to_arrays

    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    record = state_to_arrays({"w": weights, "n": torch.tensor(7)})
    kept = record["w"]
    plain = Array(weights.numpy())
    assert isinstance(kept, KeptArray) and kept.data == plain.data
    # it travels as an Array: the same deflated bytes (type header included) and object id
    assert kept.deflate() == plain.deflate() and kept.object_id == plain.object_id
    weights.add_(100.0)  # the model trains on: the message must not change
    first, second = kept.numpy(), kept.numpy()
    assert np.array_equal(first, np.arange(6, dtype=np.float32).reshape(2, 3)) and first.dtype == np.float32
    first[0, 0] = -1.0  # each call returns a fresh writable copy, as Array.numpy does
    assert second[0, 0] == 0.0 and kept.numpy()[0, 0] == 0.0
    assert record["n"].numpy().dtype == np.int64 and int(record["n"].numpy()) == 7
    kept.data = Array(np.zeros((2, 3), np.float32)).data  # new bytes: decoded from now on
    assert np.array_equal(kept.numpy(), np.zeros((2, 3), np.float32))


def test_kept_array_encodes_lazily_and_copies_like_an_array():
    import copy
    import pickle

    from fedsilo.federation.messages import KeptArray

    values = np.linspace(0, 1, 12, dtype=np.float64).reshape(3, 4)
    kept = KeptArray(values)
    assert "data" not in kept.__dict__ and (kept.dtype, kept.shape) == ("float64", (3, 4))
    assert ArrayRecord({"w": kept}).count_bytes() == ArrayRecord({"w": Array(values)}).count_bytes()
    assert kept.data == Array(values).data
    for clone in (copy.deepcopy(KeptArray(values)), pickle.loads(pickle.dumps(KeptArray(values)))):
        # copied or pickled (Ray, the simulation engine) as the plain Array it stands for
        assert type(clone) is Array and np.array_equal(clone.numpy(), values) and clone.data == Array(values).data
    other = KeptArray(values)
    other.shape = (4, 3)  # changing a field first fixes the bytes, then decodes from them
    assert "_kept" not in other.__dict__ and other.data == Array(values).data
