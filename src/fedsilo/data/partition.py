"""Splitting a pooled training set into sites (hospitals), seeded.

Partitioning goes through flwr-datasets partitioners wherever one exists (Iid, Dirichlet,
Pathological, Linear/Square/Exponential size skew, NaturalId); severity specialisation — the
FedGAN protocol, where each DR grade is held by ``k`` of the sites and its images are split among
them (Kamran et al., PLOS ONE 2025) — is a :class:`flwr_datasets.partitioner.Partitioner` of
ours. The pooled data is shuffled with the seed first, because flwr-datasets' IID and size
partitioners shard contiguously.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import datasets
import numpy as np
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    ExponentialPartitioner,
    IidPartitioner,
    LinearPartitioner,
    NaturalIdPartitioner,
    Partitioner,
    PathologicalPartitioner,
    SquarePartitioner,
)

from fedsilo.config.data_schema import PartitionName, PartitionSection

logger = logging.getLogger(__name__)
datasets.disable_progress_bars()

#: The partition names ``partition.name`` accepts (the config schema's list).
PARTITIONERS: tuple[str, ...] = get_args(PartitionName)


class SeverityPartitioner(Partitioner):
    """Each class is assigned to ``sites_per_class`` sites; its samples are split evenly among them.

    Class ``c`` goes to sites ``(c * step + j) mod num_partitions`` for ``j < sites_per_class``,
    with ``step`` chosen so that classes spread over all sites (the FedGAN paper's
    severity-specialised sites). Sample order within a class is shuffled with ``seed``.

    Parameters
    ----------
    num_partitions
        Number of sites.
    partition_by
        Column holding the class label.
    sites_per_class
        How many sites hold each class (1 = every grade at exactly one site).
    seed
        Shuffling seed.
    """

    def __init__(self, num_partitions: int, partition_by: str, sites_per_class: int, seed: int) -> None:
        super().__init__()
        if num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
        if not 1 <= sites_per_class <= num_partitions:
            raise ValueError(f"sites_per_class must be in [1, {num_partitions}], got {sites_per_class}")
        self._num_partitions = num_partitions
        self._partition_by = partition_by
        self._sites_per_class = sites_per_class
        self._seed = seed
        self._indices: list[list[int]] | None = None

    @property
    def num_partitions(self) -> int:
        return self._num_partitions

    def _determine(self) -> list[list[int]]:
        labels = np.asarray(self.dataset[self._partition_by])
        classes = np.unique(labels)
        rng = np.random.default_rng(self._seed)
        out: list[list[int]] = [[] for _ in range(self._num_partitions)]
        # Spread classes over sites: class c starts at site c * stride.
        stride = max(1, self._num_partitions // max(1, len(classes)))
        for ci, c in enumerate(classes):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            sites = [(ci * stride + j) % self._num_partitions for j in range(self._sites_per_class)]
            for site, chunk in zip(sites, np.array_split(idx, len(sites)), strict=True):
                out[site].extend(int(i) for i in chunk)
        return out

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(f"partition_id must be in [0, {self._num_partitions}), got {partition_id}")
        if self._indices is None:
            self._indices = self._determine()
        return self.dataset.select(sorted(self._indices[partition_id]))


def build_partitioner(cfg: PartitionSection, num_sites: int, seed: int) -> Partitioner:
    """The flwr-datasets partitioner described by a config section (labels in column ``label``)."""
    name = cfg.name
    if name == "iid":
        return IidPartitioner(num_partitions=num_sites)
    if name == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_sites,
            partition_by="label",
            alpha=cfg.alpha,
            min_partition_size=cfg.min_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    if name == "pathological":
        return PathologicalPartitioner(
            num_partitions=num_sites,
            partition_by="label",
            num_classes_per_partition=cfg.classes_per_site,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=seed,
        )
    if name == "size_skew":
        cls = {"linear": LinearPartitioner, "square": SquarePartitioner, "exponential": ExponentialPartitioner}
        return cls[cfg.size_skew](num_partitions=num_sites)
    if name == "natural":
        return NaturalIdPartitioner(partition_by="group")
    if name == "severity":
        return SeverityPartitioner(num_sites, "label", cfg.sites_per_class, seed)
    raise ValueError(f"partition.name must be one of {', '.join(PARTITIONERS)}, got {name!r}")


def partition_indices(
    labels: np.ndarray,
    num_sites: int,
    cfg: PartitionSection,
    seed: int,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Indices of the pooled samples held by each site.

    Parameters
    ----------
    labels
        Class of each pooled sample, shape (N,).
    num_sites
        Number of sites; for ``natural`` it must equal the number of distinct groups.
    cfg
        The ``[partition]`` config section.
    seed
        Partition seed.
    groups
        Natural site/camera id of each sample, shape (N,); required for ``natural``.

    Returns
    -------
    list of np.ndarray
        ``num_sites`` sorted int64 index arrays into the pooled set; disjoint.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    columns = {"label": labels.astype(np.int64), "idx": np.arange(len(labels), dtype=np.int64)}
    if cfg.name == "natural":
        if groups is None:
            raise ValueError(
                "partition.name = 'natural' needs a site/camera id per image (phantom cameras or "
                "data.imagefolder.site_column), but this data has none"
            )
        found = np.unique(groups)
        if len(found) != num_sites:
            raise ValueError(
                f"partition.name = 'natural' found {len(found)} natural sites ({list(found)[:10]}), "
                f"but federation.num_sites = {num_sites}"
            )
        columns["group"] = np.asarray([str(g) for g in groups])
    if num_sites > len(labels):
        raise ValueError(f"cannot split {len(labels)} samples into {num_sites} sites")
    ds = datasets.Dataset.from_dict(columns).shuffle(seed=seed)
    ds = ds.select(range(len(ds)))
    partitioner = build_partitioner(cfg, num_sites, seed)
    partitioner.dataset = ds
    if cfg.name == "natural":
        # NaturalIdPartitioner orders ids by first appearance; order sites by sorted group id.
        by_group = {}
        for pid in range(partitioner.num_partitions):
            part = partitioner.load_partition(pid)
            by_group[part[0]["group"]] = np.sort(np.asarray(part["idx"], dtype=np.int64))
        return [by_group[g] for g in sorted(by_group)]
    parts = [np.sort(np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)) for i in range(num_sites)]
    for i, p in enumerate(parts):
        if len(p) == 0:
            logger.warning("Site %d received no training samples with partition %r", i + 1, cfg.name)
    unused = len(labels) - sum(len(p) for p in parts)
    if unused:
        left = np.setdiff1d(np.arange(len(labels)), np.concatenate(parts))
        logger.warning("Partition %r left %d sample(s) of class(es) %s at no site", cfg.name, unused,
                       sorted(set(labels[left].tolist())))
    return parts


def split_validation(indices: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split one site's indices into (train, val); at least one training sample is kept."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    perm = rng.permutation(indices)
    n_val = int(round(fraction * len(perm)))
    n_val = min(n_val, max(0, len(perm) - 1))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def partition_table(parts: Sequence[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of each class at each site, shape (num_sites, num_classes)."""
    return np.stack([np.bincount(labels[p], minlength=num_classes)[:num_classes] for p in parts])


def format_partition_table(table: np.ndarray, site_names: Sequence[str], class_names: Sequence[str]) -> str:
    """A plain-text table of site x class counts with totals (for logs and the console)."""
    header = ["site", *class_names, "total"]
    rows = [[name, *map(str, row), str(int(row.sum()))] for name, row in zip(site_names, table, strict=True)]
    rows.append(["total", *map(str, table.sum(0)), str(int(table.sum()))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), *(line(r) for r in rows)])


def save_partition_table(
    table: np.ndarray, site_names: Sequence[str], class_names: Sequence[str], csv_path: Path, png_path: Path
) -> None:
    """Write the site x class table as CSV and as a stacked bar chart PNG."""
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["site", *class_names, "total"])
        for name, row in zip(site_names, table, strict=True):
            writer.writerow([name, *map(int, row), int(row.sum())])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(site_names) + 2), 3.2))
    bottom = np.zeros(len(site_names))
    cmap = plt.get_cmap("viridis", len(class_names))
    for c, cname in enumerate(class_names):
        ax.bar(site_names, table[:, c], bottom=bottom, label=cname, color=cmap(c))
        bottom += table[:, c]
    ax.set_ylabel("training samples")
    ax.set_title("Partition: samples per class at each site")
    ax.legend(fontsize=7, ncols=min(len(class_names), 5), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(png_path, dpi=110, bbox_inches="tight")  # the legend below the axes is wider than they are
    plt.close(fig)
