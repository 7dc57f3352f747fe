"""Submit an experiment to a running SuperLink (``fedsilo deploy run``) and wait for it.

The run folder is created here, on the coordinator, exactly as ``fedsilo run`` creates one
(resolved config, env.json, metrics.jsonl, checkpoints, final.pt, report.html); the ServerApp,
started by the SuperLink on the same host, writes into it. ``flwr run`` receives a minimal
Flower app (a ``pyproject.toml`` naming fedsilo's ServerApp and ClientApp) and the run config
``config`` / ``out``: the app's code is the installed fedsilo package on every host, so nothing
is installed at run time. The equivalent by hand, from a fedsilo checkout::

    flwr run . fedsilo --run-config 'config="/abs/run/config.toml" out="/abs/run"' --stream
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path

from fedsilo import __version__
from fedsilo.config import ExperimentConfig
from fedsilo.deploy.certs import DeployError
from fedsilo.deploy.checks import load_certificate, parse_address, tls_handshake
from fedsilo.deploy.launch import CONNECTION, _exe, flower_env, write_connection
from fedsilo.run.folder import RunDir, RunDirError

logger = logging.getLogger(__name__)

APP_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fedsilo-app"
version = "{version}"
dependencies = []

[tool.flwr.app]
publisher = "fedsilo"

[tool.flwr.app.components]
serverapp = "fedsilo.run.app:app"
clientapp = "fedsilo.federation.client_app:app"

[tool.flwr.app.config]
config = ""
out = ""
"""


def write_app(folder: Path) -> Path:
    """A minimal Flower app folder whose components are the installed fedsilo apps."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_PYPROJECT.format(version=__version__), encoding="utf-8")
    return folder


def submit(run: RunDir, superlink: str, ca: Path, *, timeout: float | None = None) -> None:
    """``flwr run`` the run folder's experiment on ``superlink`` and stream its log until it ends."""
    with tempfile.TemporaryDirectory(prefix="fedsilo-flwr-") as tmp:
        home, app = Path(tmp) / "home", write_app(Path(tmp) / "app")
        write_connection(home, superlink, ca)
        overrides = Path(tmp) / "run-config.toml"
        out = run.path.resolve()
        overrides.write_text(f'config = "{out / "config.toml"}"\nout = "{out}"\n', encoding="utf-8")
        cmd = [_exe("flwr"), "run", str(app), CONNECTION, "--run-config", str(overrides), "--stream"]
        logger.info("Submitting: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, env=flower_env(home), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"the run did not finish within {timeout:.0f}s; it may still be running "
                              f"(`flwr ls`), resume with `fedsilo deploy run --resume {run.path}`") from None
    if proc.returncode != 0:
        raise DeployError(f"flwr run exited with status {proc.returncode}; see the SuperLink's log")


def refuse_simulation_only(cfg: ExperimentConfig | None) -> None:
    """Raise :class:`DeployError` when ``cfg`` asks for what only a simulation may do across real
    sites: seeded DP noise, audit canaries (their coins come from the experiment seed), or a GAN
    scored by reference networks trained on pooled images."""
    if cfg is not None and cfg.privacy.active and cfg.privacy.reproducible_noise:
        raise DeployError("privacy.reproducible_noise = true is for simulations only: every party knows "
                          "experiment.seed and could regenerate the sites' DP noise; set it to false to deploy")
    if cfg is not None and cfg.experiment.task == "synthesis" and cfg.gan.evaluation != "federated":
        raise DeployError("gan.evaluation = 'reference' scores the GAN with networks trained on the pooled real "
                          "images, which no coordinator holds across real sites; set gan.evaluation = 'federated' "
                          "to deploy (statistics computed at the sites; see the README's FedGAN deployment section)")
    if cfg is not None and cfg.privacy.canaries:
        raise DeployError("privacy.canaries is for simulations only (the audit's secret coins come from "
                          "experiment.seed); set it to 0 to deploy")


def deploy_run(cfg: ExperimentConfig | None, superlink: str, ca: str | Path, out: str | Path, *,
               resume: bool = False, timeout: float | None = None) -> RunDir:
    """Create (or, with ``resume``, reopen) the run folder and run the experiment on the SuperLink.

    Raises
    ------
    DeployError
        Bad address or CA, no SuperLink answering, ``privacy.reproducible_noise = true`` (real sites
        need noise no other party can regenerate), or the run ended without its final state.
    RunDirError
        ``out`` exists (without ``resume``), or is not a run folder (with it).
    """
    refuse_simulation_only(RunDir.open(out).cfg if resume else cfg)
    host, port = parse_address(superlink)
    ca = Path(ca)
    load_certificate(ca, "CA certificate")
    if not tls_handshake(host, port, ca):
        raise DeployError(f"no SuperLink answers at {superlink}; start it with `fedsilo deploy superlink`")
    if resume:
        run = RunDir.open(out)
        ckpt = run.load_checkpoint()
        done = 0 if ckpt is None else int(ckpt["round"])
        if run.final_path.exists():
            raise RunDirError(f"run {str(out)!r} already finished; nothing to resume")
        run.record_resume(done, "deployment")
    else:
        if cfg is None:
            raise DeployError("deploy run needs a CONFIG file (or --resume RUN_DIR)")
        run = RunDir.create(out, cfg, engine="deployment")
    submit(run, superlink, ca, timeout=timeout)
    if not run.final_path.exists():
        raise DeployError(f"the run ended without writing {run.final_path}; see the SuperLink's log, then "
                          f"`fedsilo deploy run --resume {run.path}` continues from the last checkpoint")
    return run
