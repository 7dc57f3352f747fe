"""A site's own privacy ledger: the DP-SGD releases it made, kept on its host.

The accountant normally travels as site state: the coordinator stores it, checkpoints it and
sends it back with every training message. A coordinator that "forgets" it (a bug, a restarted
study, or on purpose) would have the site start again at epsilon 0. With a ledger (node config
``privacy-ledger`` = a folder on the site's host; ``fedsilo deploy supernode`` sets it next to the
site's private key), the site:

- before training, takes the longer of its own history and the message's (so a reset history
  is replaced by what the site knows it spent, and a resumed run is not counted twice);
- trains only within ``privacy.max_epsilon``, and within the site's own cap (node config
  ``max-epsilon``) whatever the coordinator's config says;
- after training, writes the new history atomically before it replies.

One ledger file per study (``experiment.name``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from fedsilo.fileio import atomic_write_text
from fedsilo.privacy.accounting import STATE_FIELDS, Accountant
from fedsilo.privacy.dp import STATE_PREFIX

logger = logging.getLogger(__name__)

#: Node-config keys: the ledger folder, and the site's own epsilon cap.
LEDGER_KEY = "privacy-ledger"
CAP_KEY = "max-epsilon"


class PrivacyLedger:
    """The ledger folder of one site.

    Parameters
    ----------
    folder
        Where the site keeps its ledger files (created on first write).
    cap
        The site's own epsilon cap (0 = none): no round may end above it, whatever the config.
    """

    def __init__(self, folder: str | Path, cap: float = 0.0) -> None:
        if cap < 0:
            raise ValueError(f"the site's max-epsilon must be >= 0, got {cap}")
        self.folder = Path(folder)
        self.cap = float(cap)

    @classmethod
    def from_node_config(cls, node: Mapping[str, Any]) -> PrivacyLedger | None:
        """The ledger a node config names, or None."""
        if LEDGER_KEY not in node:
            return None
        return cls(str(node[LEDGER_KEY]), float(node.get(CAP_KEY, 0.0)))

    def path(self, study: str) -> Path:
        return self.folder / ((re.sub(r"[^A-Za-z0-9._-]+", "_", study) or "study") + ".json")

    def load(self, study: str, mechanism: str) -> Accountant:
        """The site's own accountant for ``study`` (empty when it never trained for it)."""
        path = self.path(study)
        if not path.is_file():
            return Accountant(mechanism)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"privacy ledger {path}: unreadable ({exc}); refusing to train without it") from None
        return Accountant.from_state(state, STATE_PREFIX, mechanism)

    def reconcile(self, study: str, site_state: MutableMapping[str, Any], mechanism: str) -> None:
        """Put the longer of the ledger's and the message's histories into ``site_state``."""
        own = self.load(study, mechanism)
        sent = Accountant.from_state(site_state, STATE_PREFIX, mechanism)
        if len(own) > len(sent):
            logger.warning("The coordinator sent a privacy history of %d steps for %r; this site's ledger holds %d: "
                           "the ledger's is used", len(sent), study, len(own))
            site_state.update(own.state(STATE_PREFIX))

    def budget(self, max_epsilon: float) -> float:
        """The cap a round must respect: the config's ``privacy.max_epsilon`` and the site's own
        cap, the smaller of the two that are set (0 = none)."""
        caps = [c for c in (max_epsilon, self.cap) if c]
        return min(caps) if caps else 0.0

    def record(self, study: str, site_state: Mapping[str, Any]) -> None:
        """Write the accountant in ``site_state`` as the study's ledger (atomically)."""
        keys = [f"{STATE_PREFIX}-{k}" for k in STATE_FIELDS]
        if not all(k in site_state for k in keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(study), json.dumps({k: site_state[k] for k in keys}, indent=1) + "\n")


__all__ = ["CAP_KEY", "LEDGER_KEY", "PrivacyLedger"]
