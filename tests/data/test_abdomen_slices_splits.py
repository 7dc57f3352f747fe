"""Slice extraction (2.5D, skipping empty slices, reassembly) and patient-level splits."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.data.slices import assemble_volumes, extract_slices, group_slices, stack_slices
from fedsilo.data.sources import Volume
from fedsilo.data.splits import split_items, split_patients
from helpers import make_volume


def _vol(pid: str = "p", depth: int = 4, labelled: bool = True) -> Volume:
    image = np.stack([np.full((3, 3), float(d)) for d in range(depth)]).astype(np.float32)
    labels = None
    if labelled:
        labels = np.zeros((depth, 3, 3), dtype=np.uint8)
        labels[1, 1, 1] = 1
        labels[min(2, depth - 1), 0, 0] = 2
    return make_volume(image, labels, patient_id=pid, site="s", annotated={1, 2} if labelled else ())


def test_slices_keep_patient_and_index() -> None:
    slices = extract_slices(_vol())
    assert [s.slice_index for s in slices] == [0, 1, 2, 3]
    assert all(s.patient_id == "p" and s.num_slices == 4 and s.image.shape == (1, 3, 3) for s in slices)
    assert slices[2].image[0, 0, 0] == 2.0 and slices[2].label[0, 0] == 2
    np.testing.assert_array_equal(slices[0].class_mask, [1, 1, 1, 0, 0, 0, 0, 0])


def test_context_channels_edge_replicated() -> None:
    slices = extract_slices(_vol(), context=1)
    assert slices[0].image.shape == (3, 3, 3)
    assert [s.image[:, 0, 0].tolist() for s in slices] == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    wide = extract_slices(_vol(depth=2), context=2)
    assert wide[0].image[:, 0, 0].tolist() == [0, 0, 0, 1, 1]


def test_skip_empty_labelled_and_unlabelled() -> None:
    assert [s.slice_index for s in extract_slices(_vol(), skip_empty=True)] == [1, 2]
    vol = _vol(labelled=False)  # slice 0 is all 0 = the minimum -> empty
    assert [s.slice_index for s in extract_slices(vol, skip_empty=True)] == [1, 2, 3]
    with pytest.raises(ValueError, match="context must be >= 0"):
        extract_slices(vol, context=-1)
    with pytest.raises(ValueError, match="empty_fraction must be in"):
        extract_slices(vol, empty_fraction=1.5)


def test_stack_group_and_assemble() -> None:
    slices = extract_slices(_vol("a"), skip_empty=True) + extract_slices(_vol("b", depth=2))
    images, labels = stack_slices(slices)
    assert images.shape == (4, 1, 3, 3) and labels.shape == (4, 3, 3)
    assert stack_slices(extract_slices(_vol(labelled=False)))[1] is None
    groups = group_slices(reversed(slices))
    assert [s.slice_index for s in groups["a"]] == [1, 2]
    preds = np.stack([s.label for s in slices])
    vols = assemble_volumes(preds, slices)
    assert vols["a"].shape == (4, 3, 3) and vols["b"].shape == (2, 3, 3)
    np.testing.assert_array_equal(vols["a"], _vol().labels)  # skipped slices had no organ
    with pytest.raises(ValueError, match="same length"):
        assemble_volumes(preds[:2], slices)
    with pytest.raises(ValueError, match="slices must be non-empty"):
        stack_slices([])


def test_split_by_patient_never_shares_a_patient() -> None:
    slices = [s for pid in "abcdefghij" for s in extract_slices(_vol(pid))]
    parts = split_items(slices, fractions=(0.6, 0.2, 0.2), seed=1)
    patients = {name: {s.patient_id for s in items} for name, items in parts.items()}
    assert [len(patients[n]) for n in ("train", "val", "test")] == [6, 2, 2]
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"] or patients["val"] & patients["test"])
    assert sum(len(v) for v in parts.values()) == len(slices)
    # each patient's slices all go together
    assert all(len(items) % 4 == 0 for items in parts.values())


def test_split_patients_seeded_counts_and_rounding() -> None:
    ids = [str(i) for i in range(15)]
    a = split_patients(ids, seed=3)
    assert a == split_patients(list(reversed(ids)) + ids, seed=3)  # order/duplicates do not matter
    assert a != split_patients(ids, seed=4)
    assert [len(a[n]) for n in ("train", "val", "test")] == [12, 2, 1]  # 12, 1.5, 1.5 -> largest remainder
    assert sorted(sum(a.values(), [])) == sorted(ids)
    c = split_patients(ids, counts=(10, 5), names=("site1", "site2"), seed=0)
    assert [len(c["site1"]), len(c["site2"])] == [10, 5]
    tiny = split_patients(["x", "y", "z"], fractions=(0.9, 0.05, 0.05))
    assert [len(tiny[n]) for n in ("train", "val", "test")] == [1, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.5, 0.5)}, "fractions must be 3 non-negative"),
        ({"fractions": (0.5, 0.4, 0.2)}, "fractions must sum to 1"),
        ({"counts": (1, 1, 1)}, r"counts must sum to the number of patients \(4\)"),
        ({"counts": (5, -1, 0)}, "counts must be 3 non-negative"),
        ({"fractions": None}, "one of fractions or counts"),
        ({"names": ("a", "a", "b")}, "names must be non-empty and unique"),
    ],
)
def test_split_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_patients(["1", "2", "3", "4"], **kwargs)
