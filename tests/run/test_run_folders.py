"""Run folders (atomic files, metrics) and the command line (clear errors, no tracebacks)."""

from __future__ import annotations

import json
import os

import pytest

from fedsilo.cli import main
from fedsilo.config import config_from_dict
from fedsilo.fileio import atomic_write_bytes
from fedsilo.run.folder import RunDir, RunDirError, round_finished


def test_atomic_write_replaces_whole_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left behind


def test_metrics_rows_and_truncation(tmp_path):
    run = RunDir.create(tmp_path / "r", config_from_dict({}), "local")
    run.log_metrics(1, "global", {"a": 1.0, "b": float("nan")})
    run.log_metrics(2, "site-1", {"a": 2})
    with run.metrics_path.open("a") as fh:
        fh.write('{"round": 3, "sco')  # torn line of a killed process
    rows = run.read_metrics()
    assert rows == [{"round": 1, "scope": "global", "a": 1.0, "b": None}, {"round": 2, "scope": "site-1", "a": 2}]
    run.truncate_metrics(1)
    assert run.read_metrics() == rows[:1]


def test_open_rejects_non_run_folder(tmp_path):
    with pytest.raises(RunDirError, match="is not a fedsilo run folder"):
        RunDir.open(tmp_path)


def test_corrupt_checkpoint_is_reported(tmp_path):
    run = RunDir.create(tmp_path / "r", config_from_dict({}), "local")
    run.checkpoint_path.write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="cannot be read"):
        run.load_checkpoint()


def _write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_cli_unknown_key_fails_fast_without_traceback(tmp_path, capsys):
    cfg = _write(tmp_path, "[federation.strategy]\nnam = 'fedavg'\n")
    code = main(["run", cfg, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown key 'federation.strategy.nam', did you mean 'name'?" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_bad_override_and_bad_data(tmp_path, capsys):
    cfg = _write(tmp_path, "[experiment]\nname = 'x'\n")
    assert main(["run", cfg, "--out", str(tmp_path / "o1"), "--set", "federation.rounds=zero"]) == 2
    assert "federation.rounds must be an integer, got 'zero'" in capsys.readouterr().err
    code = main(["run", cfg, "--out", str(tmp_path / "o2"), "--set", "data.source=medmnist",
                 "--set", f"data.path={tmp_path / 'missing.npz'}"])
    assert code == 2
    err = capsys.readouterr().err
    # the data error itself (not a site's error reply), and no run folder left to block the rerun
    assert "fedsilo: error: " + str(tmp_path / "missing.npz") + ": MedMNIST file does not exist" in err
    assert "describe itself" not in err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("args, message", [
    (["run"], "fedsilo run needs a CONFIG file"),
    (["run", "x.toml", "--resume", "runs/x"], "--resume takes only the run folder"),
    (["deploy", "run", "--certs", "c"], "fedsilo deploy run needs CONFIG and --out"),
    (["deploy", "run", "x.toml", "--certs", "c", "--resume", "runs/x"], "--resume takes only the run folder"),
    (["data", "phantom", "--kind", "abdomen", "--out", "p", "--shape", "32x128"], "--shape must look like DxHxW"),
    (["data", "phantom", "--kind", "abdomen", "--out", "p", "--shape", "32xax9"], "--shape must look like DxHxW"),
])
def test_cli_usage_errors_exit_2_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_run_and_refuse_existing(tiny_npz, tmp_path, capsys):
    cfg = _write(tmp_path, f"""
[experiment]
name = "cli"
threads = 1
[data]
source = "medmnist"
path = "{tiny_npz}"
image_size = 12
[federation]
num_sites = 2
rounds = 1
[classifier]
width = 4
depth = 2
""")
    out = tmp_path / "run"
    assert main(["run", cfg, "--out", str(out), "--set", "train.batch_size=16"]) == 0
    printed = capsys.readouterr().out
    assert "Final metrics" in printed and "site-1" in printed and f"Results: {out}" in printed
    assert "batch_size = 16" in (out / "config.toml").read_text()
    assert main(["run", cfg, "--out", str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["run", "--resume", str(out)]) == 2
    assert "already finished all 1 rounds" in capsys.readouterr().err


def test_cli_sweep_table(tiny_cfg, tiny_npz, tmp_path, capsys):
    cfg = _write(tmp_path, f"""
[experiment]
name = "sw"
threads = 1
[data]
source = "medmnist"
path = "{tiny_npz}"
image_size = 12
[federation]
num_sites = 2
rounds = 2
[train]
batch_size = 8
local_epochs = 2
lr = 0.01
[classifier]
width = 4
depth = 2
""")
    out = tmp_path / "sweep"
    code = main(["sweep", cfg, "--out", str(out), "--grid", "federation.strategy.name=fedavg,fedmedian",
                 "--modes", "federated,centralised", "--seeds", "2"])
    assert code == 0
    md = (out / "summary.md").read_text()
    assert "| name=fedavg | federated | 2 |" in md and "| name=fedmedian | centralised | 2 | " in md
    assert "100.0%" in md  # centralised is 100% of itself
    assert "Mean ± std over seeds of the final round" in md  # 2 seeds: a spread to show
    lines = (out / "summary.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["seeds"] == [0, 1]
    # a re-run keeps finished runs; a different sweep into the same folder is refused
    assert main(["sweep", cfg, "--out", str(out), "--grid", "federation.strategy.name=fedavg,fedmedian",
                 "--modes", "federated,centralised", "--seeds", "2"]) == 0
    assert main(["sweep", cfg, "--out", str(out), "--seeds", "3"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err


def test_selected_metrics_pick_the_best_validation_round(tmp_path):
    from fedsilo.report.summary import selected_metrics

    run = RunDir.create(tmp_path / "r", config_from_dict({}), "local")
    for rnd, val, test in ((1, 0.2, 0.3), (2, 0.6, 0.4), (3, 0.5, 0.9)):
        run.log_metrics(rnd, "global", {"val_kappa": val})
        run.log_metrics(rnd, "global", {"test_kappa": test, "test_accuracy": test / 2})
    assert selected_metrics(run, "kappa") == {"sel_test_accuracy": 0.2, "sel_test_kappa": 0.4, "sel_round": 2.0}
    assert selected_metrics(run, "kappa", higher_is_better=False)["sel_round"] == 1.0
    assert selected_metrics(run, "dice") == {}


_TINY = """
[experiment]
name = "cli"
threads = 1
[data]
source = "medmnist"
path = "{npz}"
image_size = 12
[federation]
num_sites = 2
rounds = 1
[classifier]
width = 4
depth = 2
"""


def test_round_finished_counts_checkpoints_models_and_metrics_of_round_1(tmp_path):
    run = RunDir.create(tmp_path / "r", config_from_dict({}), "local")
    assert not round_finished(run.path)
    run.log_metrics(0, "global", {"test_accuracy": 0.2})  # the evaluation before training
    assert not round_finished(run.path)
    run.log_metrics(1, "global", {"test_accuracy": 0.3})
    assert round_finished(run.path)
    other = RunDir.create(tmp_path / "s", config_from_dict({}), "local")
    other.save_checkpoint({"round": 1})
    assert round_finished(other.path)


def test_a_folder_without_a_finished_round_is_reused_and_one_with_results_is_not(tmp_path, caplog):
    # left by a start stopped before its first round (e.g. Ctrl-C): reused, with a warning
    first = RunDir.create(tmp_path / "r", config_from_dict({"experiment": {"name": "first"}}), "local")
    first.log_metrics(0, "global", {"test_accuracy": 0.2})
    first.write_sites([{"name": "site-1"}])
    with caplog.at_level("WARNING", logger="fedsilo.run.folder"):
        again = RunDir.create(tmp_path / "r", config_from_dict({"experiment": {"name": "second"}}), "local")
    assert "Reusing run folder" in caplog.text and "no round finished" in caplog.text
    assert again.read_metrics() == [] and again.read_sites() == []
    assert RunDir.open(tmp_path / "r").cfg.experiment.name == "second"
    # a round finished: never reused, never cleared
    again.log_metrics(1, "global", {"test_accuracy": 0.3})
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        RunDir.create(tmp_path / "r", config_from_dict({}), "local")
    assert len(again.read_metrics()) == 1
    # a folder that is not a run folder is never reused
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        RunDir.create(tmp_path / "mine", config_from_dict({}), "local")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_cli_failure_before_the_first_round_removes_the_folder_and_says_so(tiny_npz, tmp_path, capsys,
                                                                           monkeypatch):
    import fedsilo.run.start as start
    from fedsilo.rounds import FederationError

    cfg = _write(tmp_path, _TINY.format(npz=tiny_npz))
    out = tmp_path / "run"
    real_execute = start.execute

    def fails_in_round_1(run, engine, on_round_end=None, cluster=None):
        run.write_sites([{"name": "site-1"}])
        raise FederationError("site-2 failed in round 1")

    monkeypatch.setattr(start, "execute", fails_in_round_1)
    assert main(["run", cfg, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "fedsilo: error: site-2 failed in round 1" in err
    assert f"fedsilo: No round finished, so the run folder {out} was removed" in err
    assert not out.exists()
    # the corrected rerun uses the same --out
    monkeypatch.setattr(start, "execute", real_execute)
    assert main(["run", cfg, "--out", str(out)]) == 0
    assert round_finished(out)
    capsys.readouterr()
    # a failure after a finished round keeps everything
    monkeypatch.setattr(start, "execute", fails_in_round_1)
    (out / "final.pt").unlink()
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "site-2 failed in round 1" in err and "No round finished" not in err
    kept = RunDir.open(out)
    assert kept.load_checkpoint()["round"] == kept.cfg.federation.rounds  # the finished rounds are kept


def test_cli_resume_of_a_folder_without_a_finished_round_says_how_to_start_again(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    out = tmp_path / "run"
    RunDir.create(out, config_from_dict({"data": {"source": "medmnist", "path": str(missing)}}), "local")
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"fedsilo: error: {missing}: MedMNIST file does not exist" in err
    assert f"No round finished in {out}; it holds no results" in err
    assert f"start again with `fedsilo run CONFIG --out {out}`" in err
    assert (out / "config.toml").exists()  # resume never deletes the folder it was pointed at


@pytest.mark.parametrize("smoke", [True, False])
def test_a_smoke_test_config_says_so_when_it_runs(tiny_cfg, tmp_path, monkeypatch, caplog, smoke):
    import fedsilo.run.start as start

    monkeypatch.setattr(start, "execute", lambda run, engine, on_round_end=None, cluster=None: None)
    with caplog.at_level("WARNING", logger="fedsilo.run.load"):
        start.start_run(tiny_cfg(f"experiment.smoke_test={str(smoke).lower()}"), tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records if "smoke test" in r.getMessage()]
    assert warned == ([f"{tiny_cfg().experiment.name} is a smoke test (experiment.smoke_test = true): sized to "
                       "show that every step runs, so its metrics say nothing about the method; use a full config "
                       "for results"] if smoke else [])
