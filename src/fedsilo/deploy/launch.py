"""Start Flower's SuperLink and SuperNodes with TLS and SuperNode authentication on.

fedsilo builds the command lines and checks their inputs; Flower's own processes do the work:

- ``flower-superlink --ssl-ca-certfile --ssl-certfile --ssl-keyfile --enable-supernode-auth
  --disable-runtime-dependency-installation --host --port --database``; after it answers, each
  site's public key from ``public-keys.csv`` is registered through the Control API
  (``flwr supernode register``; already registered keys are kept).
- ``flower-supernode --root-certificates --superlink --auth-supernode-private-key --node-config
  'data-path=".." site-name=".." site-index=N' --port``. Runtime dependency installation is off
  by default on a SuperNode (Flower's ``--allow-runtime-dependency-installation`` is not passed):
  the ClientApp runs from the installed fedsilo package, nothing is downloaded at a site.

Process model of a site (``--isolation``): ``worker`` (default) starts the SuperNode with
``--isolation process`` and serves its ClientApp tasks from this process, which stays alive with
its imports, data set, model and caches warm (:mod:`fedsilo.deploy.worker`); ``subprocess`` is
Flower's own model, a new ``flwr-clientapp`` process per message. Flower's SuperExec (started by
the SuperLink for the ServerApp, and by a SuperNode in ``subprocess`` mode) polls for tasks every
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` seconds: the launcher sets it to ``SUPEREXEC_POLL`` unless
the environment already sets it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedsilo.deploy.certs import PUBLIC_KEYS, DeployError, SiteBundle, read_site_bundle
from fedsilo.deploy.checks import (
    check_auth_key,
    check_server_files,
    check_validity,
    load_certificate,
    parse_address,
    tls_handshake,
)

logger = logging.getLogger(__name__)

CONNECTION = "fedsilo"
ISOLATIONS = ("worker", "subprocess")
#: Seconds between a SuperExec's task polls (Flower's default is 1 s; it accepts 0.01 to 60).
SUPEREXEC_POLL = "0.05"
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


def flower_env(home: Path | None = None) -> dict[str, str]:
    """The environment for Flower's processes: this interpreter's scripts first on PATH, the
    SuperExec's task poll interval ``SUPEREXEC_POLL`` unless the environment sets one."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault(SUPEREXEC_POLL_ENV, SUPEREXEC_POLL)
    if home is not None:
        env["FLWR_HOME"] = str(home)
    return env


def _exe(name: str) -> str:
    found = shutil.which(name, path=flower_env()["PATH"])
    if found is None:
        raise DeployError(f"{name} not found next to {sys.executable} or on PATH; install flwr==1.41.0")
    return found


def superlink_command(certs: Path, host: str, port: int, database: Path) -> list[str]:
    """The ``flower-superlink`` command line for a ``deploy certs`` folder."""
    d = certs / "superlink"
    return [_exe("flower-superlink"), "--ssl-ca-certfile", str(d / "ca.pem"), "--ssl-certfile", str(d / "server.pem"),
            "--ssl-keyfile", str(d / "server.key"), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation", "--host", host, "--port", str(port),
            "--database", str(database)]


def _stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` if it still runs (killed after 10 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def supernode_command(bundle: SiteBundle, superlink: str, data: Path, port: int, ledger: Path | None = None,
                      max_epsilon: float = 0.0, isolation: str = "worker") -> list[str]:
    """The ``flower-supernode`` command line for one site; its privacy ledger lives in ``ledger``
    (default: ``privacy-ledger/`` beside the site's private key), and what it keeps between rounds
    (optimiser state, its own discriminator: :mod:`fedsilo.federation.site_memory`) in ``site-state/`` there.
    With ``isolation = "worker"`` the SuperNode runs no ClientApp itself (``--isolation process``):
    :mod:`fedsilo.deploy.worker` does."""
    if isolation not in ISOLATIONS:
        raise DeployError(f"--isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    ledger = ledger or bundle.private_key.parent / "privacy-ledger"
    node_config = (f'data-path="{data}" site-name="{bundle.name}" site-index={bundle.index} '
                   f'privacy-ledger="{Path(ledger).resolve()}" '
                   f'site-state="{(bundle.private_key.parent / "site-state").resolve()}"'
                   + (f" max-epsilon={float(max_epsilon)}" if max_epsilon else ""))
    return [_exe("flower-supernode"), "--root-certificates", str(bundle.ca_cert), "--superlink", superlink,
            "--auth-supernode-private-key", str(bundle.private_key), "--node-config", node_config,
            "--port", str(port), *(["--isolation", "process"] if isolation == "worker" else [])]


def write_connection(home: Path, superlink: str, ca: Path) -> None:
    """A Flower CLI config (``FLWR_HOME/config.toml``) with one TLS connection named ``fedsilo``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{superlink}"\nroot-certificates = "{ca.resolve()}"\n', encoding="utf-8")


def read_public_keys(certs: Path) -> list[tuple[str, str]]:
    """(site, OpenSSH public key) pairs from ``public-keys.csv``."""
    path = certs / PUBLIC_KEYS
    if not path.is_file():
        raise DeployError(f"{path}: no such file; --certs must be a `fedsilo deploy certs` folder")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or any(not r.get("site") or not (r.get("public_key") or "").startswith("ecdsa-") for r in rows):
        raise DeployError(f"{path}: expected rows site,index,public_key with OpenSSH EC keys")
    return [(r["site"], r["public_key"]) for r in rows]


def register_keys(certs: Path, superlink: str, home: Path) -> dict[str, str]:
    """Register every site's public key with the SuperLink; return site -> node id (or 'already registered')."""
    write_connection(home, superlink, certs / "superlink" / "ca.pem")
    out = {}
    for site, key in read_public_keys(certs):
        with tempfile.NamedTemporaryFile("w", suffix=".pub", delete=False) as fh:
            fh.write(key + "\n")
        try:
            proc = subprocess.run([_exe("flwr"), "supernode", "register", fh.name, CONNECTION, "--name", site,
                                   "--format", "json"], env=flower_env(home), capture_output=True, text=True,
                                  timeout=120)
        finally:
            os.unlink(fh.name)
        text = proc.stdout.strip()
        try:
            reply = json.loads(text[text.index("{"):]) if "{" in text else {}
        except ValueError:
            reply = {}
        if reply.get("success"):
            out[site] = str(reply.get("node-id"))
        elif "already" in (text + proc.stderr).lower() or "in use" in (text + proc.stderr).lower():
            out[site] = "already registered"
        else:
            raise DeployError(f"registering site {site!r} with the SuperLink at {superlink} failed: "
                              f"{(reply.get('error-message') or proc.stderr or text).strip()[:500]}")
        logger.info("SuperNode key of %s: %s", site, out[site])
    return out


def _wait_listening(host: str, port: int, ca: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"flower-superlink exited with status {proc.returncode} before it answered on "
                              f"{host}:{port} (its log says why)")
        if tls_handshake("127.0.0.1" if host in ("0.0.0.0", "::") else host, port, ca, timeout=2.0):
            return
        time.sleep(0.5)
    raise DeployError(f"flower-superlink did not answer on {host}:{port} within {timeout:.0f}s")


def _forward_signals(proc: subprocess.Popen) -> None:
    def handler(signum: int, frame: object) -> None:
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_superlink(certs: str | Path, address: str = "0.0.0.0:9093", *, database: str | Path | None = None,
                  home: str | Path | None = None, start_timeout: float = 120.0) -> int:
    """Start the SuperLink, register the sites' keys, then wait for it (returns its exit status).

    Parameters
    ----------
    certs
        A ``fedsilo deploy certs`` folder (its ``superlink/`` files and ``public-keys.csv``).
    address
        ``HOST:PORT`` to listen on (one HTTPS port carries the Fleet API the sites connect to
        and the Control API ``flwr run`` uses).
    database
        SQLite file keeping registered nodes and runs across restarts (default
        ``CERTS/superlink/state.db``).
    home
        ``FLWR_HOME`` of the SuperLink (apps and CLI config; default ``CERTS/superlink/home``).
    """
    certs = Path(certs)
    host, port = parse_address(address, "--address")
    d = certs / "superlink"
    check_server_files(d / "ca.pem", d / "server.pem", d / "server.key")
    read_public_keys(certs)
    home = Path(home) if home else d / "home"
    database = Path(database) if database else d / "state.db"
    cmd = superlink_command(certs, host, port, database)
    logger.info("Starting %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=flower_env(home))
    _forward_signals(proc)
    try:
        _wait_listening(host, port, d / "ca.pem", proc, start_timeout)
        local = f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        register_keys(certs, local, home / "cli")
        logger.info("SuperLink ready on %s:%d with %d registered site key(s)", host, port,
                    len(read_public_keys(certs)))
        return proc.wait()
    except BaseException:
        _stop(proc)
        raise


def run_supernode(certs: str | Path, site: str, data: str | Path, superlink: str, *, port: int = 9094,
                  check_tls: bool = True, ledger: str | Path | None = None, max_epsilon: float = 0.0,
                  isolation: str = "worker") -> int:
    """Start one site's SuperNode and, with ``isolation = "worker"``, serve its ClientApp tasks from
    this process until the SuperNode exits (returns its exit status); with ``"subprocess"`` this
    process is replaced by ``flower-supernode`` (a new ClientApp process per message).

    Parameters
    ----------
    certs
        The site's certificate folder (``sites/<name>`` from ``deploy certs``) or the whole folder.
    site
        The site's name (as given to ``deploy certs --sites``).
    data
        The site's data (a folder or ``.npz`` file); it never leaves the site: only its path
        goes into the node config, read by the ClientApp on this host.
    superlink
        ``HOST:PORT`` of the SuperLink (outbound connection from the site).
    port
        Local port of the SuperNode's ClientApp API (loopback; distinct per SuperNode on a host).
    ledger, max_epsilon
        The site's own privacy ledger folder (default ``privacy-ledger/`` beside its private key)
        and epsilon cap (0 = the study's ``privacy.max_epsilon`` only); see
        :mod:`fedsilo.federation.ledger`.
    isolation
        ``worker`` (one long-lived ClientApp process) or ``subprocess`` (Flower's, one per message).
    """
    if max_epsilon < 0:
        raise DeployError(f"--max-epsilon must be >= 0, got {max_epsilon}")
    bundle = read_site_bundle(certs, site)
    host, link_port = parse_address(superlink)
    ca = load_certificate(bundle.ca_cert, "CA certificate")
    check_validity(ca, bundle.ca_cert, "CA certificate")
    check_auth_key(bundle.private_key)
    data = Path(data).resolve()
    if not data.exists():
        raise DeployError(f"--data {data}: no such file or folder")
    if check_tls and not tls_handshake(host, link_port, bundle.ca_cert):
        logger.warning("No SuperLink answers at %s yet; the SuperNode will keep retrying", superlink)
    cmd = supernode_command(bundle, superlink, data, port, Path(ledger) if ledger else None, max_epsilon, isolation)
    logger.info("Starting SuperNode of %s: %s", site, " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    if isolation == "subprocess":
        os.execve(cmd[0], cmd, flower_env())
        return 0  # pragma: no cover - execve does not return
    from fedsilo.deploy.worker import serve

    proc = subprocess.Popen(cmd, env=flower_env())
    _forward_signals(proc)
    try:
        return serve(f"127.0.0.1:{port}", proc)
    finally:
        _stop(proc)
