"""Who the sites are: asking every connected node to describe itself (``query.site_info``)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedsilo.data.errors import DataError
from fedsilo.federation.messages import CONFIG, METRICS, QUERY_SITE_INFO, SITE
from fedsilo.rounds import FederationError

logger = logging.getLogger(__name__)

#: Error replies a SuperLink creates for a node that left (deployment): counted as dropouts.
UNREACHABLE = (ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


# Flower's error reasons: "<class 'pkg.DataError'>:<'message'>" (SuperNode, simulation), where the
# simulation engine wraps the site's exception as "\nException ClientAppException occurred. Message: ...".
_FLOWER_REASON = re.compile(r"^<class '(?:[\w.]*\.)?(?P<type>\w+)'>:<'(?P<text>.*)'>$", re.DOTALL)
_CLIENTAPP_EXCEPTION = re.compile(r"^\s*Exception ClientAppException occurred\. Message: ", re.DOTALL)


def unwrap_reason(reason: str) -> tuple[str, str]:
    """The exception type name and message of a site's error reply, without Flower's wrapping.

    ``"DataError: x"`` (in-process engine) and ``"<class 'fedsilo.data.errors.DataError'>:<'x'>"``
    (a SuperNode) both give ``("DataError", "x")``; the simulation engine keeps only the message,
    so its type comes back empty.
    """
    reason = reason.strip()
    match = _FLOWER_REASON.match(reason)
    if match:
        kind, text = match.group("type"), match.group("text")
        if kind == "ClientAppException":
            return "", _CLIENTAPP_EXCEPTION.sub("", text).strip()
        return kind, text.strip()
    kind, sep, text = reason.partition(": ")
    if sep and re.fullmatch(r"\w+(Error|Exception)", kind):
        return kind, text.strip()
    return "", reason


@dataclass
class SiteInfo:
    """A connected site as the server knows it (from its site_info reply)."""

    node_id: int
    name: str
    index: int
    num_train: int
    num_val: int
    class_counts: list[int]
    info: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The site as ``sites.json`` records it (aggregate descriptors only)."""
        return {"name": self.name, "index": self.index, "num_train": self.num_train, "num_val": self.num_val,
                "class_counts": self.class_counts, **{k: v for k, v in self.info.items() if k != "site-name"}}


def wait_for_nodes(grid: Grid, want: int, timeout: float) -> list[int]:
    """Node ids once at least ``want`` nodes are connected.

    Raises
    ------
    FederationError
        When fewer than ``want`` connect within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= want:
            return ids
        if time.monotonic() > deadline:
            raise FederationError(f"only {len(ids)} of {want} sites connected within {timeout:.0f}s")
        logger.info("Waiting for sites: %d of %d connected", len(ids), want)
        time.sleep(1.0)


def describe_sites(grid: Grid, config: Callable[[], ConfigRecord], want: int, timeout: float) -> list[SiteInfo]:
    """Every connected node's :class:`SiteInfo`, asking again whom the SuperLink reports unreachable.

    After a coordinator restart the SuperLink lists nodes from its database before they have
    reconnected; a query to such a node waits for it, or comes back as an error when its
    heartbeat lapses, in which case the node is asked again once it is back.

    Parameters
    ----------
    grid
        The Grid the sites are connected to.
    config
        Builds the ``config`` record each query carries (the experiment config).
    want
        Sites that must describe themselves (``federation.num_sites``).
    timeout
        Seconds to wait in all (``federation.timeout``).

    Raises
    ------
    FederationError
        When fewer than ``want`` sites describe themselves in time, or a site fails to (its
        error is quoted without Flower's wrapping).
    DataError
        When a site cannot read its data (the site's own message, naming the site).
    """
    deadline = time.monotonic() + timeout
    ids = wait_for_nodes(grid, want, timeout)
    described: dict[int, SiteInfo] = {}
    unanswered: list[int] = []
    for _ in range(10_000):
        unanswered = [nid for nid in ids if nid not in described]
        msgs = [Message(RecordDict({CONFIG: config()}), dst_node_id=nid, message_type=QUERY_SITE_INFO)
                for nid in unanswered]
        left = max(1.0, deadline - time.monotonic())
        for reply in grid.send_and_receive(msgs, timeout=left):
            nid = reply.metadata.src_node_id
            if reply.has_error():
                if reply.error.code in UNREACHABLE:
                    continue
                kind, text = unwrap_reason(reply.error.reason)
                if kind == "DataError":  # the site's own data: its error (naming the site) as it is
                    raise DataError(text)
                raise FederationError(f"node {nid} failed to describe itself: {f'{kind}: ' if kind else ''}{text}")
            m, s = reply.content.metric_records[METRICS], reply.content.config_records[SITE]
            described[nid] = SiteInfo(nid, str(s["site-name"]), int(m["site-index"]), int(m["num-train"]),
                                      int(m["num-val"]), [int(c) for c in m["class-counts"]], dict(s))
        if len(described) >= want or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
        ids = sorted(set(grid.get_node_ids()) | set(described))
    if len(described) < want:
        missing = [nid for nid in unanswered if nid not in described]
        raise FederationError(f"only {len(described)} of {want} sites described themselves within "
                              f"{timeout:.0f}s (federation.timeout); no answer from node(s) {missing}")
    return list(described.values())
