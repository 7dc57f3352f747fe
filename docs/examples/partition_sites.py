"""Split a labelled data set into non-IID sites, as the config's [partition] section does.

Run: python docs/examples/partition_sites.py
"""

import numpy as np

from fedsilo.config.data_schema import PartitionSection
from fedsilo.data.partition import format_partition_table, partition_indices, partition_table

grades = np.random.default_rng(0).integers(0, 5, size=1000)  # one DR grade per image

for spec in (PartitionSection(name="dirichlet", alpha=0.5), PartitionSection(name="severity", sites_per_class=2)):
    parts = partition_indices(grades, num_sites=4, cfg=spec, seed=0)  # disjoint index arrays, one per site
    assert sum(len(p) for p in parts) <= len(grades)
    table = partition_table(parts, grades, num_classes=5)  # sites x grades counts
    print(spec.name)
    print(format_partition_table(table, [f"site-{i + 1}" for i in range(4)], [str(g) for g in range(5)]))
