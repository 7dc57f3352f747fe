"""Load what a finished run trained: its config, task and model at the final or a kept round.

``fedsilo sample``, ``predict``, ``export``, ``audit`` and the model card all start here, so
they agree on which weights a run folder means:

- the final global model (``final.pt``), or the global model of an evaluation round kept in
  ``models/round-NNNN.pt`` (``eval.keep_models``);
- in ``local`` mode (each site alone) there is no global model: a site's own model is chosen
  with ``site`` (default: the first site), and the same holds for group-local arrays such as
  domain-specific batch norm, where ``site`` picks whose personalised model is meant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsilo.config import ExperimentConfig
from fedsilo.run.folder import RunDir, RunDirError
from fedsilo.seeding import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A run's model in eval mode, with where it came from.

    Attributes
    ----------
    run
        The run folder.
    task
        The run's task (its data settings, preprocessing and model definition).
    model
        The model holding the chosen weights, in eval mode on ``device``.
    round
        The training round the weights are from.
    site
        Whose personalised model this is (local mode, site-local arrays), else None (global).
    state
        The raw saved state (``final.pt`` or the round file).
    device
        Where the model lives.
    """

    run: RunDir
    task: Any
    model: nn.Module
    round: int
    site: str | None
    state: dict[str, Any]
    device: torch.device

    @property
    def source(self) -> str:
        """Human-readable origin, e.g. ``runs/x final.pt (round 20, global model)``."""
        which = f"site {self.site}'s model" if self.site else "global model"
        return f"{self.run.path} round {self.round} ({which})"


def warn_smoke_test(cfg: ExperimentConfig, what: str) -> None:
    """Log a warning when ``cfg`` is a smoke test (``experiment.smoke_test``): ``what`` says nothing."""
    if cfg.experiment.smoke_test:
        logger.warning("%s is a smoke test (experiment.smoke_test = true): sized to show that every step runs, "
                       "so %s say nothing about the method; use a full config for results", cfg.experiment.name, what)


def load_state(run: RunDir, round_: int | None = None) -> dict[str, Any]:
    """The saved state of ``run`` at ``round_`` (None = final), with a clear error when absent."""
    if round_ is None:
        if not run.final_path.exists():
            raise RunDirError(f"run {str(run.path)!r} has not finished (no final.pt); finish or resume it "
                              f"first, or pick a kept round with --round (kept: {run.saved_rounds() or 'none'})")
        path = run.final_path
    else:
        path = run.round_model_path(round_)
        if not path.exists():
            raise RunDirError(f"round {round_} of run {str(run.path)!r} was not kept; kept rounds: "
                              f"{run.saved_rounds() or 'none'} (eval.keep_models keeps each evaluation round)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise RunDirError(f"{str(path)!r} cannot be read: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise RunDirError(f"{str(path)!r} holds no model state (expected a dict with 'model')")
    return state


def choose_weights(state: dict[str, Any], mode: str, site: str | None) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict meant by ``site`` (None: the global model; in local mode the first site)."""
    site_models: dict[str, Any] = state.get("site_models") or {}
    if site is None and mode == "local":
        if not site_models:
            raise RunDirError("a local-mode run must hold per-site models; this one holds none")
        site = next(iter(site_models))
    if site is None:
        return state["model"], None
    if site not in site_models:
        raise RunDirError(f"site {site!r} has no model of its own in this run; sites with one: "
                          f"{', '.join(site_models) or 'none (all sites share the global model)'}")
    return site_models[site], site


def initial_weights(task: Any) -> dict[str, torch.Tensor]:
    """A task's initial global weights: its own initialisation, or a finished run's final weights
    when the task starts from one (:attr:`~fedsilo.tasks.Task.pretrained_run`, e.g. ``gan.pretrained``).

    Raises
    ------
    RunDirError
        When the pre-trained run is not a finished run of the same task.
    """
    path = task.pretrained_run
    if not path:
        return task.initial_state()
    source = RunDir.open(path)
    if source.cfg.experiment.task != task.name:
        raise RunDirError(f"{task.pretrained_key} = {path!r} is a {source.cfg.experiment.task} run, not a "
                          f"{task.name} run")
    if not source.final_path.exists():
        raise RunDirError(f"{task.pretrained_key} = {path!r} has not finished (no final.pt)")
    return task.initial_state(load_state(source)["model"])


def load_trained(run_dir: str | Path, *, round_: int | None = None, site: str | None = None,
                 device: str | None = None) -> TrainedModel:
    """Load a run's task and model (eval mode) at the final or a kept round.

    Parameters
    ----------
    run_dir
        A run folder written by ``fedsilo run`` (or a deployment).
    round_
        A kept evaluation round; None = the final model.
    site
        A site's own model (local mode or site-local arrays); None = the global model.
    device
        Torch device name (default: the run's ``experiment.device``).
    """
    from fedsilo.tasks import make_task

    run = RunDir.open(run_dir)
    state = load_state(run, round_)
    cfg = run.cfg
    warn_smoke_test(cfg, "its model and what it makes")
    if cfg.experiment.threads:
        torch.set_num_threads(cfg.experiment.threads)
    task = make_task(cfg)
    weights, chosen = choose_weights(state, cfg.experiment.mode, site)
    model = task.build_model()
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise RunDirError(f"the weights in {str(run.path)!r} do not fit the model its config describes: {exc}") from exc
    dev = resolve_device(device or cfg.experiment.device)
    model.to(dev).eval()
    rnd = int(state.get("round", cfg.federation.rounds if round_ is None else round_))
    return TrainedModel(run, task, model, rnd, chosen, state, dev)
