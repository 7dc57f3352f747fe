"""Adding a task is one folder plus one registry line: a task defined in the test suite
(``tests/toy_task``) runs on every engine and mode and gets a report, with no other change."""

from __future__ import annotations

import json

import pytest
import torch

from fedsilo.config import ConfigError, config_from_dict
from fedsilo.registry import TASKS
from fedsilo.report import write_run_files
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(TASKS, "toy-regression", "toy_task.task:ToyRegression")  # the one registry line
    return lambda *overrides: config_from_dict({
        "experiment": {"name": "toy", "task": "toy-regression", "seed": 0, "threads": 1},
        "federation": {"num_sites": 3, "rounds": 4},
        "train": {"batch_size": 16, "lr": 0.05, "local_epochs": 1, "optimizer": "sgd"},
    }, list(overrides))


def _mse(run, rnd):
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    return [r["test_mse"] for r in rows if r["round"] == rnd and r["scope"] == "global" and "test_mse" in r][0]


@pytest.mark.parametrize("mode", ["federated", "centralised", "local"])
def test_a_task_from_outside_the_package_trains_in_every_mode(toy, tmp_path, mode):
    run = start_run(toy(f"experiment.mode={mode}"), tmp_path / mode)
    final = torch.load(run.final_path, weights_only=False)
    if mode == "local":
        assert set(final["site_models"]) == {"site-1", "site-2", "site-3"}
    else:
        assert _mse(run, 4) < 0.2 * _mse(run, 0)  # it learnt w (the initial model's MSE is ~15)
    write_run_files(run.path)  # the default presenter reports it
    html = (run.path / "report.html").read_text()
    assert "toy" in html and "Convergence" in html and (run.path / "MODEL_CARD.md").is_file()


def test_it_resumes_bit_identically(toy, tmp_path):
    full = start_run(toy(), tmp_path / "full")

    def stop(rnd):
        if rnd == 2:
            raise RunInterrupted("stop")

    with pytest.raises(RunInterrupted):
        start_run(toy(), tmp_path / "cut", on_round_end=stop)
    resume_run(tmp_path / "cut")
    a = torch.load(full.final_path, weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unregistered_task_name_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"experiment.task must be one of .*got 'segmentaton'; did you mean "
                                          r"'segmentation'\?"):
        config_from_dict({"experiment": {"task": "segmentaton"}})
