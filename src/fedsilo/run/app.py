"""The fedsilo ServerApp bound to a run folder: what every engine starts on the server side.

:func:`make_server_app` serves ``fedsilo run`` (the run folder is known); the module-level
:data:`app` serves ``flwr run .`` in a deployment, where the run config keys ``config`` (a TOML
file) and ``out`` (the run folder; empty = ``runs/<name>-<time>``) say what to run and where.
Either way the rounds are :class:`~fedsilo.federation.server_app.FederatedRounds` driven by
:func:`~fedsilo.run.loop.run_rounds`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsilo.config import load_config
from fedsilo.federation.grids import PollingGrid
from fedsilo.federation.server_app import FederatedRounds, server_app
from fedsilo.run.folder import RunDir
from fedsilo.run.load import initial_weights
from fedsilo.run.loop import run_rounds
from fedsilo.tasks import make_task


def run_federated(grid: Grid, run: RunDir, on_round_end: Callable[[int], None] | None = None, *,
                  deployed: bool = False) -> None:
    """Run (or resume) the federated rounds of ``run`` over ``grid`` (``deployed``: a deployment's SuperLink)."""
    started_with = [str(s.get("name")) for s in run.read_sites()]
    executor = FederatedRounds(grid, run.cfg, initial_weights(make_task(run.cfg)), out_dir=run.path,
                               started_with=started_with, deployed=deployed)
    run_rounds(executor, run, summary_key=f"test_{executor.task.primary_metric}", on_round_end=on_round_end)


def make_server_app(run_dir: str | Path, on_round_end: Callable[[int], None] | None = None) -> ServerApp:
    """A ServerApp that runs (or resumes) the experiment of an existing run folder."""
    return server_app(lambda grid, context: run_federated(grid, RunDir.open(run_dir), on_round_end))


def _run_from_context(context: Context) -> RunDir:
    cfg_path = str(context.run_config.get("config", ""))
    out = str(context.run_config.get("out", ""))
    if not cfg_path:
        raise ValueError("run config key 'config' must name an experiment TOML file")
    cfg = load_config(cfg_path)
    if not out:
        out = str(Path("runs") / f"{cfg.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (Path(out) / "config.toml").exists():
        return RunDir.open(out)
    return RunDir.create(out, cfg, engine="deployment")


#: ``FEDSILO_GRID_POLL=flower`` keeps Flower's own ``send_and_receive`` (a pull every 3 s) in a
#: deployment; by default replies are pulled with back-off from 10 ms (:class:`PollingGrid`).
GRID_POLL_ENV = "FEDSILO_GRID_POLL"


def deployment_grid(grid: Grid) -> Grid:
    """The SuperLink's grid as the deployment's rounds use it (see ``GRID_POLL_ENV``)."""
    mode = os.environ.get(GRID_POLL_ENV, "backoff")
    if mode not in ("backoff", "flower"):
        raise ValueError(f"{GRID_POLL_ENV} must be 'backoff' or 'flower', got {mode!r}")
    return grid if mode == "flower" else PollingGrid(grid)


#: The ServerApp of ``flwr run .`` (``[tool.flwr.app.components]`` in pyproject.toml).
app = server_app(lambda grid, context: run_federated(deployment_grid(grid), _run_from_context(context), deployed=True))
