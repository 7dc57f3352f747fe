"""Start or resume one experiment run on an engine (what ``fedsilo run`` does).

These functions train and record; the report layer writes ``report.html`` and the model card
afterwards (:func:`fedsilo.report.write_run_files`), as the CLI does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedsilo.config import ConfigError, ExperimentConfig
from fedsilo.run.folder import RunDir, RunDirError, clear_unstarted, round_finished
from fedsilo.run.load import warn_smoke_test
from fedsilo.run.loop import run_rounds
from fedsilo.run.tracking import check_tracking

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from fedsilo.federation.ray_cluster import Cluster

logger = logging.getLogger(__name__)

ENGINES = ("local", "simulation")


def start_run(cfg: ExperimentConfig, out: str | Path, engine: str | None = None,
              on_round_end: Callable[[int], None] | None = None) -> RunDir:
    """Create ``out`` (refusing a folder that holds results) and run ``cfg`` to the end.

    The data are loaded before the folder is created, so a data error (a wrong path, a corrupt
    file) leaves nothing behind. When the run fails before its first round finished, the folder
    is removed (emptied, when it existed before) since it holds no results, and a note on the
    error says so: the corrected rerun can use the same ``out``. A folder in which a round
    finished is always kept (``--resume`` continues it).
    """
    engine = engine or cfg.experiment.engine
    _check_engine(engine)
    warn_smoke_test(cfg, "its metrics")
    _check_canaries(cfg)
    check_tracking(cfg)
    existed = Path(out).is_dir()
    with _cluster(cfg, engine) as cluster:  # joined and checked before the data and the run folder
        _check_data(cfg)
        run = RunDir.create(out, cfg, engine)
        try:
            execute(run, engine, on_round_end, cluster)
        except Exception as exc:
            if not round_finished(run.path):
                clear_unstarted(run.path, remove_folder=not existed)
                exc.add_note(f"No round finished, so the run folder {run.path} was "
                             f"{'emptied' if existed else 'removed'}; once the problem is fixed, run again "
                             f"with the same --out.")
            raise
    return run


def resume_run(path: str | Path, engine: str | None = None,
               on_round_end: Callable[[int], None] | None = None) -> RunDir:
    """Continue a run folder from its last checkpoint (same config, same seed)."""
    run = RunDir.open(path)
    engine = engine or run.read_env().get("engine", run.cfg.experiment.engine)
    _check_engine(engine)
    check_tracking(run.cfg)
    warn_smoke_test(run.cfg, "its metrics")
    ckpt = run.load_checkpoint()
    done = 0 if ckpt is None else int(ckpt["round"])
    if done >= run.cfg.federation.rounds and run.final_path.exists():
        raise RunDirError(f"run {str(path)!r} already finished all {done} rounds; nothing to resume")
    if run.final_path.exists():
        stopped = torch.load(run.final_path, map_location="cpu", weights_only=False).get("stopped_early")
        if stopped:
            raise RunDirError(f"run {str(path)!r} stopped early after round {done} ({stopped}); nothing to resume")
    try:
        with _cluster(run.cfg, engine) as cluster:
            _check_data(run.cfg)
            run.record_resume(done, engine)
            execute(run, engine, on_round_end, cluster)
    except Exception as exc:
        if not round_finished(run.path):
            exc.add_note(f"No round finished in {run.path}; it holds no results. --resume reuses the config "
                         f"it was started with, so it repeats a config or data error: start again with "
                         f"`fedsilo run CONFIG --out {run.path}` (a run folder without a finished round "
                         f"is reused).")
        raise
    return run


def _check_data(cfg: ExperimentConfig) -> None:
    """Load the sites' data before any folder is made, so a data error arrives as itself.

    The server process loads it anyway (the data are cached per process, and the in-process
    engine's sites share that copy); loading it first keeps a wrong path or a corrupt file from
    reaching the user wrapped in a site's error reply. Centralised runs load their pooled data
    directly and need no check.
    """
    if cfg.experiment.mode == "centralised":
        return
    from fedsilo.tasks import make_task

    make_task(cfg).federated_data()


def _cluster(cfg: ExperimentConfig, engine: str) -> AbstractContextManager[Cluster | None]:
    """The Ray cluster a federated simulation runs on (joined and checked), else nothing."""
    if engine != "simulation" or cfg.experiment.mode == "centralised":
        return nullcontext()
    return _joined(cfg)


@contextmanager
def _joined(cfg: ExperimentConfig) -> Iterator[Cluster]:
    from fedsilo.federation.ray_cluster import ray_cluster

    with ray_cluster(cfg.simulation, cfg.federation.num_sites) as cluster:
        yield cluster


def _check_canaries(cfg: ExperimentConfig) -> None:
    """Fail before any work when ``privacy.canaries`` exceeds the private model's weights."""
    if not cfg.privacy.canaries:
        return
    from fedsilo.tasks import make_task
    from fedsilo.training import run_canaries

    task = make_task(cfg)
    try:
        run_canaries(task, task.build_model())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def execute(run: RunDir, engine: str, on_round_end: Callable[[int], None] | None = None,
            cluster: Cluster | None = None) -> None:
    """Run (or continue) the rounds of ``run`` with the engine its mode needs.

    ``cluster``: the joined Ray cluster for the simulation engine (joined here when None).
    """
    cfg = run.cfg
    if cfg.experiment.threads:
        torch.set_num_threads(cfg.experiment.threads)
    if cfg.experiment.mode == "centralised":
        from fedsilo.run.centralised import CentralisedRounds

        if engine != "local":
            logger.warning("Centralised mode trains one pooled model in-process; engine %r is ignored", engine)
        executor = CentralisedRounds(run)
        run_rounds(executor, run, summary_key=f"test_{executor.task.primary_metric}", on_round_end=on_round_end)
        return
    from fedsilo.federation.client_app import app as client_app
    from fedsilo.run.app import make_server_app

    server_app = make_server_app(run.path, on_round_end)
    num_sites = cfg.federation.num_sites
    if engine == "local":
        from fedsilo.federation.inprocess import run_inprocess

        run_inprocess(server_app, client_app, num_sites)
    elif cluster is None:
        with _joined(cfg) as joined:
            _simulate(run, server_app, client_app, joined)
    else:
        _simulate(run, server_app, client_app, cluster)


def _simulate(run: RunDir, server_app: ServerApp, client_app: ClientApp, cluster: Cluster) -> None:
    from fedsilo.federation.simulation import run_simulation_engine

    record = cluster.record()
    run.record_cluster(record)  # before the first round: where the sites run
    record["actors"] = run_simulation_engine(server_app, client_app, run.cfg.federation.num_sites, cluster)
    run.record_cluster(record)
