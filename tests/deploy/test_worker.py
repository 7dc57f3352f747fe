"""Deployment speed (issue 18): the site's long-lived ClientApp worker, the grid's reply polling with
back-off, the SuperExec poll interval the launcher sets. The multi-process runs (worker serving a
real SuperNode, weights equal to the local engine) are in ``test_deploy_e2e.py``."""

from __future__ import annotations

import io
import zipfile
from types import SimpleNamespace

import pytest

from fedsilo.deploy import launch
from fedsilo.deploy.certs import DeployError, make_certs, read_site_bundle
from fedsilo.deploy.run import APP_PYPROJECT
from fedsilo.deploy.worker import CLIENTAPP, Backoff, fab_clientapp
from fedsilo.federation.grids import PollingGrid, send_and_receive
from fedsilo.run.app import GRID_POLL_ENV, deployment_grid


def test_backoff_doubles_to_its_cap_and_resets():
    wait = Backoff(0.01, 0.05)
    assert [wait.next() for _ in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]
    wait.reset()
    assert wait.next() == 0.01
    for low, high in [(0.0, 1.0), (0.5, 0.1)]:
        with pytest.raises(ValueError, match="0 < low <= high"):
            Backoff(low, high)


def _fab(pyproject: str | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if pyproject is not None:
            zf.writestr("pyproject.toml", pyproject)
    return buf.getvalue()


def test_worker_runs_only_the_clientapp_of_fedsilos_app_bundle():
    assert fab_clientapp(_fab(APP_PYPROJECT.format(version="1"))) == CLIENTAPP == "fedsilo.federation.client_app:app"
    other = APP_PYPROJECT.format(version="1").replace(CLIENTAPP, "evil.app:app")
    assert fab_clientapp(_fab(other)) == "evil.app:app"
    assert fab_clientapp(_fab(None)) == ""  # no pyproject.toml
    assert fab_clientapp(b"not a zip") == ""


def test_supernode_command_isolation(tmp_path):
    make_certs(tmp_path / "c", ["site-1"])
    bundle = read_site_bundle(tmp_path / "c" / "sites" / "site-1", "site-1")
    worker = launch.supernode_command(bundle, "127.0.0.1:9093", tmp_path, 9100)
    assert worker[-4:] == ["--port", "9100", "--isolation", "process"]
    own = launch.supernode_command(bundle, "127.0.0.1:9093", tmp_path, 9100, isolation="subprocess")
    assert own[-2:] == ["--port", "9100"] and "--isolation" not in own
    with pytest.raises(DeployError, match="--isolation must be one of worker, subprocess, got 'thread'"):
        launch.supernode_command(bundle, "127.0.0.1:9093", tmp_path, 9100, isolation="thread")


def test_flower_env_sets_the_superexec_poll_unless_given(monkeypatch):
    monkeypatch.delenv(launch.SUPEREXEC_POLL_ENV, raising=False)
    assert launch.flower_env()[launch.SUPEREXEC_POLL_ENV] == "0.05"
    monkeypatch.setenv(launch.SUPEREXEC_POLL_ENV, "1.0")
    assert launch.flower_env()["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "1.0"


class FakeGrid:
    """Replies to message ``i`` become pullable at the ``due[i]``-th pull (never when None)."""

    def __init__(self, due: list[int | None]) -> None:
        self.due = due
        self.pulls = 0
        self.asked: list[list[str]] = []

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        self.pulls += 1
        self.asked.append(sorted(ids))
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in sorted(ids)
                if self.due[int(i[1:])] is not None and self.due[int(i[1:])] <= self.pulls]

    def get_node_ids(self):
        return [1, 2, 3]


def test_send_and_receive_polls_with_backoff_reset_by_each_reply():
    grid, slept = FakeGrid([4, 6, 6]), []
    replies = send_and_receive(grid, [object()] * 3, None, low=0.01, high=0.05, sleep=slept.append)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    # pulls 1-3 empty (back-off), pull 4 brings m0 (back to low), pull 5 empty, pull 6 the rest
    assert slept == [0.01, 0.02, 0.04, 0.01, 0.02]
    assert grid.asked[-1] == ["m1", "m2"]  # answered messages are not asked for again


def test_send_and_receive_stops_at_the_timeout_with_the_replies_so_far():
    now = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    grid, slept = FakeGrid([2, None]), []
    replies = send_and_receive(grid, [object()] * 2, 0.1, low=0.02, high=0.5, sleep=sleep, clock=lambda: now[0])
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert slept == pytest.approx([0.02, 0.02, 0.04, 0.02])  # the last sleep cut to the time left
    assert now[0] == pytest.approx(0.1)


def test_deployment_grid_env(monkeypatch):
    grid = FakeGrid([1])
    monkeypatch.delenv(GRID_POLL_ENV, raising=False)
    wrapped = deployment_grid(grid)
    assert isinstance(wrapped, PollingGrid) and list(wrapped.get_node_ids()) == [1, 2, 3]
    assert [r.metadata.reply_to_message_id for r in wrapped.send_and_receive([object()], timeout=5)] == ["m0"]
    monkeypatch.setenv(GRID_POLL_ENV, "flower")
    assert deployment_grid(grid) is grid
    monkeypatch.setenv(GRID_POLL_ENV, "fast")
    with pytest.raises(ValueError, match="FEDSILO_GRID_POLL must be 'backoff' or 'flower', got 'fast'"):
        deployment_grid(grid)
