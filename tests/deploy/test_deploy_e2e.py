"""Deployment end to end on loopback (issue 7): SuperLink + 3 SuperNodes as separate processes,
TLS and SuperNode authentication on. Marker ``deploy``; run by ``make test-deploy``.

Every wait is bounded (deadline per step, ``--timeout`` on runs); ports are chosen free at run
time. The tests share one deployment and run in order: e2e (+ an unregistered SuperNode),
coordinator crash and resume, site dropout (last: it kills a SuperNode).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedsilo.config import dumps
from fedsilo.deploy.certs import make_certs
from fedsilo.deploy.checks import free_port
from fedsilo.deploy.sites import write_site_folders
from fedsilo.run.start import start_run
from helpers import REPO_ROOT, chaos_sites, phantom_classification_config, seg_config

pytestmark = [pytest.mark.deploy, pytest.mark.slow]
SRC = REPO_ROOT / "src"
SITES = ["site-1", "site-2", "site-3"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), e.get("PYTHONPATH", "")])
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    return e


def fedsilo(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedsilo", *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env=env(), start_new_session=True)


def wait_for(cond, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Flower detaches SuperExec and app processes into new sessions)."""
    out, todo = [], [pid]
    while todo and len(out) < 200:
        parent = todo.pop()
        found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
        kids = [int(x) for x in found.split()]
        out += kids
        todo += kids
    return out


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started and every process below it (by id)."""
    for child in reversed(descendants(proc.pid)):
        try:
            os.kill(child, signal.SIGKILL if sig == signal.SIGKILL else sig)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


class Deployment:
    def __init__(self, root: Path, sites: list[str] = SITES, cfg=None, data: dict[str, Path] | None = None) -> None:
        self.root = root
        self.certs = root / "certs"
        make_certs(self.certs, sites)
        self.cfg = cfg if cfg is not None else phantom_classification_config(timeout=60.0, min_sites=2)
        self.data = data if data is not None else write_site_folders(self.cfg, root / "data")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start_superlink(self) -> None:
        log = self.log("superlink")
        seen = log.stat().st_size if log.exists() else 0
        self.superlink = fedsilo("deploy", "superlink", "--certs", str(self.certs), "--address", self.address,
                                 log=self.log("superlink"))
        wait_for(lambda: "SuperLink ready" in log.read_bytes()[seen:].decode(errors="replace")
                 or self.superlink.poll() is not None, "the SuperLink", 180)
        assert self.superlink.poll() is None, self.log("superlink").read_text(errors="replace")[-3000:]

    def start_node(self, site: str, certs: Path | None = None, label: str = "") -> subprocess.Popen:
        label = label or site
        proc = fedsilo("deploy", "supernode", "--certs", str(certs or self.certs / "sites" / site), "--site", site,
                       "--data", str(self.data.get(site, next(iter(self.data.values())))), "--superlink", self.address,
                       "--port", str(free_port()), log=self.log(f"node-{label}"))
        self.nodes[label] = proc
        return proc

    def run(self, out: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
        cfg = self.root / "experiment.toml"
        cfg.write_text(dumps(self.cfg), encoding="utf-8")
        args = [*extra] if extra else [str(cfg), "--out", str(out)]
        return subprocess.run([sys.executable, "-m", "fedsilo", "deploy", "run", *args, "--superlink", self.address,
                               "--certs", str(self.certs), "--timeout", str(timeout)], env=env(),
                              capture_output=True, text=True, timeout=timeout + 60)

    def start_run(self, out: Path, stdout: int, cfg=None) -> subprocess.Popen:
        """``fedsilo deploy run`` of the experiment (or ``cfg``) in the background.

        ``stdout``: ``subprocess.PIPE`` (text) or ``subprocess.DEVNULL``.
        """
        text = dumps(cfg if cfg is not None else self.cfg)
        cfg = self.root / "experiment.toml"
        cfg.write_text(text, encoding="utf-8")
        return subprocess.Popen([sys.executable, "-m", "fedsilo", "deploy", "run", str(cfg), "--out", str(out),
                                 "--superlink", self.address, "--certs", str(self.certs), "--timeout", "400"],
                                env=env(), stdout=stdout, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def close(self) -> None:
        for proc in self.nodes.values():
            stop(proc)
        if self.superlink is not None:
            stop(self.superlink)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    dep = Deployment(tmp_path_factory.mktemp("deploy"))
    try:
        dep.start_superlink()
        for site in SITES:
            dep.start_node(site)
        yield dep
    finally:
        dep.close()


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def final_model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "final.pt", map_location="cpu", weights_only=False)["model"]


def diagnosis(deployment: Deployment, out: Path, output: str) -> str:
    """What a failed deployment test needs to be understood from CI's log alone."""
    rows = "\n".join(json.dumps(r) for r in metrics(out) if r["scope"] == "global" and "sites_sampled" in r)
    logs = "\n".join(f"--- {p.name} (end)\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted(deployment.root.glob("*.log")))
    return f"round rows of {out.name}:\n{rows}\n--- run output (end)\n{output[-3000:]}\n{logs}"


def test_end_to_end_matches_local_engine_and_refuses_unknown_nodes(deployment, tmp_path):
    # a SuperNode whose key the SuperLink never registered (another study's certs)
    # a SuperNode with the study's CA but a key the SuperLink never registered, and one with a wrong CA
    make_certs(tmp_path / "intruder", ["site-1"])
    make_certs(tmp_path / "wrongca", ["site-1"])
    import shutil

    shutil.copy(deployment.certs / "sites" / "site-1" / "ca.pem", tmp_path / "intruder" / "sites" / "site-1" / "ca.pem")
    intruder = deployment.start_node("site-1", tmp_path / "intruder" / "sites" / "site-1", "intruder")
    wrong_ca = deployment.start_node("site-1", tmp_path / "wrongca" / "sites" / "site-1", "wrongca")
    out = deployment.root / "run-e2e"
    proc = deployment.run(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # bitwise equal to the in-process engine for the same config and seed
    local = start_run(deployment.cfg, tmp_path / "local", "local")
    a, b = final_model(out), final_model(local.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted({r["scope"] for r in metrics(out)}) == ["global", *SITES]
    # evaluation fused into the training messages (a deployment's default) logs the validation rows of the
    # local engine's separate exchange; round 1's arrived with round 2's training (after round 1's test row)
    rows = metrics(out)
    val = lambda rs: sorted((r for r in rs if "val_kappa" in r), key=lambda r: (r["round"], r["scope"]))  # noqa: E731
    assert len(val(rows)) == 2 * (len(SITES) + 1) and val(rows) == val(metrics(local.path))
    assert rows.index(val(rows)[0]) > next(i for i, r in enumerate(rows) if r["round"] == 1 and "test_kappa" in r)
    assert json.loads((out / "env.json").read_text())["engine"] == "deployment"
    assert (out / "report.html").is_file() and (out / "checkpoints" / "latest.pt").is_file()
    # one long-lived ClientApp worker per site: its data set was read once for all of the run's messages
    assert deployment.log("node-site-1").read_text(errors="replace").count("Loaded train split") == 1
    # the intruder was refused by the SuperLink and gave up (Flower exit code 305)
    wait_for(lambda: intruder.poll() is not None, "the unregistered SuperNode to be refused", 120)
    assert intruder.returncode != 0
    assert "Failed to activate SuperNode" in deployment.log("node-intruder").read_text(errors="replace")
    wait_for(lambda: wrong_ca.poll() is not None, "the wrong-CA SuperNode to stop", 60)
    assert wrong_ca.returncode == 2
    assert "failed TLS verification" in deployment.log("node-wrongca").read_text(errors="replace")


def test_secure_aggregation_across_real_sites_matches_the_local_engine(deployment, tmp_path):
    """SecAgg+ over TLS and authenticated SuperNodes: the four exchanges of every round go through
    the SuperLink, and the weights equal the local engine's secure run (rounding seeded by site)."""
    cfg = phantom_classification_config("federation.secure_aggregation=true", timeout=120.0, min_sites=2)
    out = deployment.root / "run-secure"
    runner = deployment.start_run(out, subprocess.PIPE, cfg)
    try:
        output, _ = runner.communicate(timeout=460)
    finally:
        stop(runner)
    assert runner.returncode == 0, output[-3000:]
    local = start_run(cfg, tmp_path / "local", "local")
    a, b = final_model(out), final_model(local.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), diagnosis(deployment, out, output)
    assert "the coordinator saw only masked updates" in (out / "MODEL_CARD.md").read_text()


def test_coordinator_crash_then_resume(deployment, tmp_path):
    out = deployment.root / "run-crash"
    # A SuperNode caught mid-transfer by the crash backs off (Flower: exponential, up to 20 s per
    # try) and was seen back only ~60 s after the SuperLink; the resumed run waits up to
    # federation.timeout for every site (a silent one stops it: see test_engine), so give it room.
    # The timeout does not enter training: the weights must still equal run-e2e's.
    runner = deployment.start_run(out, subprocess.DEVNULL, phantom_classification_config(timeout=240.0, min_sites=2))
    try:
        wait_for(lambda: (out / "checkpoints" / "latest.pt").is_file(), "round 1's checkpoint", 300)
        stop(deployment.superlink, signal.SIGKILL)  # the coordinator dies (SuperLink, ServerApp with it)
    finally:
        stop(runner)
    ckpt = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert ckpt["round"] == 1 and not (out / "final.pt").exists()
    deployment.start_superlink()  # same database: the sites' keys stay registered; nodes reconnect
    proc = deployment.run(out, "--resume", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = final_model(out), final_model(deployment.root / "run-e2e")
    assert all(torch.equal(a[k], b[k]) for k in a), ("the resumed run must equal the uninterrupted one\n"
                                                     + diagnosis(deployment, out, proc.stdout + proc.stderr))
    assert json.loads((out / "env.json").read_text())["resumes"]


def test_site_dropout(deployment):
    out = deployment.root / "run-dropout"
    runner = deployment.start_run(out, subprocess.PIPE)
    try:
        wait_for(lambda: (out / "checkpoints" / "latest.pt").is_file(), "round 1", 300)
        stop(deployment.nodes["site-3"], signal.SIGKILL)  # site-3 goes away as round 2 starts
        output, _ = runner.communicate(timeout=460)
    finally:
        stop(runner)
    assert runner.returncode == 0, output[-3000:]
    rows = metrics(out)
    r2 = [r for r in rows if r["round"] == 2]
    assert any(r["scope"] == "site-3" and r.get("dropped") for r in r2), r2
    glob = next(r for r in r2 if r["scope"] == "global" and "sites_aggregated" in r)
    assert (glob["sites_aggregated"], glob["sites_dropped"]) == (2, 1)
    assert (out / "final.pt").is_file()


def test_segmentation_deployment_matches_local_engine(tmp_path_factory):
    """FedGIN across a CT hospital and an MRI hospital: the coordinator never sees a data path."""
    from fedsilo.data.tools import write_abdomen_phantom

    root = tmp_path_factory.mktemp("deploy-seg")
    data = {"ct-site": root / "ct", "mr-site": root / "mr"}
    write_abdomen_phantom(data["ct-site"], 4, "ct", seed=1, shape=(8, 32, 32))
    write_abdomen_phantom(data["mr-site"], 4, "mr", seed=2, shape=(8, 32, 32))
    local_cfg = seg_config(sites=chaos_sites({("ct-site", "ct"): str(data["ct-site"]), ("mr-site", "mr"): str(data["mr-site"])}))
    coord_cfg = seg_config(sites=chaos_sites({("ct-site", "ct"): "/site-only/ct", ("mr-site", "mr"): "/site-only/mr"}))
    dep = Deployment(root, list(data), coord_cfg, data)
    try:
        dep.start_superlink()
        for site in data:
            dep.start_node(site)
        out = root / "run"
        proc = dep.run(out)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        dep.close()
    local = start_run(local_cfg, root / "local", "local")
    a, b = final_model(out), final_model(local.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = [r for r in metrics(out) if r["scope"] == "global" and "test_dice3d_mr_mean" in r][-1]
    ref = [r for r in metrics(local.path) if r["scope"] == "global" and "test_dice3d_mr_mean" in r][-1]
    assert last["round"] == 2 and last["test_dice3d_mr_mean"] == ref["test_dice3d_mr_mean"]
    sites = {s["name"]: s for s in json.loads((out / "sites.json").read_text())}
    assert (sites["ct-site"]["modality"], sites["mr-site"]["modality"]) == ("ct", "mr")


def test_fedgan_deployment_matches_local_engine_then_samples_and_audits(tmp_path_factory):
    """``fedsilo deploy run configs/quick-fedgan.toml`` on 3 SuperNodes with TLS and authentication:
    FD, precision/recall and realism come from the sites' statistics (gan.evaluation =
    "federated"), equal the local engine's, and the run folder serves `sample` and `audit`."""
    from fedsilo.config import load_config

    root = tmp_path_factory.mktemp("deploy-gan")
    cfg = load_config(REPO_ROOT / "configs" / "quick-fedgan.toml", ["federation.timeout=240", "experiment.threads=1"])
    dep = Deployment(root, SITES, cfg)
    try:
        dep.start_superlink()
        for site in SITES:
            dep.start_node(site)
        out = root / "run"
        # 8 round trips (setup, round 0's evaluation, 3 x train + evaluate): room for a busy machine
        proc = dep.run(out, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        dep.close()
    local = start_run(cfg, root / "local", "local")
    a, b = final_model(out), final_model(local.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keys = ("test_fd", "test_precision", "test_recall", "test_density", "test_coverage", "test_realism")
    deployed = [r for r in metrics(out) if r["scope"] == "global" and "test_fd" in r]
    ref = [r for r in metrics(local.path) if r["scope"] == "global" and "test_fd" in r]
    assert [r["round"] for r in deployed] == [0, 1, 2, 3] and deployed[-1]["test_eval_sites"] == 3
    for got, want in zip(deployed, ref, strict=True):
        for key in keys:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (got["round"], key)
    sample = subprocess.run([sys.executable, "-m", "fedsilo", "sample", str(out), "--n", "8", "--out",
                             str(root / "synthetic")], env=env(), capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert len(list((root / "synthetic" / "images").glob("*.png"))) == 8
    assert json.loads((root / "synthetic" / "provenance.json").read_text())["labels"].startswith("none")
    audit = subprocess.run([sys.executable, "-m", "fedsilo", "audit", str(out), "--set", "audit.max_samples=40",
                            "--set", "audit.gan_samples=60", "--set", "audit.latent_steps=5", "--set",
                            "audit.max_targets=4"], env=env(), capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0, audit.stderr[-3000:]
    assert "gan_leaks_blackbox" in json.loads((out / "audit.json").read_text())["attacks"]
