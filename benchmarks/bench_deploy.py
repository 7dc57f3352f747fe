"""Deployment timing: the same config on the local engine and on a loopback deployment (issue 18).

    python -m benchmarks.bench_deploy [--quick] [--chaos] [--chaos-rounds N] [--variants all|final] [--rounds N]

The deployment is what ``fedsilo deploy`` starts at real sites, on one machine: a SuperLink with
TLS and SuperNode authentication, 3 SuperNodes (each ``fedsilo deploy supernode``), and
``fedsilo deploy run``. Every run is its own process. A round's seconds are the gaps between
successive writes of ``checkpoints/latest.pt`` (written at the end of every round, after
evaluation), median over rounds 2..R (setup and the first round excluded); the table also gives
the whole run's wall time. Final weights are compared with the local engine's, bit for bit.

Variants switch the speed-ups on one at a time (each a fresh deployment):

1. Flower's defaults: a ``flwr-clientapp`` process per message (``--isolation subprocess``), the
   grid's 3 s reply poll (``FEDSILO_GRID_POLL=flower``), SuperExec task poll 1 s.
2. + the grid pulls replies with back-off (10 ms doubling to 0.5 s).
3. + SuperExec task poll 0.05 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, set by the launcher).
4. + one long-lived ClientApp worker per site (``--isolation worker``, the default), evaluation
   in its own exchange (``federation.fused_evaluation = "off"``).
5. + evaluation fused into the next round's training message (``federation.fused_evaluation``'s
   default in a deployment): one exchange per round instead of two.

``--variants final`` runs the last two (what fusing saves, on the default deployment).

``--chaos`` adds the FedGIN CHAOS config (100 rounds of 5 local steps; needs ../shared/data, about
10+ minutes per engine on 2 cores), final variant only; ``--chaos-rounds N`` runs its first N
rounds (same schedule per round, so the per-round ratio is the full run's; the whole-run ratio
then weighs setup more).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, table
from fedsilo.deploy.checks import free_port

NAME = "deploy"
TITLE = "Deployment timing: 3 SuperNodes with TLS and authentication on loopback vs the local engine (issue 18)"
QUICK = REPO / "configs" / "quick-classify.toml"
CHAOS = REPO / "configs" / "fedgin-chaos.toml"
DATA = REPO.parent / "shared" / "data"
SITES = ["site-1", "site-2", "site-3"]

UNFUSED = ["federation.fused_evaluation=off"]
#: (label, SuperNode isolation, environment of the deployment's processes, config overrides)
VARIANTS = [
    ("Flower's defaults", "subprocess", {"FEDSILO_GRID_POLL": "flower", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "1.0"},
     UNFUSED),
    ("+ grid reply poll with back-off", "subprocess", {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "1.0"}, UNFUSED),
    ("+ SuperExec task poll 0.05 s", "subprocess", {}, UNFUSED),
    ("+ long-lived ClientApp worker per site", "worker", {}, UNFUSED),
    ("+ evaluation fused into the training message (default)", "worker", {}, []),
]


NOTES = """The rows switch the speed-ups on one at a time, each a fresh deployment (SuperLink, 3
SuperNodes, TLS, SuperNode authentication, loopback); the last row is what `fedsilo deploy` does
by default. Seconds per round: median gap between successive round-end checkpoints (rounds 2..R;
a round = train + evaluate exchange, or one exchange with fused evaluation, whose last round adds
an evaluation exchange of its own). Weights: `final.pt` equal to the local engine's, bit for bit;
validation rows: every `val_*` row of metrics.jsonl (per site and global, per round) equal to the
local engine's (which evaluates in its own exchange).
What no fedsilo setting removes (Flower 1.41, read from its source): the SuperNode sleeps a fixed
3 s after every empty poll of the SuperLink (`start_client_internal`, no option), so every message
exchange costs up to 3 s; and both the SuperNode and the ServerApp fetch a message's arrays with a
back-off starting at 1 s (doubling to 10 s) when they see the message before its arrays were
uploaded, which a fast poll and a loaded machine make likely. The worker's log splits each task
into pull/app/push seconds."""


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FEDSILO_GRID_POLL", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL")}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _fedsilo(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedsilo", *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group this benchmark started (SuperLink, SuperNode and what they started)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _timed(cmd: list[str], out: Path, env: dict[str, str], log: Path, timeout: float) -> tuple[float, list[float]]:
    """Run ``cmd`` (which writes the run folder ``out``); return its wall seconds and the times at
    which ``out/checkpoints/latest.pt`` was rewritten (the rounds' ends)."""
    ckpt = out / "checkpoints" / "latest.pt"
    ends: list[float] = []
    done = threading.Event()

    def watch() -> None:
        last = None
        while not done.is_set():
            try:
                mtime = ckpt.stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime is not None and mtime != last:
                ends.append(mtime / 1e9)
                last = mtime
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    with log.open("ab") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} failed ({proc.returncode}); see {log}")
    return wall, ends


def _per_round(ends: list[float]) -> float:
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return statistics.median(gaps) if gaps else float("nan")


def _identical(a: Path, b: Path) -> bool:
    x = torch.load(a / "final.pt", map_location="cpu", weights_only=False)["model"]
    y = torch.load(b / "final.pt", map_location="cpu", weights_only=False)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _validation(path: Path) -> list[dict]:
    """Every validation row (per site and global) of a run, in round and scope order."""
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return sorted((r for r in rows if any(k.startswith("val_") for k in r)), key=lambda r: (r["round"], r["scope"]))


def run_local(cfg: Path, sets: list[str], root: Path) -> tuple[float, float, Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = root / "local"
    cmd = [sys.executable, "-m", "fedsilo", "run", str(cfg), "--out", str(out), "--engine", "local"]
    cmd += [a for s in sets for a in ("--set", s)]
    wall, ends = _timed(cmd, out, _env({}), root / "local.log", 3600)
    return wall, _per_round(ends), out


def run_deployment(cfg: Path, sets: list[str], data: dict[str, Path], root: Path, isolation: str,
                   extra: dict[str, str]) -> tuple[float, float, Path]:
    """One fresh deployment (certs, SuperLink, a SuperNode per site) running ``cfg``."""
    from fedsilo.deploy.certs import make_certs

    root.mkdir(parents=True, exist_ok=True)
    certs = root / "certs"
    make_certs(certs, list(data))
    env = _env(extra)
    address = f"127.0.0.1:{free_port()}"
    procs = [_fedsilo(["deploy", "superlink", "--certs", str(certs), "--address", address], root / "superlink.log", env)]
    try:
        deadline = time.monotonic() + 180
        while "SuperLink ready" not in (root / "superlink.log").read_text(errors="replace"):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SuperLink did not start; see {root / 'superlink.log'}")
            time.sleep(0.5)
        for site, folder in data.items():
            procs.append(_fedsilo(["deploy", "supernode", "--certs", str(certs / "sites" / site), "--site", site,
                                   "--data", str(folder), "--superlink", address, "--port", str(free_port()),
                                   "--isolation", isolation], root / f"node-{site}.log", env))
        for site, proc in zip(data, procs[1:]):  # a SuperNode that failed to start would stall the run
            log = root / f"node-{site}.log"
            while "SuperNode ID" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline + 180:
                    raise RuntimeError(f"the SuperNode of {site} did not start; see {log}")
                time.sleep(0.5)
        out = root / "run"
        cmd = [sys.executable, "-m", "fedsilo", "deploy", "run", str(cfg), "--out", str(out), "--superlink", address,
               "--certs", str(certs), "--timeout", "7200", *[a for s in sets for a in ("--set", s)]]
        wall, ends = _timed(cmd, out, env, root / "run.log", 7300)
        return wall, _per_round(ends), out
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _quick_case(root: Path, sets: list[str]) -> tuple[Path, dict[str, Path]]:
    from fedsilo.config import load_config
    from fedsilo.deploy.sites import write_site_folders

    return QUICK, write_site_folders(load_config(QUICK, sets), root / "data")


def _chaos_case(root: Path) -> tuple[Path, dict[str, Path]]:
    """configs/fedgin-chaos.toml with its phantom CT site written to a CHAOS-layout folder (a
    deployed site reads files), the same folder for both engines."""
    import dataclasses

    from fedsilo.config import dumps, load_config
    from fedsilo.data.tools import write_abdomen_phantom

    cfg = load_config(CHAOS)
    sites, data = [], {}
    for spec in cfg.data.sites:
        if spec.kind == "phantom":
            folder = root / "data" / spec.name
            write_abdomen_phantom(folder, spec.count, spec.modality, seed=cfg.experiment.seed, shape=tuple(spec.shape))
            spec = dataclasses.replace(spec, kind="chaos", path=str(folder), mapping="fedsilo")
        spec = dataclasses.replace(spec, path=str((REPO / spec.path).resolve()))
        sites.append(spec)
        data[spec.name] = Path(spec.path)
    tests = [dataclasses.replace(t, path=str((REPO / t.path).resolve()),
                                 **({"label_path": str((REPO / t.label_path).resolve())} if t.label_path else {}))
             for t in cfg.data.test]
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sites=sites, test=tests))
    path = root / "fedgin-chaos.toml"
    path.write_text(dumps(cfg), encoding="utf-8")
    return path, data


def _row(label: str, local: tuple[float, float, Path], dep: tuple[float, float, Path], rounds: int) -> list[object]:
    same_val = _validation(dep[2]) == _validation(local[2])
    return [label, f"{dep[1]:.2f}", f"{local[1]:.2f}", f"{dep[1] / local[1]:.1f}x", f"{dep[0]:.0f}", f"{local[0]:.0f}",
            f"{dep[0] / local[0]:.2f}x", "yes" if _identical(dep[2], local[2]) else "NO",
            "yes" if same_val else "NO", rounds]


def run(quick: bool = False, chaos: bool = False, variants: str = "all", rounds: int | None = None,
        chaos_rounds: int = 100) -> str:
    rounds = rounds or (3 if quick else 5)
    sets = [f"federation.rounds={rounds}"]
    header = ["config / deployment", "s per round (deploy)", "s per round (local)", "ratio", "run s (deploy)",
              "run s (local)", "ratio", "weights bit-identical", "validation rows identical", "rounds"]
    rows = []
    chosen = VARIANTS if variants == "all" else VARIANTS[-2:]
    with tempfile.TemporaryDirectory(prefix="fsdeploy") as tmp:
        root = Path(tmp)
        cfg, data = _quick_case(root, sets)
        local = run_local(cfg, sets, root / "quick")
        for i, (label, isolation, extra, more) in enumerate(chosen):
            print(f"  quick-classify, {label}", flush=True)
            dep = run_deployment(cfg, sets + more, data, root / f"quick-{i}", isolation, extra)
            rows.append(_row(f"quick-classify: {label}", local, dep, rounds))
        notes = []
        if chaos and not (DATA / "chaos_mr_t2").is_dir():
            notes.append(f"FedGIN CHAOS row skipped: {DATA / 'chaos_mr_t2'} is absent.")
        elif chaos:
            croot = root / "chaos"
            ccfg, cdata = _chaos_case(croot)
            csets = [f"federation.rounds={chaos_rounds}"]
            clocal = run_local(ccfg, csets, croot)
            label, isolation, extra, _ = VARIANTS[-1]
            rows.append(_row(f"FedGIN CHAOS 100x5{'' if chaos_rounds == 100 else f' (first {chaos_rounds} rounds)'}: "
                             f"{label}", clocal, run_deployment(ccfg, csets, cdata, croot / "dep", isolation, extra),
                             chaos_rounds))
        else:
            notes.append("FedGIN CHAOS row not run here (`--chaos`; needs ../shared/data, 10+ min per engine).")
    body = table(header, rows)
    return body + ("\n\n" + "\n".join(notes) if notes else "") + "\n\n" + NOTES


def main() -> int:
    from benchmarks.common import write_section

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--chaos", action="store_true", help="also the FedGIN CHAOS config (needs ../shared/data)")
    parser.add_argument("--variants", choices=["all", "final"], default="all",
                        help="all: the speed-ups one at a time; final: the default deployment, without and with "
                             "fused evaluation")
    parser.add_argument("--chaos-rounds", type=int, default=100, help="rounds of the CHAOS config (default 100)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of quick-classify (default 3 with --quick, "
                                                                  "else 5)")
    args = parser.parse_args()
    start = time.monotonic()
    if not 2 <= args.chaos_rounds <= 100:
        parser.error(f"--chaos-rounds {args.chaos_rounds}: expected 2..100 (the config's schedule has 100)")
    body = run(quick=args.quick, chaos=args.chaos, variants=args.variants, rounds=args.rounds,
               chaos_rounds=args.chaos_rounds)
    command = "python -m benchmarks.bench_deploy" + "".join(
        f" {flag}" for flag, on in (("--quick", args.quick), ("--chaos", args.chaos)) if on)
    command += f" --variants {args.variants}" + (f" --rounds {args.rounds}" if args.rounds else "")
    command += f" --chaos-rounds {args.chaos_rounds}" if args.chaos and args.chaos_rounds != 100 else ""
    write_section(NAME, TITLE, command, body, start)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
