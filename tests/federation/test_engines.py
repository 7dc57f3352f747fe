"""End-to-end runs of the classification task: metrics, resume, engines, modes, faults."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedsilo.data.errors import DataError
from fedsilo.federation import client_app as real
from fedsilo.federation.inprocess import InProcessGrid, run_inprocess, run_on_grid
from fedsilo.federation.messages import ARRAYS
from fedsilo.federation.sites import unwrap_reason
from fedsilo.rounds import FederationError
from fedsilo.run.app import make_server_app
from fedsilo.run.folder import RunDir, RunDirError, cpu_model
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run


def _final(path):
    return torch.load(path / "final.pt", weights_only=False)


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_federated_run_logs_every_round_global_and_per_site(tiny_cfg, tmp_path):
    cfg = tiny_cfg("federation.rounds=3", "federation.site_names=['north','south']")
    run = start_run(cfg, tmp_path / "run")
    for name in ("config.toml", "env.json", "metrics.jsonl", "final.pt", "checkpoints/latest.pt",
                 "partition.csv", "partition.png"):
        assert (run.path / name).exists(), name
    env = json.loads((run.path / "env.json").read_text())
    assert env["seed"] == 0 and env["engine"] == "local" and env["versions"]["flwr"] == "1.41.0"
    assert "commit" in env["git"] and env["start_time"]
    assert env["platform"]["cpu"] == cpu_model() and env["platform"]["cpu"] != "unknown CPU"
    rows = _rows(run.path)
    for rnd in (1, 2, 3):
        scopes = {r["scope"] for r in rows if r["round"] == rnd}
        assert scopes == {"global", "north", "south"}
        assert any(r["round"] == rnd and r["scope"] == "north" and "train_loss" in r for r in rows)
        assert any(r["round"] == rnd and r["scope"] == "south" and "val_kappa" in r for r in rows)
        assert any(r["round"] == rnd and r["scope"] == "global" and "test_kappa" in r for r in rows)
    # training actually learns the tiny task: test accuracy rises above chance (0.2)
    last = [r for r in rows if r["round"] == 3 and r["scope"] == "global" and "test_accuracy" in r][0]
    first = [r for r in rows if r["round"] == 0 and "test_accuracy" in r][0]
    assert last["test_accuracy"] > max(0.4, first["test_accuracy"])
    table = (run.path / "partition.csv").read_text().splitlines()
    assert table[0].startswith("site,0 no DR") and table[1].startswith("north,")


def test_existing_run_folder_is_never_overwritten(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        start_run(tiny_cfg(), out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_resume_after_interruption_is_bit_identical(tiny_cfg, tmp_path):
    cfg = tiny_cfg("federation.rounds=3", "federation.strategy.name=fedadam", "federation.strategy.server_lr=0.05")
    start_run(cfg, tmp_path / "full")

    def stop_after_1(rnd):
        if rnd == 1:
            raise RunInterrupted("stopped for the test")

    with pytest.raises(RunInterrupted):
        start_run(cfg, tmp_path / "cut", on_round_end=stop_after_1)
    assert not (tmp_path / "cut" / "final.pt").exists()
    assert torch.load(tmp_path / "cut/checkpoints/latest.pt", weights_only=False)["round"] == 1
    resume_run(tmp_path / "cut")
    a, b = _final(tmp_path / "full")["model"], _final(tmp_path / "cut")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # metrics of the resumed run are those of the full run, each round once
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]  # noqa: E731
    assert strip(_rows(tmp_path / "cut")) == strip(_rows(tmp_path / "full"))
    env = json.loads((tmp_path / "cut" / "env.json").read_text())
    assert env["resumes"][0]["from_round"] == 1
    with pytest.raises(RunDirError, match="already finished all 3 rounds"):
        resume_run(tmp_path / "cut")


@pytest.mark.slow
@pytest.mark.parametrize("secure", [False, True])
def test_local_and_simulation_engines_give_identical_weights(tiny_cfg, tmp_path, secure):
    # with secure aggregation too: SecAgg+'s rounding is seeded by the site's position, and the
    # masks cancel exactly, so the four exchanges through Ray give the local engine's weights
    cfg = tiny_cfg("federation.rounds=2", f"federation.secure_aggregation={str(secure).lower()}")
    start_run(cfg, tmp_path / "local", "local")
    start_run(cfg, tmp_path / "sim", "simulation")
    a, b = _final(tmp_path / "local")["model"], _final(tmp_path / "sim")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "sim" / "env.json").read_text())["engine"] == "simulation"


def test_centralised_and_local_references(tiny_cfg, tmp_path):
    cen = start_run(tiny_cfg("experiment.mode=centralised"), tmp_path / "cen")
    rows = _rows(cen.path)
    assert {r["scope"] for r in rows if r["round"] == 2} == {"global", "site-1", "site-2"}
    assert any(r["scope"] == "global" and "val_kappa" in r and r["round"] == 2 for r in rows)
    loc = start_run(tiny_cfg("experiment.mode=local"), tmp_path / "loc")
    final = _final(loc.path)
    assert set(final["site_models"]) == {"site-1", "site-2"}
    m1, m2 = final["site_models"]["site-1"], final["site_models"]["site-2"]
    assert any(not torch.equal(m1[k], m2[k]) for k in m1 if m1[k].is_floating_point())
    rows = _rows(loc.path)
    assert any(r["scope"] == "site-1" and "test_kappa" in r and r["round"] == 2 for r in rows)


def test_fedbn_keeps_norm_layers_local(tiny_cfg, tmp_path):
    run = start_run(tiny_cfg("federation.strategy.name=fedbn"), tmp_path / "bn")
    final = _final(run.path)
    m1, m2 = final["site_models"]["site-1"], final["site_models"]["site-2"]
    bn = [k for k in m1 if "running_mean" in k]
    conv = [k for k in m1 if k.endswith("body.0.weight")]
    assert bn and all(not torch.equal(m1[k], m2[k]) for k in bn)
    assert all(torch.equal(m1[k], m2[k]) for k in conv)


def test_fedprox_term_pulls_towards_global(tiny_cfg, tmp_path):
    def drift(mu):
        run = start_run(tiny_cfg("federation.rounds=1", "federation.strategy.name=fedprox",
                                 f"federation.strategy.proximal_mu={mu}", "train.optimizer=sgd", "train.lr=0.05"),
                        tmp_path / f"prox{mu}")
        start = torch.load(run.checkpoint_path, weights_only=False)
        final = _final(run.path)["model"]
        from fedsilo.tasks import make_task

        init = make_task(run.cfg).initial_state()
        return sum(float((final[k].float() - init[k].float()).norm()) for k in init if "weight" in k), start

    small, _ = drift(0.0)
    large, _ = drift(10.0)  # mu * lr = 0.5 keeps the proximal step stable
    assert large < 0.5 * small


def _poisoned_client(poison):
    """A ClientApp that trains normally, then lets ``poison`` alter a site's reply."""
    app = ClientApp()

    @app.query("site_info")
    def info(msg: Message, context: Context) -> Message:
        return real.site_info(msg, context)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = real.train(msg, context)
        poison(int(context.node_config["partition-id"]), reply)
        return reply

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return real.evaluate(msg, context)

    return app


def _nan_site0(pid, reply):
    if pid == 0:
        arrays = reply.content.array_records[ARRAYS]
        key = next(iter(arrays.keys()))
        arrays[key] = Array(np.full(arrays[key].shape, np.nan, dtype=arrays[key].numpy().dtype))


def test_nan_update_is_rejected_and_round_proceeds(tiny_cfg, tmp_path, caplog):
    run = RunDir.create(tmp_path / "nan", tiny_cfg("federation.num_sites=3", "federation.min_sites=2"), "local")
    run_inprocess(make_server_app(run.path), _poisoned_client(_nan_site0), 3)
    rows = _rows(run.path)
    rejected = [r for r in rows if r.get("rejected")]
    assert [r["scope"] for r in rejected] == ["site-1", "site-1"]
    assert "non-finite" in rejected[0]["reason"]
    assert all(r["sites_aggregated"] == 2 for r in rows if "sites_aggregated" in r)
    final = _final(run.path)["model"]
    assert all(torch.isfinite(v.float()).all() for v in final.values())
    assert "update from site-1 rejected" in caplog.text


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum", "multikrum", "fedavg"])
def test_signflipped_site_is_kept_inside_the_honest_range_by_robust_rules(tiny_cfg, tmp_path, strategy):
    """5 sites, site-2 sends sign-flipped x10 weights, site-4 NaNs (the attack hook a SuperNode runs).

    Validation drops the NaN site; of the 4 updates left, the median, the 25% trimmed mean and
    Krum-style selection must land every weight within the range of the 3 honest sites' weights,
    whereas FedAvg lands most of them outside it.
    """
    replies: dict[int, dict[str, np.ndarray]] = {}

    def record(pid, reply):
        arrays = reply.content.array_records[ARRAYS]
        replies[pid] = {k: arrays[k].numpy().copy() for k in arrays.keys()}

    cfg = tiny_cfg("federation.num_sites=5", "federation.rounds=1", "federation.min_sites=3",
                   f"federation.strategy.name={strategy}", "federation.strategy.trim_beta=0.25",
                   "federation.strategy.num_malicious=1", "federation.strategy.num_selected=3")
    run = RunDir.create(tmp_path / strategy, cfg, "local")
    run_inprocess(make_server_app(run.path), _poisoned_client(record), 5,
                  node_extra={1: {"attack": "signflip10"}, 3: {"attack": "nan"}})
    glob = [r for r in _rows(run.path) if r["scope"] == "global" and "sites_aggregated" in r][0]
    assert (glob["sites_aggregated"], glob["sites_rejected"]) == (4, 1)
    final = _final(run.path)["model"]
    outside, total = 0, 0
    for key, value in final.items():
        if not value.is_floating_point():
            continue
        honest = np.stack([replies[pid][key] for pid in (0, 2, 4)])
        got = value.numpy()
        outside += int(((got < honest.min(axis=0) - 1e-6) | (got > honest.max(axis=0) + 1e-6)).sum())
        total += got.size
    if strategy == "fedavg":
        assert outside > 0.5 * total
    else:
        assert outside == 0


def test_too_few_valid_updates_stops_with_checkpoint_intact(tiny_cfg, tmp_path):
    def poison_from_round_2(pid, reply):
        # two sites: calls 0 and 1 are round 1; from round 2 on, site 1's updates are NaN
        if poison_from_round_2.calls >= 2:
            _nan_site0(pid, reply)
        poison_from_round_2.calls += 1

    poison_from_round_2.calls = 0
    run = RunDir.create(tmp_path / "stop", tiny_cfg("federation.min_sites=2", "federation.rounds=3"), "local")
    with pytest.raises(FederationError, match=r"round 2: only 1 valid update\(s\), federation.min_sites = 2"):
        run_inprocess(make_server_app(run.path), _poisoned_client(poison_from_round_2), 2)
    assert torch.load(run.checkpoint_path, weights_only=False)["round"] == 1
    assert not (run.path / "final.pt").exists()


def test_site_sampling_is_seeded_and_respects_fraction(tiny_cfg, tmp_path):
    cfg = tiny_cfg("federation.num_sites=4", "federation.fraction_train=0.5", "federation.rounds=3")

    def trained(path):
        rows = _rows(path)
        return [sorted(r["scope"] for r in rows if r["round"] == rnd and "train_loss" in r) for rnd in (1, 2, 3)]

    a = trained(start_run(cfg, tmp_path / "a").path)
    b = trained(start_run(cfg, tmp_path / "b").path)
    assert a == b
    assert all(len(sites) == 2 for sites in a)
    assert len({tuple(s) for s in a}) > 1  # different sites in different rounds


def test_amp_is_a_no_op_on_cpu():
    import torch

    from fedsilo.training import autocast

    with autocast(True, torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    if torch.cuda.is_available():  # pragma: no cover - CPU is the tested default
        with autocast(True, torch.device("cuda")):
            assert (torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")).dtype == torch.bfloat16


class _FlakyGrid(InProcessGrid):
    """Node 1002 is unreachable for its first ``unreachable`` queries, or never answers (``silent``)."""

    def __init__(self, *args, unreachable: int = 0, silent: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.unreachable, self.silent, self.queries = unreachable, silent, 0

    def _deliver(self, msg: Message) -> Message:
        if msg.metadata.dst_node_id == 1002 and msg.metadata.message_type == "query.site_info":
            self.queries += 1
            if self.queries <= self.unreachable:
                return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node offline"), reply_to=msg)
        return super()._deliver(msg)

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        return [r for r in replies if not (self.silent and r.metadata.src_node_id == 1002)]


def _run_on(grid: InProcessGrid, run: RunDir) -> None:
    run_on_grid(make_server_app(run.path), grid)


def _nodes(n: int) -> list[dict]:
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


def test_a_site_unreachable_at_setup_is_asked_again(tiny_cfg, tmp_path):
    # after a coordinator restart the SuperLink may answer for a node that has not reconnected yet
    run = RunDir.create(tmp_path / "run", tiny_cfg("federation.rounds=1"), "local")
    grid = _FlakyGrid(real.app, _nodes(2), unreachable=2)
    _run_on(grid, run)
    assert grid.queries == 3
    assert [s["name"] for s in json.loads((run.path / "sites.json").read_text())] == ["site-1", "site-2"]
    assert all(r["sites_aggregated"] == 2 for r in _rows(run.path) if "sites_aggregated" in r)


def test_a_site_that_never_describes_itself_stops_the_run(tiny_cfg, tmp_path):
    run = RunDir.create(tmp_path / "run", tiny_cfg("federation.timeout=2.0"), "local")
    with pytest.raises(FederationError, match=r"only 1 of 2 sites described themselves within 2s .*node\(s\) \[1002\]"):
        _run_on(_FlakyGrid(real.app, _nodes(2), silent=True), run)
    assert not (run.path / "sites.json").exists() and not run.checkpoint_path.exists()


@pytest.mark.parametrize("reason, expected", [
    ("DataError: x.npz: MedMNIST file does not exist", ("DataError", "x.npz: MedMNIST file does not exist")),
    ("<class 'fedsilo.data.errors.DataError'>:<'site 'h1': x.npz: bad'>", ("DataError", "site 'h1': x.npz: bad")),
    ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. "
     "Message: x.npz: bad'>", ("", "x.npz: bad")),
    ("<class 'ZeroDivisionError'>:<'division by zero'>", ("ZeroDivisionError", "division by zero")),
    ("node offline", ("", "node offline")),
])
def test_site_error_replies_lose_flowers_wrapping(reason, expected):
    assert unwrap_reason(reason) == expected


def test_a_deployed_sites_data_error_arrives_as_itself_with_the_sites_name(tiny_cfg, tiny_npz, tmp_path):
    run = RunDir.create(tmp_path / "run", tiny_cfg("federation.timeout=2.0"), "local")
    missing = tmp_path / "missing.npz"
    nodes = [{"data-path": str(missing), "site-name": "hospital-a", "site-index": 0},
             {"data-path": str(tiny_npz), "site-name": "hospital-b", "site-index": 1}]
    with pytest.raises(DataError) as info:
        _run_on(InProcessGrid(real.app, nodes), run)
    assert str(info.value) == f"site 'hospital-a': {missing}: the site's data-path does not exist"


def test_resume_refuses_a_different_set_of_sites(tiny_cfg, tmp_path):
    cfg = tiny_cfg("federation.rounds=3", "federation.site_names=['north','south']")

    def stop_after_1(rnd):
        if rnd == 1:
            raise RunInterrupted("stopped for the test")

    with pytest.raises(RunInterrupted):
        start_run(cfg, tmp_path / "cut", on_round_end=stop_after_1)
    app = ClientApp()

    @app.query("site_info")
    def info(msg: Message, context: Context) -> Message:  # another hospital answers in south's place
        reply = real.site_info(msg, context)
        site = reply.content.config_records["site"]
        if site["site-name"] == "south":
            site["site-name"] = "east"
        return reply

    run = RunDir.open(tmp_path / "cut")
    with pytest.raises(FederationError, match=r"started with sites \['north', 'south'\] but \['north', 'east'\]"):
        _run_on(InProcessGrid(app, _nodes(2)), run)
    assert torch.load(run.checkpoint_path, weights_only=False)["round"] == 1
