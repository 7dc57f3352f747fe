"""100 simulated sites on a Ray cluster of this machine vs the local engine: wall time and peak memory.

The benchmark starts a Ray head here (``ray start --head --block`` on loopback, all CPUs, in its
own process group) and runs ``fedsilo run --engine simulation --set simulation.address=HOST:PORT``
against it, then the same config on the local engine. Each run is its own ``fedsilo run``
process. Memory is the peak over the run of the summed proportional set size (PSS, shared pages
split between the processes sharing them) of every process involved: the ``fedsilo run``
driver, and for the cluster also the head's processes and Ray workers (the idle head's own
memory included: that is what a cluster costs). Sampled every 0.25 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.common import REPO, table

NAME = "cluster"
TITLE = "Scale out: simulated sites on a Ray cluster vs the local engine, wall time and peak memory (issue 22)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pss_mb(pid: int) -> float:
    """Proportional set size of ``pid`` in MB (0 when it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _group_pids(pgids: set[int]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids:  # field 5 of /proc/PID/stat: the process group
                pids.append(int(entry.name))
    return pids


@contextmanager
def ray_head(cpus: int) -> Iterator[tuple[str, int, float]]:
    """(address, process group, seconds to start) of a Ray head on loopback, stopped afterwards."""
    temp = tempfile.mkdtemp(prefix="fsbench", dir="/tmp")
    port = _free_port()
    log_path = Path(temp) / "head.log"
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={port}", f"--ray-client-server-port={_free_port()}", f"--temp-dir={temp}", f"--num-cpus={cpus}",
           "--include-dashboard=false", "--disable-usage-stats"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    with log_path.open("w") as log:
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.perf_counter() - start > 180:
                raise RuntimeError(f"Ray head did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield f"127.0.0.1:{port}", head.pid, time.perf_counter() - start
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


def _run(args: list[str], out: Path, head_group: int | None) -> tuple[float, float, float]:
    """(process wall s, training-rounds s, peak PSS MB) of one ``fedsilo run``."""
    cmd = [sys.executable, "-m", "fedsilo", "run", str(REPO / "configs" / "quick-classify.toml"), "--out", str(out),
           *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    groups = {proc.pid} | ({head_group} if head_group is not None else set())
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_mb(pid) for pid in _group_pids(groups)))
        time.sleep(0.25)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = sum(r.get("round_seconds", 0.0) for r in rows if r["scope"] == "global")
    return seconds, rounds, peak


def run(quick: bool = False) -> str:
    sites, n_train, rounds = (20, 400, 2) if quick else (100, 2000, 3)
    cpus = os.cpu_count() or 1
    common = ["--set", "experiment.threads=1", "--set", f"federation.num_sites={sites}",
              "--set", f"federation.rounds={rounds}", "--set", f"federation.eval_every={rounds}",
              "--set", "partition.name=iid", "--set", f"data.phantom.n_train={n_train}",
              "--set", "data.phantom.n_test=200", "--set", "train.local_epochs=1", "--set", "eval.keep_models=false"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["local"] = _run([*common, "--engine", "local"], Path(tmp) / "local", None)
        with ray_head(cpus) as (address, group, startup):
            cluster_args = [*common, "--engine", "simulation", "--set", f"simulation.address={address}",
                            "--set", "simulation.cpus_per_site=1"]
            results["cluster"] = _run(cluster_args, Path(tmp) / "cluster", group)
        env = json.loads((Path(tmp) / "cluster" / "env.json").read_text())["cluster"]
        a = torch.load(Path(tmp) / "local" / "final.pt", weights_only=False)["model"]
        b = torch.load(Path(tmp) / "cluster" / "final.pt", weights_only=False)["model"]
        same = all(torch.equal(a[k], b[k]) for k in a)
    for name, (seconds, training, pss) in results.items():
        print(f"  {name}: {seconds:.1f} s ({training:.1f} s in rounds), peak {pss:.0f} MB", flush=True)
    (lw, lt, lm), (cw, ct, cm) = results["local"], results["cluster"]
    rows = [["local (in-process, one site at a time)", f"{lw:.1f}", f"{lt:.1f}", f"{lm:.0f}", "1.00", "1.00", "1.00"],
            [f"Ray cluster of this machine ({env['nodes']} node, {env['resources'].get('CPU', 0):g} CPUs; "
             f"{env['actors']} sites at a time, 1 CPU each)", f"{cw:.1f}", f"{ct:.1f}", f"{cm:.0f}",
             f"{cw / lw:.2f}", f"{ct / lt:.2f}", f"{cm / lm:.2f}"]]
    return (f"Phantom fundus classification (quick-classify model), {sites} sites sharing {n_train} training "
            f"images (iid), {rounds} rounds of 1 local epoch, one torch thread per site; each engine one "
            f"`fedsilo run` process. The Ray head took {startup:.1f} s to start (not in the cluster's wall time). "
            f"Peak memory: summed PSS of the driver and, for the cluster, every process of the head (GCS, "
            f"raylet, agents, workers), sampled every 0.25 s. Final weights identical to the local engine's: "
            f"{'yes' if same else 'no (sites train in parallel, so the server adds the updates in another order)'}."
            "\n\n" + table(["engine", "process wall s", "training rounds s", "peak memory MB", "wall vs local",
                            "rounds vs local", "memory vs local"], rows) + "\n")


if __name__ == "__main__":
    from benchmarks.common import write_section

    t0 = time.monotonic()
    write_section(NAME, TITLE, "python -m benchmarks.bench_cluster", run(), t0)
