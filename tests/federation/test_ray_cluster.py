"""The simulation engine on an existing Ray cluster: a head on loopback started (and stopped) here.

The head is ``ray start --head --block`` in its own process group, so that stopping it (SIGTERM to
that process, which stops what it started) touches no other Ray instance on the machine, as
``ray stop`` would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import fedsilo
from fedsilo.cli import main
from fedsilo.config import ConfigError, dumps
from fedsilo.deploy.checks import free_port
from fedsilo.federation import ray_cluster
from fedsilo.run.start import start_run

HEAD_START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def ray_head():
    """``127.0.0.1:PORT`` of a 2-CPU Ray head on loopback, stopped (with all it started) afterwards."""
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    log_path = Path(temp) / "head.log"
    cmd = [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           f"--ray-client-server-port={free_port()}", f"--temp-dir={temp}", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats"]
    with log_path.open("w") as log:
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        time.sleep(1)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of this head's group still running
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


def _final(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "final.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_run_on_a_ray_cluster_gives_the_local_engines_weights(tiny_cfg, tmp_path, ray_head):
    local = start_run(tiny_cfg(), tmp_path / "local", "local")
    # one CPU per site fits two sites on the 2-CPU head; max_concurrent_sites keeps it to one
    cfg = tiny_cfg(f"simulation.address={ray_head}", "simulation.cpus_per_site=1", "simulation.max_concurrent_sites=1")
    sim = start_run(cfg, tmp_path / "sim", "simulation")
    a, b = _final(local.path), _final(sim.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    env = json.loads((sim.path / "env.json").read_text())
    cluster = env["cluster"]
    assert env["engine"] == "simulation"
    assert (cluster["address"], cluster["nodes"], cluster["resources"]["CPU"]) == (ray_head, 1, 2.0)
    assert (cluster["cpus_per_site"], cluster["gpus_per_site"], cluster["sites_at_once"], cluster["actors"]) == \
        (1.0, 0.0, 1, 1)
    node = cluster["node_list"][0]
    assert (node["fedsilo"], node["ray"], node["cpus"]) == (fedsilo.__version__, cluster["ray"], 2.0)

    # inside a Ray actor that asked for no GPU, experiment.device = "auto" is the CPU
    import ray

    ray.init(address=ray_head, logging_level="WARNING")
    try:
        @ray.remote(num_cpus=0)
        class Site:
            def device(self) -> tuple[list, str]:
                from fedsilo.federation.ray_cluster import ray_assigned_gpus
                from fedsilo.seeding import resolve_device

                gpus = ray_assigned_gpus()
                return gpus, str(resolve_device("auto", gpus))

        assert ray.get(Site.remote().device.remote(), timeout=60) == ([], "cpu")
        assert ray_cluster.ray_assigned_gpus() is None  # the driver is no actor
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_cluster_problems_fail_before_the_run_folder_exists(tiny_cfg, tmp_path, ray_head, monkeypatch):
    cases = [
        ("simulation.cpus_per_site=4", r"simulation.cpus_per_site = 4, simulation.gpus_per_site = 0: no node of "
                                       r"the Ray cluster can host one site \(nodes: \S+: 2 CPUs, 0 GPUs\)"),
        ("simulation.gpus_per_site=0.5", r"simulation.gpus_per_site = 0.5: no node of the Ray cluster can host one"),
    ]
    for override, message in cases:
        out = tmp_path / override.split("=")[0]
        with pytest.raises(ConfigError, match=message) as err:
            start_run(tiny_cfg(f"simulation.address={ray_head}", override), out, "simulation")
        assert "\n" not in str(err.value) and not out.exists()

    # another fedsilo on the driver than on the cluster's node
    monkeypatch.setattr(ray_cluster, "local_versions", lambda: {**_versions(), "fedsilo": "99.0"})
    with pytest.raises(ConfigError, match=rf"simulation.address = '{ray_head}': node \S+ runs fedsilo "
                                          rf"{fedsilo.__version__}, this machine 99.0"):
        start_run(tiny_cfg(f"simulation.address={ray_head}"), tmp_path / "versions", "simulation")
    monkeypatch.undo()
    assert not (tmp_path / "versions").exists()

    # address = "auto" finds the cluster through RAY_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    with ray_cluster.ray_cluster(tiny_cfg("simulation.address=auto").simulation, num_sites=2) as cluster:
        assert (cluster.address, len(cluster.nodes), cluster.cpus_per_site, cluster.sites_at_once) == \
            ("auto", 1, 2.0, 1)
    import ray

    assert not ray.is_initialized()


def _versions() -> dict[str, str | None]:
    import platform

    import ray

    return {"fedsilo": fedsilo.__version__, "ray": ray.__version__, "python": platform.python_version()}


@pytest.mark.timeout(120)  # ray.init alone retries an unreachable address for minutes
def test_unreachable_address_fails_fast_in_one_line(tmp_path, tiny_cfg, capsys):
    port = free_port()  # nothing listens there
    config = tmp_path / "tiny.toml"
    config.write_text(dumps(tiny_cfg()))
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--engine", "simulation",
                 "--set", f"simulation.address=127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not (tmp_path / "run").exists()
    assert err == [f"fedsilo: error: simulation.address = '127.0.0.1:{port}': nothing answers at 127.0.0.1:{port} "
                   f"(Connection refused within 5 s); start the head node with `ray start --head` or fix the address"]
