"""Start or resume one experiment run on an engine (what ``fedsilo run`` does)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from fedsilo.config import ExperimentConfig
from fedsilo.loop import run_rounds
from fedsilo.runs import RunDir, RunDirError

logger = logging.getLogger(__name__)

ENGINES = ("local", "simulation")


def start_run(cfg: ExperimentConfig, out: str | Path, engine: str | None = None,
              on_round_end: Callable[[int], None] | None = None) -> RunDir:
    """Create ``out`` (refusing a non-empty folder) and run ``cfg`` to the end."""
    engine = engine or cfg.experiment.engine
    _check_engine(engine)
    run = RunDir.create(out, cfg, engine)
    execute(run, engine, on_round_end)
    write_report(run)
    return run


def resume_run(path: str | Path, engine: str | None = None,
               on_round_end: Callable[[int], None] | None = None) -> RunDir:
    """Continue a run folder from its last checkpoint (same config, same seed)."""
    run = RunDir.open(path)
    engine = engine or run.read_env().get("engine", run.cfg.experiment.engine)
    _check_engine(engine)
    ckpt = run.load_checkpoint()
    done = 0 if ckpt is None else int(ckpt["round"])
    if done >= run.cfg.federation.rounds and run.final_path.exists():
        raise RunDirError(f"run {str(path)!r} already finished all {done} rounds; nothing to resume")
    if run.final_path.exists():
        import torch

        stopped = torch.load(run.final_path, map_location="cpu", weights_only=False).get("stopped_early")
        if stopped:
            raise RunDirError(f"run {str(path)!r} stopped early after round {done} ({stopped}); nothing to resume")
    run.record_resume(done, engine)
    execute(run, engine, on_round_end)
    write_report(run)
    return run


def write_report(run: RunDir) -> None:
    """The run's MODEL_CARD.md and report.html (a failure here is logged, never loses the run's results)."""
    from fedsilo.modelcard import write_model_card
    from fedsilo.report import run_report

    for what, write in (("model card", write_model_card), ("report", run_report)):
        try:
            write(run.path)
        except Exception:  # noqa: BLE001 - the results are on disk; the report can be redone
            logger.exception("Could not write the %s of %s (redo it with `fedsilo report %s`)", what, run.path,
                             run.path)


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def execute(run: RunDir, engine: str, on_round_end: Callable[[int], None] | None = None) -> None:
    """Run (or continue) the rounds of ``run`` with the engine its mode needs."""
    cfg = run.cfg
    if cfg.experiment.threads:
        import torch

        torch.set_num_threads(cfg.experiment.threads)
    if cfg.experiment.mode == "centralised":
        from fedsilo.references import CentralisedRounds

        if engine != "local":
            logger.warning("Centralised mode trains one pooled model in-process; engine %r is ignored", engine)
        task_metric = f"test_{_primary(cfg)}"
        run_rounds(CentralisedRounds(run), run, summary_key=task_metric, on_round_end=on_round_end)
        return
    from fedsilo.federation.client_app import app as client_app
    from fedsilo.federation.server_app import make_server_app

    server_app = make_server_app(run.path, on_round_end)
    num_sites = cfg.federation.num_sites
    if engine == "local":
        from fedsilo.federation.inprocess import run_inprocess

        run_inprocess(server_app, client_app, num_sites)
    else:
        run_simulation_engine(server_app, client_app, num_sites, cfg.simulation.cpus_per_site)


def _primary(cfg: ExperimentConfig) -> str:
    from fedsilo.tasks import task_registry

    return task_registry()[cfg.experiment.task].primary_metric


def run_simulation_engine(server_app: object, client_app: object, num_sites: int, cpus_per_site: float) -> None:
    """Run the apps on Flower's simulation engine (Ray actors run the ClientApps)."""
    import warnings

    from flwr.simulation import run_simulation

    cpus = os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_site or cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_sites,
                       backend_config=backend_config)
