"""The vocabulary of a round, shared by every layer that trains, aggregates or records one.

- :class:`Row`: one ``metrics.jsonl`` line without its round (a scope and its values);
- :class:`StopTraining`: no further round may run (a privacy budget is spent, too few sites
  may still train); the run then ends cleanly after its last finished round;
- :class:`FederationError`: a round cannot proceed (too few valid updates, silent sites);
- :class:`SiteTable`: the sites a run trains on, as ``sites.json`` records them;
- :data:`SITE_DONE`: the site-state key a site sets, to a reason, when it must not train again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Site-state key a site sets (to a reason) when it must not train again, e.g. its privacy budget is
#: spent; the server stops sampling it and ends the run cleanly when too few sites are left.
SITE_DONE = "site-done"


@dataclass
class Row:
    """One metrics.jsonl line without its round: a scope ("global" or a site) and values.

    ``round`` is set only on a row that describes an earlier round than the one it is returned
    with: fused evaluation's validation rows, returned with round r+1's training rows, describe
    the global model after round r.
    """

    scope: str
    values: dict[str, Any] = field(default_factory=dict)
    round: int | None = None


@dataclass
class SiteTable:
    """Who trains, as a run records it (``sites.json``, ``partition.csv``).

    Attributes
    ----------
    rows
        One dict per site, in site order: ``name``, ``index``, ``num_train``, ``num_val``,
        ``class_counts`` (training samples per class; ``[]`` when unknown) and aggregate
        descriptors such as ``modality`` (never samples).
    class_names
        Names of the ``class_counts`` columns.
    """

    rows: list[dict[str, Any]]
    class_names: list[str]


class StopTraining(RuntimeError):
    """No further round may run (e.g. every site's privacy budget is spent).

    Raised before any state changes; the run then ends cleanly: the last finished round is
    evaluated (if it was not), logged with a ``stopped_early`` row and saved as the final state.
    """


class FederationError(RuntimeError):
    """A round cannot proceed (too few valid updates); the last good checkpoint is intact."""


__all__ = ["SITE_DONE", "FederationError", "Row", "SiteTable", "StopTraining"]
