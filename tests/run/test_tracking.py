"""Experiment tracking (``experiment.tracking``): what a run logs is read back with each library's own reader."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

from fedsilo.config import ConfigError, absolute_paths
from fedsilo.report import write_run_files
from fedsilo.run.folder import RunDir
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run
from fedsilo.run.tracking import (
    GuardedTracker,
    NullTracker,
    check_tracking,
    config_params,
    make_tracker,
    numeric_metrics,
    read_state,
)
from fedsilo.run.tracking.mlflow_tracker import mlflow_store
from fedsilo.run.tracking.tensorboard_tracker import new_logdir


def _interrupted_then_resumed(cfg, out: Path) -> RunDir:
    """Run ``cfg`` for one round, stop it, resume it to the end and write its report and model card."""

    def stop(rnd: int) -> None:
        raise RunInterrupted("test")

    with pytest.raises(RunInterrupted):
        start_run(cfg, out, on_round_end=stop)
    run = resume_run(out)
    write_run_files(run.path)
    return run


def _recorded(run: RunDir, scope: str, key: str) -> list[tuple[int, float]]:
    """(round, value) of one metric as metrics.jsonl holds it."""
    return [(r["round"], r[key]) for r in run.read_metrics() if r["scope"] == scope and key in r]


def test_tensorboard_holds_the_runs_metrics_config_and_model_card(tiny_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run = _interrupted_then_resumed(tiny_cfg("experiment.tracking=tensorboard"), tmp_path / "run")
    logdir = run.path / "tensorboard"
    assert read_state(run.path) == {"tracking": "tensorboard", "logdir": str(logdir)}
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()

    for scope, key in (("global", "test_kappa"), ("site-1", "val_loss"), ("site-2", "train_loss")):
        expected = _recorded(run, scope, key)
        assert len(expected) >= 2
        logged = [(e.step, e.value) for e in acc.Scalars(f"{scope}/{key}")]  # each round once, after the resume too
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)

    hparams = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    values = hparams.session_start_info.hparams
    assert values["train.lr"].number_value == pytest.approx(0.01)
    assert values["federation.num_sites"].number_value == 2
    assert values["experiment.name"].string_value == "tiny"
    assert values["experiment.tracking"].string_value == "tensorboard"
    experiment = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert "global/test_kappa" in {m.name.tag for m in experiment.metric_infos}

    def text(tag: str) -> str:
        return acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()

    assert text("model_card") == (run.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert str((run.path / "report.html").resolve()) in text("report")
    assert 'name = "tiny"' in text("config")


def test_mlflow_run_holds_the_runs_metrics_params_and_artifacts(tiny_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    run = _interrupted_then_resumed(tiny_cfg("experiment.tracking=mlflow"), tmp_path / "run")
    state = read_state(run.path)
    assert state["uri"] == f"sqlite:///{(run.path / 'mlflow' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=state["uri"])
    logged = client.get_run(state["run_id"])  # the resumed run went on in the same MLflow run
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "run"
    assert client.get_experiment(logged.info.experiment_id).name == "tiny"

    for scope, key in (("global", "test_kappa"), ("site-1", "val_loss"), ("site-2", "train_loss")):
        expected = _recorded(run, scope, key)
        assert len(expected) >= 2
        history = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], f"{scope}/{key}"))
        assert history == expected

    params = logged.data.params
    assert params["train.lr"] == "0.01"
    assert params["federation.num_sites"] == "2"
    assert params["experiment.tracking"] == "mlflow"
    assert params["data.source"] == "medmnist"

    assert {f.path for f in client.list_artifacts(state["run_id"])} >= {"report.html", "MODEL_CARD.md",
                                                                        "config.toml"}
    local = client.download_artifacts(state["run_id"], "report.html", str(tmp_path))
    assert Path(local).read_bytes() == (run.path / "report.html").read_bytes()


def test_numeric_metrics_keep_finite_numbers_per_scope():
    scopes = {"global": {"test_kappa": 0.5, "stop_reason": "x", "nan": float("nan"), "missing": None,
                         "dice": {"liver": 0.25}},
              "site-1": {"num-examples": 60}}
    assert numeric_metrics(scopes) == {"global/test_kappa": 0.5, "global/dice.liver": 0.25,
                                       "site-1/num-examples": 60.0}


def test_config_params_flatten_the_resolved_config(tiny_cfg):
    params = config_params(tiny_cfg("federation.site_names=[\"a\",\"b\"]"))
    assert params["train.batch_size"] == 8
    assert params["experiment.tracking"] == "none"
    assert params["federation.site_names"] == '["a", "b"]'
    assert params["federation.strategy.name"] == "fedavg"


def test_missing_library_is_a_config_error_naming_the_extra(tiny_cfg, monkeypatch):
    real = importlib.import_module

    def no_mlflow(name, *args):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_mlflow)
    with pytest.raises(ConfigError, match=r"experiment.tracking = 'mlflow' needs the mlflow-skinny package.*"
                                          r"pip install 'fedsilo\[tracking\]'"):
        check_tracking(tiny_cfg("experiment.tracking=mlflow"))


def test_unknown_tracker_and_ignored_uri(tiny_cfg, caplog):
    with pytest.raises(ConfigError, match="experiment.tracking must be one of"):
        tiny_cfg("experiment.tracking=wandb")
    with pytest.raises(ValueError, match="experiment.tracking must be one of none, tensorboard, mlflow, got 'x'"):
        make_tracker("x")
    assert isinstance(make_tracker("none"), NullTracker)
    with caplog.at_level(logging.WARNING):
        check_tracking(tiny_cfg("experiment.tracking_uri=/tmp/tb"))
    assert "experiment.tracking_uri = '/tmp/tb' is ignored" in caplog.text


def test_a_failing_tracker_is_switched_off_not_the_run(caplog):
    calls = []

    class Broken(NullTracker):
        def log_round(self, rnd, scopes):
            calls.append(rnd)
            raise OSError("tracking server unreachable")

    tracker = GuardedTracker(Broken(), "mlflow")
    with caplog.at_level(logging.ERROR):
        tracker.log_round(1, {"global": {"a": 1.0}})
        tracker.log_round(2, {"global": {"a": 1.0}})
        tracker.close("finished")
    assert calls == [1]
    assert "Experiment tracking failed (log_round)" in caplog.text


def test_shared_locations(tiny_cfg, tmp_path):
    cfg = tiny_cfg("experiment.tracking=tensorboard", f"experiment.tracking_uri={tmp_path / 'tb'}")
    run_dir = tmp_path / "sweep" / "seed0"
    assert new_logdir(cfg, run_dir) == tmp_path / "tb" / "sweep" / "seed0"
    (tmp_path / "tb" / "sweep" / "seed0").mkdir(parents=True)
    assert new_logdir(cfg, run_dir) == tmp_path / "tb" / "sweep" / "seed0-2"  # never mixed into another run's

    db = tmp_path / "store" / "mlflow.db"
    uri, artifacts = mlflow_store(tiny_cfg("experiment.tracking=mlflow", f"experiment.tracking_uri=sqlite:///{db}"),
                                  run_dir)
    assert uri == f"sqlite:///{db}"
    assert artifacts == (tmp_path / "store" / "artifacts" / "tiny").as_uri()  # beside the database, not in ./mlruns
    assert mlflow_store(tiny_cfg("experiment.tracking_uri=http://host:5000"), run_dir) == ("http://host:5000", None)


def test_relative_tracking_locations_are_made_absolute(tiny_cfg, tmp_path):
    assert absolute_paths(tiny_cfg("experiment.tracking_uri=tb"), tmp_path).experiment.tracking_uri == str(
        tmp_path / "tb")
    assert absolute_paths(tiny_cfg("experiment.tracking_uri=sqlite:///db/m.db"),
                          tmp_path).experiment.tracking_uri == f"sqlite:///{tmp_path / 'db' / 'm.db'}"
    for uri in ("http://host:5000", f"sqlite:///{tmp_path}/m.db", "file:///x/mlruns"):
        assert absolute_paths(tiny_cfg(f"experiment.tracking_uri={uri}"), tmp_path).experiment.tracking_uri == uri


def test_a_tracker_that_cannot_start_stops_the_run_with_the_setting_named(tiny_cfg, tmp_path):
    class Unreachable(NullTracker):
        def start(self, cfg, run_dir, *, first_round=0):
            raise ConnectionError("connection refused")

    cfg = tiny_cfg("experiment.tracking=mlflow", "experiment.tracking_uri=http://localhost:9")
    with pytest.raises(ConfigError, match=r"experiment.tracking = 'mlflow' could not start at http://localhost:9 "
                                          r"\(experiment.tracking_uri\): ConnectionError: connection refused"):
        GuardedTracker(Unreachable(), "mlflow").start(cfg, tmp_path)
