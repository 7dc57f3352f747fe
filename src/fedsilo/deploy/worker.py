"""A site's long-lived ClientApp worker: one process serves every message of its SuperNode.

Flower's default (``flower-supernode --isolation subprocess``) starts a SuperExec that starts a
new ``flwr-clientapp`` process for every message: torch and fedsilo are imported again, and the
site's data set and model are rebuilt, so fedsilo's per-process caches
(:func:`fedsilo.federation.client_app.site_job`) never hit. With ``--isolation process`` the
SuperNode starts nothing and leaves its task queue (the Runtime API on loopback) to an
executor started beside it. :func:`serve` is that executor for fedsilo: it acquires the
SuperNode's ClientApp tasks, and runs each in this process with Flower's own task I/O
(``push_message``, ``push_task_output`` of ``flwr-clientapp``; :func:`pull_task_input` as its
own, with a faster retry), calling
fedsilo's installed :data:`~fedsilo.federation.client_app.app`. Only that ClientApp is run: a
task whose app bundle names another one is answered with an error.

It polls the task queue with back-off (``POLL_MIN`` doubling to ``POLL_MAX`` while idle), and
stops when the SuperNode process it serves has exited.
"""

from __future__ import annotations

import io
import logging
import subprocess
import time
import zipfile
from collections.abc import Callable
from typing import Any

import tomllib

logger = logging.getLogger(__name__)

#: The ClientApp a fedsilo site runs (``[tool.flwr.app.components]`` of the app ``deploy run`` submits).
CLIENTAPP = "fedsilo.federation.client_app:app"
POLL_MIN = 0.01
POLL_MAX = 0.5
#: Tries per message object before a task is given up (0.01 s doubling to 0.5 s: about two minutes).
PULL_TRIES = 250


class Backoff:
    """Sleep intervals for polling: ``low`` after activity, doubling up to ``high`` while idle."""

    def __init__(self, low: float = POLL_MIN, high: float = POLL_MAX) -> None:
        if not 0 < low <= high:
            raise ValueError(f"poll intervals must satisfy 0 < low <= high, got low={low}, high={high}")
        self.low, self.high = low, high
        self.delay = low

    def reset(self) -> None:
        self.delay = self.low

    def next(self) -> float:
        """The interval to sleep now; the following one is twice as long (at most ``high``)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.high)
        return delay


def fab_clientapp(fab_content: bytes) -> str:
    """The ClientApp reference (``module:attr``) an app bundle names, '' when it names none."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab_content)) as zf:
            project = tomllib.loads(zf.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    return str(project.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {}).get("clientapp", ""))


def _client(address: str, interceptors: list[Any], max_tries: int | None = None) -> Any:
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    retry = make_simple_http_retry_invoker()
    if max_tries is not None:
        retry.max_tries = max_tries  # the serving loop retries itself (and notices a SuperNode that exited)
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors, retry_invoker=retry)


def _heartbeat_fn(client: Any) -> Callable[[], bool]:
    """A task heartbeat that reports failure instead of signalling this (long-lived) process."""
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def beat() -> bool:
        try:
            return bool(client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)
        except Exception:  # noqa: BLE001 - a failed beat is retried by the sender, never fatal
            return False

    return beat


def pull_task_input(client: Any, low: float = POLL_MIN, high: float = POLL_MAX,
                    tries: int = PULL_TRIES) -> tuple[Any, Any, Any, Any]:
    """(message, context, run, app bundle) of the acquired task, as ``flwr-clientapp`` pulls them,
    except that the message's objects are re-requested after ``low`` seconds doubling to ``high``.

    A task becomes acquirable as soon as the SuperNode has the message's header, while it is
    still pulling the message's objects from the SuperLink; Flower's default back-off for an
    object not there yet starts at 1 s and grows to 10 s, which a task acquired within
    milliseconds (as here) would otherwise wait through on most messages. After ``tries`` tries
    of an object (about two minutes) the task fails: a message whose objects never arrive (its
    SuperLink crashed mid-transfer) must not hold the site's only worker from the next run's tasks.
    """
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = res.task_id, res.run.run_id, res.context.node_id
    context, run, fab = context_from_proto(res.context), run_from_proto(res.run), fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from the SuperNode's Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, max_tries_per_object=tries, initial_backoff=low, backoff_cap=high)
    message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr-clientapp: the id is not in the message
    return message, context, run, fab


def run_task(address: str, token: str) -> dict[str, float]:
    """Run one ClientApp task of the SuperNode at ``address`` (its Runtime API) in this process;
    return the seconds its steps took (``pull``, ``app``, ``push``)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    from fedsilo.federation.client_app import app

    client = _client(address, [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                               RuntimeTokenHttpInterceptor(token)])
    heartbeat = HeartbeatSender(_heartbeat_fn(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    steps: dict[str, float] = {}
    start = time.perf_counter()
    try:
        message, context, _run, fab = pull_task_input(client)
        steps["pull"] = time.perf_counter() - start
        named = fab_clientapp(fab.content)
        if named != CLIENTAPP:
            raise RuntimeError(f"this site runs only fedsilo's ClientApp ({CLIENTAPP}); the app bundle names "
                               f"{named or 'none'!r}")
        reply = app(message=message, context=context)
        steps["app"] = time.perf_counter() - start - steps["pull"]
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # noqa: BLE001 - reported to the coordinator as the message's error
        logger.exception("ClientApp task failed")
        details = f"{type(exc)}:<'{exc}'>"
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        pushed = time.perf_counter()
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception:  # noqa: BLE001 - the SuperNode's task expiry answers for the lost reply
            logger.exception("Failed to push the reply to the SuperNode")
        try:
            push_task_output(client=client, context=context, sub_status=status, details=details)
        except Exception:  # noqa: BLE001 - e.g. a task whose input never arrived: the next task is served
            logger.exception("Failed to report the task's end to the SuperNode")
        heartbeat.stop()
        client.close()
        steps["push"] = time.perf_counter() - pushed
    return steps


def serve(address: str, supernode: subprocess.Popen | None = None, *, low: float = POLL_MIN,
          high: float = POLL_MAX) -> int:
    """Serve the ClientApp tasks of the SuperNode whose Runtime API is ``address`` (``HOST:PORT``).

    Returns the SuperNode's exit status once it has exited (0 when ``supernode`` is None and the
    loop is interrupted).
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll
    wait = Backoff(low, high)
    client = None
    served = 0
    try:
        while supernode is None or supernode.poll() is None:
            try:
                if client is None:
                    client = _client(address, [RuntimeVersionHttpInterceptor(component_name="SuperExec")], max_tries=1)
                res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value]))
            except Exception as exc:  # noqa: BLE001 - the SuperNode is starting or going away
                logger.debug("Runtime API at %s not answering: %s", address, exc)
                client = None
                time.sleep(high)
                continue
            if res.HasField("task") and res.token:
                steps = run_task(address, res.token)
                served += 1
                logger.info("Task %d served (%d by this worker): %s", res.task.task_id, served,
                            ", ".join(f"{k} {v:.3f}s" for k, v in steps.items()))
                wait.reset()
                continue
            time.sleep(wait.next())
    finally:
        if client is not None:
            client.close()
    return 0 if supernode is None else int(supernode.returncode)
