"""What a site keeps between its rounds and never sends: optimiser state and site-kept arrays.

Two options need a site to remember something from one round to its next:

- ``train.keep_optimizer_state``: its optimisers' state (Adam moments, step counts), which the
  training loop puts in :attr:`~fedsilo.tasks.base.TrainContext.carry`;
- arrays a task keeps at each site (:meth:`~fedsilo.tasks.base.Task.site_kept_keys`, e.g. a GAN's
  own discriminator, ``gan.federation.discriminator``): the site trains its own copy, and its
  reply carries the values it was sent, so the coordinator (and a secure sum) sees a zero update.

Optimiser moments are per-site gradient statistics, so neither travels to the coordinator: the
site keeps them in Flower's :class:`~flwr.app.Context` state (which lives as long as the run on
every engine), and in a file so that a resumed run (a new Flower run, with empty contexts)
continues exactly where the uninterrupted one would. The file goes in:

- the folder the node config key ``site-state`` names (a deployed SuperNode, on its own host);
- for a simulated site (a ``partition-id`` node of the local or simulation engine, whose data is a
  partition of the coordinator's), the folder the coordinator names in the message
  (``RUN_DIR/site-state/<site>``): simulated sites share the coordinator's machine anyway.

A site without either keeps the state in memory only (a resumed run then starts it afresh).
Each state is tagged with the round that produced it; a round loads the latest from an earlier
round, and the two latest files are kept, since a run resumes from the checkpoint of the last
finished round while its sites may have trained one round beyond it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context

from fedsilo.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

#: Node-config key: the folder where a deployed site keeps its state files.
SITE_STATE_DIR_KEY = "site-state"
#: Config-record key by which the coordinator names simulated sites' folder (RUN_DIR/site-state).
SIMULATED_DIR_KEY = "fedsilo-simulated-site-state"
#: Context.state key of the in-memory copy.
CONTEXT_KEY = "fedsilo-site-memory"
#: How many round files a site keeps per run.
KEEP_FILES = 2
#: Key of the site-kept arrays in a site's state (the training loop's keys are its own).
KEPT_ARRAYS = "kept-arrays"


def needs_memory(cfg: Any, kept_keys: frozenset[str] | set[str]) -> bool:
    """Whether sites must remember anything between rounds under ``cfg``."""
    return bool(cfg.train.keep_optimizer_state or kept_keys)


def simulated_dir_hint(out_dir: Path | str, needed: bool) -> dict[str, str]:
    """The config-record entry naming simulated sites' folder (empty when nothing is kept)."""
    return {SIMULATED_DIR_KEY: str(Path(out_dir) / "site-state")} if needed else {}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "site"


class SiteMemory:
    """One site's memory of one run.

    Parameters
    ----------
    context
        The node's Flower context (its ``state`` holds the in-memory copy).
    run_key
        Identifies the run (study name and config digest): state of another run is never loaded.
    folder
        Where the site's round files go (None = memory only).
    """

    def __init__(self, context: Context, run_key: str, folder: Path | None) -> None:
        self.context = context
        self.run_key = run_key
        self.folder = None if folder is None else Path(folder) / _safe(run_key)

    @classmethod
    def for_site(cls, context: Context, config: Mapping[str, Any], config_text: str, study: str,
                 site_name: str) -> SiteMemory:
        """The memory of the site ``context`` belongs to, for the run whose config is ``config_text``.

        A deployed site (node config ``data-path``) uses only its own ``site-state`` folder; a
        simulated one the folder the coordinator names (``config``), one subfolder per site.
        """
        node = context.node_config
        digest = hashlib.sha256(config_text.encode()).hexdigest()[:12]
        folder: Path | None = None
        if SITE_STATE_DIR_KEY in node:
            folder = Path(str(node[SITE_STATE_DIR_KEY]))
        elif "data-path" not in node and SIMULATED_DIR_KEY in config:
            folder = Path(str(config[SIMULATED_DIR_KEY])) / _safe(site_name)
        return cls(context, f"{study}-{digest}", folder)

    def _files(self) -> dict[int, Path]:
        if self.folder is None or not self.folder.is_dir():
            return {}
        out = {}
        for path in self.folder.glob("round-*.pt"):
            match = re.fullmatch(r"round-(\d+)\.pt", path.name)
            if match:
                out[int(match.group(1))] = path
        return out

    def load(self, before_round: int) -> dict[str, Any]:
        """The state the site saved last in a round before ``before_round`` ({} when none)."""
        record = self.context.state.config_records.get(CONTEXT_KEY)
        if record is not None and record["run"] == self.run_key and int(record["round"]) < before_round:
            return _decode(bytes(record["blob"]))
        earlier = [r for r in self._files() if r < before_round]
        if earlier:
            rnd = max(earlier)
            logger.info("Site state of round %d read from %s", rnd, self.folder)
            return _decode(self._files()[rnd].read_bytes())
        if self.folder is None and before_round > 1:
            logger.info("No site state kept from before round %d (no '%s' folder: state lives in memory for one "
                        "run only); starting afresh", before_round, SITE_STATE_DIR_KEY)
        return {}

    def save(self, rnd: int, state: Mapping[str, Any]) -> None:
        """Keep ``state`` as the site's state after round ``rnd`` (memory, and file when a folder is set)."""
        blob = _encode(state)
        self.context.state[CONTEXT_KEY] = ConfigRecord({"run": self.run_key, "round": int(rnd), "blob": blob})
        if self.folder is None:
            return
        atomic_write_bytes(self.folder / f"round-{rnd:05d}.pt", blob, mode=0o600)
        files = self._files()
        for old in sorted(files)[:-KEEP_FILES]:
            files[old].unlink(missing_ok=True)


def begin_round(memory: SiteMemory, model: torch.nn.Module, rnd: int) -> dict[str, Any]:
    """The site's state for round ``rnd`` (from its last earlier round); the arrays it keeps are
    loaded into ``model`` over the ones it was sent."""
    state = memory.load(rnd)
    kept = state.get(KEPT_ARRAYS)
    if kept:
        missing = set(kept) - set(model.state_dict())
        if missing:
            raise ValueError(f"the site's kept arrays {sorted(missing)[:3]} are not in the model")
        model.load_state_dict(kept, strict=False)
    return state


def end_round(memory: SiteMemory, rnd: int, state: dict[str, Any], trained: Mapping[str, torch.Tensor],
              kept_keys: frozenset[str] | set[str], sent: Any) -> dict[str, torch.Tensor]:
    """Keep ``state`` and the trained values of ``kept_keys`` as the site's state after round
    ``rnd``; return what the reply carries: ``trained`` with the kept keys set back to the values
    the site was sent (``sent``: the message's ArrayRecord)."""
    if kept_keys:
        state[KEPT_ARRAYS] = {k: trained[k].detach().cpu().clone() for k in sorted(kept_keys)}
    memory.save(rnd, state)
    if not kept_keys:
        return dict(trained)
    return {k: torch.from_numpy(sent[k].numpy()) if k in kept_keys else v for k, v in trained.items()}


def _encode(state: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def _decode(blob: bytes) -> dict[str, Any]:
    return dict(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True))


__all__ = ["KEEP_FILES", "KEPT_ARRAYS", "SIMULATED_DIR_KEY", "SITE_STATE_DIR_KEY", "SiteMemory", "begin_round",
           "end_round", "needs_memory", "simulated_dir_hint"]
