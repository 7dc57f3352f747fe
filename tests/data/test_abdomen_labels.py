"""Label vocabulary mapping tables and remapping."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.data.errors import DataError
from fedsilo.data.labels import (
    AMOS,
    BUILTIN_MAPPINGS,
    CHAOS_MR,
    IGNORE_INDEX,
    ORGAN_IDS,
    TOTALSEGMENTATOR_V2,
    LabelMapping,
    annotated_class_mask,
    get_mapping,
    load_mapping,
    mapping_from_dict,
    organ_id,
)


def test_builtin_tables_match_the_published_label_lists() -> None:
    assert CHAOS_MR.table == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    assert CHAOS_MR.annotated == frozenset({1, 2, 3, 4})
    # AMOS: 1 spleen, 2 rk, 3 lk, 4 gallbladder, 6 liver, 7 stomach, 10 pancreas; the rest background.
    assert AMOS.table[1] == ORGAN_IDS["spleen"] and AMOS.table[6] == ORGAN_IDS["liver"]
    assert AMOS.table[4] == ORGAN_IDS["gallbladder"] and AMOS.table[10] == ORGAN_IDS["pancreas"]
    assert AMOS.table[7] == ORGAN_IDS["stomach"]
    assert [AMOS.table[i] for i in (5, 8, 9, 11, 12, 13, 14, 15)] == [0] * 8
    assert AMOS.annotated == frozenset(range(1, 8))
    assert TOTALSEGMENTATOR_V2.table[5] == ORGAN_IDS["liver"] and TOTALSEGMENTATOR_V2.table[7] == ORGAN_IDS["pancreas"]
    assert TOTALSEGMENTATOR_V2.others == "background"
    assert set(BUILTIN_MAPPINGS) == {"chaos_mr", "amos", "totalsegmentator_v2", "fedsilo"}


def test_remap_amos_values_hand_checked() -> None:
    raw = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 10, 13, 15]], dtype=np.int16)
    out = AMOS.remap(raw)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 4, 2, 3], [6, 0, 1, 7], [0, 5, 0, 0]])


def test_remap_others_background_and_ignore() -> None:
    raw = np.array([0, 5, 7, 117, 42], dtype=np.uint8)
    np.testing.assert_array_equal(TOTALSEGMENTATOR_V2.remap(raw), [0, 1, 5, 0, 0])
    ignore = LabelMapping("x", {1: "liver"}, others="ignore")
    np.testing.assert_array_equal(ignore.remap(np.array([0, 1, 9])), [0, 1, IGNORE_INDEX])


def test_remap_float_labels_accepted_when_integral() -> None:
    np.testing.assert_array_equal(CHAOS_MR.remap(np.array([0.0, 4.0, 1.0])), [0, 4, 1])


def test_unknown_value_error_names_file_and_values() -> None:
    with pytest.raises(DataError, match=r"label_7\.nii\.gz: label values \[5, 9\] are not in mapping 'chaos_mr'"):
        CHAOS_MR.remap(np.array([0, 1, 5, 9, 9]), source="label_7.nii.gz")


def test_remap_rejects_nan_fraction_and_bad_dtype() -> None:
    with pytest.raises(DataError, match="NaN"):
        CHAOS_MR.remap(np.array([0.0, np.nan]))
    with pytest.raises(DataError, match="non-integer"):
        CHAOS_MR.remap(np.array([0.0, 1.5]))
    with pytest.raises(DataError, match="integer-valued"):
        CHAOS_MR.remap(np.array(["a", "b"]))


def test_user_table_from_dict_and_toml(tmp_path) -> None:
    m = mapping_from_dict({"name": "site_a", "others": "background", "labels": {"1": "liver", "2": "kidney_right", "3": "ignore"}})
    assert m.table == {0: 0, 1: 1, 2: 2, 3: IGNORE_INDEX}
    assert m.annotated == frozenset({1, 2})
    bare = mapping_from_dict({6: "gall bladder"})
    assert bare.table[6] == ORGAN_IDS["gallbladder"] and bare.others == "error"
    path = tmp_path / "site_a.toml"
    path.write_text('name = "site_a"\nothers = "background"\n[labels]\n1 = "liver"\n2 = "right_kidney"\n3 = "ignore"\n')
    assert load_mapping(path).table == m.table
    assert get_mapping(str(path)).others == "background"
    # to_dict round-trips
    assert mapping_from_dict(m.to_dict()).table == m.table


def test_mapping_argument_errors() -> None:
    with pytest.raises(ValueError, match="organ must be one of"):
        organ_id("kidney")
    with pytest.raises(ValueError, match="organ id must be in 0..7"):
        organ_id(9)
    with pytest.raises(ValueError, match="name or an integer"):
        organ_id(True)
    with pytest.raises(ValueError, match="others must be one of"):
        LabelMapping("x", {1: 1}, others="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source label must be an integer"):
        mapping_from_dict({"liver": 1})
    with pytest.raises(ValueError, match="source label must be an integer"):
        LabelMapping("x", {"1": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="labels must be a table"):
        mapping_from_dict({"labels": [1, 2]})
    with pytest.raises(ValueError, match="mapping must be one of"):
        get_mapping("nope")


def test_annotated_class_mask() -> None:
    np.testing.assert_array_equal(annotated_class_mask(CHAOS_MR.annotated), [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(annotated_class_mask([]), [1, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="annotated organs must be in 1..7"):
        annotated_class_mask([IGNORE_INDEX])


def test_remap_large_and_negative_values_use_the_general_path() -> None:
    m = LabelMapping("wide", {70000: "liver", -1: "ignore", 3: "spleen"})
    np.testing.assert_array_equal(m.remap(np.array([[0, 70000], [-1, 3]], dtype=np.int64)), [[0, 1], [IGNORE_INDEX, 4]])
    np.testing.assert_array_equal(m.remap(np.array([0.0, 70000.0, -1.0])), [0, 1, IGNORE_INDEX])
    np.testing.assert_array_equal(CHAOS_MR.remap(np.array([True, False])), [1, 0])
    assert CHAOS_MR.remap(np.zeros((0, 3), dtype=np.uint8)).shape == (0, 3)
