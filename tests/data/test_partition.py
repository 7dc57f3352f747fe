"""Partitioning into sites: every partitioner, with class counts checked."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.config.data_schema import PartitionSection
from fedsilo.data.partition import (
    SeverityPartitioner,
    format_partition_table,
    partition_indices,
    partition_table,
    save_partition_table,
    split_validation,
)

# 5 classes with 40, 30, 20, 20, 10 samples (120 in all).
LABELS = np.repeat(np.arange(5), [40, 30, 20, 20, 10])


def _check_disjoint_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)), "sites share samples"
    return allidx


def test_iid_balances_sizes_and_classes():
    parts = partition_indices(LABELS, 3, PartitionSection(name="iid"), seed=0)
    allidx = _check_disjoint_cover(parts, len(LABELS))
    assert sorted(allidx.tolist()) == list(range(120))
    assert [len(p) for p in parts] == [40, 40, 40]
    table = partition_table(parts, LABELS, 5)
    assert table.sum(0).tolist() == [40, 30, 20, 20, 10]
    # shuffled before sharding: every site sees most classes (contiguous shards would not)
    assert (table > 0).sum(1).min() >= 4


def test_iid_is_seeded():
    a = partition_indices(LABELS, 3, PartitionSection(name="iid"), seed=1)
    b = partition_indices(LABELS, 3, PartitionSection(name="iid"), seed=1)
    c = partition_indices(LABELS, 3, PartitionSection(name="iid"), seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_dirichlet_small_alpha_skews_labels():
    parts = partition_indices(LABELS, 3, PartitionSection(name="dirichlet", alpha=0.1, min_size=5), seed=0)
    _check_disjoint_cover(parts, 120)
    table = partition_table(parts, LABELS, 5)
    assert table.sum() == 120 and table.sum(0).tolist() == [40, 30, 20, 20, 10]
    assert min(len(p) for p in parts) >= 5
    # strongly skewed: each site's largest class holds most of its samples
    share = table.max(1) / table.sum(1)
    assert share.mean() > 0.5


def test_pathological_gives_k_classes_per_site():
    parts = partition_indices(LABELS, 5, PartitionSection(name="pathological", classes_per_site=2), seed=0)
    _check_disjoint_cover(parts, 120)
    table = partition_table(parts, LABELS, 5)
    assert ((table > 0).sum(1) == 2).all()
    # first-deterministic assignment: site i holds class i, so every class is used
    assert all(table[i, i] > 0 for i in range(5))
    assert table.sum(0).tolist() == [40, 30, 20, 20, 10]


def test_size_skew_linear_sizes():
    parts = partition_indices(LABELS, 3, PartitionSection(name="size_skew", size_skew="linear"), seed=0)
    # flwr-datasets LinearPartitioner: sizes proportional to 1, 2, 3 -> 20, 40, 60
    assert [len(p) for p in parts] == [20, 40, 60]


def test_size_skew_exponential_is_increasing():
    parts = partition_indices(LABELS, 3, PartitionSection(name="size_skew", size_skew="exponential"), seed=0)
    sizes = [len(p) for p in parts]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] and sum(sizes) == 120


def test_natural_partition_by_group():
    groups = np.array(["cam-b", "cam-a", "cam-c"] * 40)
    parts = partition_indices(LABELS, 3, PartitionSection(name="natural"), seed=0, groups=groups)
    for part, name in zip(parts, ["cam-a", "cam-b", "cam-c"]):
        assert set(groups[part]) == {name}
        assert len(part) == 40


def test_natural_errors():
    with pytest.raises(ValueError, match="needs a site/camera id"):
        partition_indices(LABELS, 3, PartitionSection(name="natural"), seed=0)
    with pytest.raises(ValueError, match="found 2 natural sites"):
        partition_indices(LABELS, 3, PartitionSection(name="natural"), seed=0, groups=np.array(["a", "b"] * 60))


def test_severity_specialisation_counts():
    # 5 grades, 10 sites, each grade held by 2 sites: every site holds exactly one grade.
    parts = partition_indices(LABELS, 10, PartitionSection(name="severity", sites_per_class=2), seed=0)
    table = partition_table(parts, LABELS, 5)
    assert ((table > 0).sum(1) == 1).all()
    assert ((table > 0).sum(0) == 2).all()
    assert table.sum(0).tolist() == [40, 30, 20, 20, 10]
    assert table[table > 0].tolist() == [20, 20, 15, 15, 10, 10, 10, 10, 5, 5]


def test_severity_three_sites():
    parts = partition_indices(LABELS, 3, PartitionSection(name="severity", sites_per_class=1), seed=0)
    table = partition_table(parts, LABELS, 5)
    # grade c -> site c mod 3
    expected = np.zeros((3, 5), int)
    for c, n in enumerate([40, 30, 20, 20, 10]):
        expected[c % 3, c] = n
    assert np.array_equal(table, expected)


def test_severity_partitioner_validation():
    with pytest.raises(ValueError, match="sites_per_class must be in"):
        SeverityPartitioner(3, "label", 4, seed=0)
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        SeverityPartitioner(0, "label", 1, seed=0)


def test_partition_input_validation():
    with pytest.raises(ValueError, match="labels must be 1-D"):
        partition_indices(LABELS.reshape(-1, 1), 3, PartitionSection(), seed=0)
    with pytest.raises(ValueError, match="num_sites must be >= 1"):
        partition_indices(LABELS, 0, PartitionSection(), seed=0)
    with pytest.raises(ValueError, match="cannot split 120 samples into 200 sites"):
        partition_indices(LABELS, 200, PartitionSection(), seed=0)


def test_split_validation():
    rng = np.random.default_rng(0)
    tr, va = split_validation(np.arange(10), 0.2, rng)
    assert len(tr) == 8 and len(va) == 2 and not set(tr) & set(va)
    tr, va = split_validation(np.arange(1), 0.5, rng)
    assert len(tr) == 1 and len(va) == 0
    with pytest.raises(ValueError, match="fraction must be in"):
        split_validation(np.arange(3), 1.0, rng)


def test_table_outputs(tmp_path):
    table = np.array([[3, 0], [1, 2]])
    text = format_partition_table(table, ["s1", "s2"], ["a", "b"])
    assert text.splitlines()[-1].split() == ["total", "4", "2", "6"]
    save_partition_table(table, ["s1", "s2"], ["a", "b"], tmp_path / "p.csv", tmp_path / "p.png")
    assert (tmp_path / "p.csv").read_text().splitlines() == ["site,a,b,total", "s1,3,0,3", "s2,1,2,3"]
    assert (tmp_path / "p.png").stat().st_size > 1000
