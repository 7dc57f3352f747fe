"""The ``local`` engine: a Flower Grid that hands each message straight to the ClientApp.

No Ray, no sockets, no polling: :meth:`InProcessGrid.push_messages` calls the ClientApp
synchronously with the node's persistent :class:`~flwr.app.Context` and keeps the reply until it
is pulled. The ServerApp and ClientApp are the same objects the simulation and deployment
engines run, so a study moves between engines without code changes. Sites are processed one at a
time, so only one site's model and optimiser exist at once.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

logger = logging.getLogger(__name__)

#: Error code of a reply whose ClientApp raised (as Flower's ``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``).
CLIENT_APP_RAISED = 2
_FIRST_NODE_ID = 1001


class InProcessGrid(Grid):
    """A Grid whose nodes are in this process.

    Parameters
    ----------
    client_app
        The ClientApp every node runs.
    node_configs
        One node config per node (e.g. ``{"partition-id": i, "num-partitions": n}``).
    run_config
        The run config every Context sees.
    run_id
        Identifier of the run.
    """

    def __init__(self, client_app: ClientApp, node_configs: list[dict[str, object]],
                 run_config: dict[str, object] | None = None, run_id: int = 1) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id=run_id)
        self._contexts: dict[int, Context] = {}
        for i, node_config in enumerate(node_configs):
            node_id = _FIRST_NODE_ID + i
            self._contexts[node_id] = Context(run_id=run_id, node_id=node_id, node_config=dict(node_config),
                                              state=RecordDict(), run_config=dict(run_config or {}))
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def _deliver(self, msg: Message) -> Message:
        context = self._contexts[msg.metadata.dst_node_id]
        try:
            return self.client_app(msg, context)
        except Exception as exc:  # noqa: BLE001 - a site's failure becomes an error reply, as in Flower
            logger.debug("ClientApp at node %s raised:\n%s", msg.metadata.dst_node_id, traceback.format_exc())
            return Message(Error(code=CLIENT_APP_RAISED, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"no node with id {msg.metadata.dst_node_id}")
            msg_id = uuid4().hex
            msg.metadata.__dict__["_message_id"] = msg_id
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            self._replies[msg_id] = self._deliver(msg)
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inprocess(server_app: ServerApp, client_app: ClientApp, num_nodes: int,
                  run_config: dict[str, object] | None = None,
                  node_extra: Mapping[int, Mapping[str, object]] | None = None) -> None:
    """Run a ServerApp against ``num_nodes`` in-process ClientApp nodes (partition ids 0..n-1).

    ``node_extra`` adds keys to some nodes' node configs (by partition id), as a SuperNode's
    ``--node-config`` would (e.g. the robustness-study ``attack`` key).
    """
    extra = node_extra or {}
    grid = InProcessGrid(
        client_app,
        [{"partition-id": i, "num-partitions": num_nodes, **extra.get(i, {})} for i in range(num_nodes)],
        run_config,
    )
    run_on_grid(server_app, grid, run_config)


def run_on_grid(server_app: ServerApp, grid: Grid, run_config: dict[str, object] | None = None) -> None:
    """Run a ServerApp on ``grid`` in this process (messages carry the SuperLink's identity)."""
    # Messages take their sender's identity from the process, as under Flower's own runtimes.
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = grid.run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                      run_config=dict(run_config or {}))
    server_app(grid, context)
