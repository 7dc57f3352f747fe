"""Views of a Flower Grid that the round loop needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid


class SubsetGrid(Grid):
    """A view of a Grid that exposes only some node ids (the sites sampled this round).

    Flower's strategies sample from ``grid.get_node_ids()``; handing them this view makes them
    configure exactly the sites fedsilo's seeded sampler chose.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = list(node_ids)

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float | None, *, low: float = 0.01,
                     high: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> list[Message]:
    """Push ``messages`` and pull their replies through the Grid's public push/pull API, polling
    after ``low`` seconds, then twice as long each time nothing new arrived (at most ``high``).

    Same contract as ``Grid.send_and_receive`` (the replies that came within ``timeout``; None waits
    for all), whose deployment implementation polls every 3 s.
    """
    if not 0 < low <= high:
        raise ValueError(f"poll intervals must satisfy 0 < low <= high, got low={low}, high={high}")
    pending = set(grid.push_messages(messages))
    end = None if timeout is None else clock() + timeout
    replies: list[Message] = []
    delay = low
    while pending:
        got = list(grid.pull_messages(list(pending)))
        replies += got
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending:
            break
        if got:
            delay = low
        wait = delay
        if end is not None:
            left = end - clock()
            if left <= 0:
                break
            wait = min(wait, left)
        sleep(wait)
        delay = min(delay * 2, high)
    return replies


class PollingGrid(SubsetGrid):
    """The whole of ``grid``, whose ``send_and_receive`` polls with back-off (:func:`send_and_receive`)."""

    def __init__(self, grid: Grid, low: float = 0.01, high: float = 0.5) -> None:
        super().__init__(grid, [])
        self.low, self.high = low, high

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return send_and_receive(self._grid, messages, timeout, low=self.low, high=self.high)
