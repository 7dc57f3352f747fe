"""Using a trained run: kept round models, export (ONNX/TorchScript), the model card, test CIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsilo.cli import main
from fedsilo.inference.export import export_run
from fedsilo.report import write_run_files
from fedsilo.report.summary import final_rows
from fedsilo.run.folder import RunDir, RunDirError
from fedsilo.run.load import load_trained
from fedsilo.run.start import start_run
from fedsilo.tasks.classification.metrics import bootstrap_grading_ci, kappa_from_confusion, quadratic_kappa


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from helpers import make_tiny_medmnist, tiny_config

    npz = make_tiny_medmnist(tmp_path_factory.mktemp("data") / "tiny.npz")
    run = start_run(tiny_config(npz), tmp_path_factory.mktemp("runs") / "run")
    write_run_files(run.path)
    return run


def _test_images(run: RunDir) -> torch.Tensor:
    trained = load_trained(run.path)
    test = trained.task.federated_data().test
    x, _ = test.batch(torch.arange(len(test)), torch.device("cpu"))
    return x


def test_every_evaluation_round_is_kept_and_loadable(finished_run):
    run = finished_run
    assert run.saved_rounds() == [1, 2]
    final = load_trained(run.path)
    last = load_trained(run.path, round_=2)
    first = load_trained(run.path, round_=1)
    for k, v in final.model.state_dict().items():
        assert torch.equal(v, last.model.state_dict()[k]), k
    assert any(not torch.equal(v, first.model.state_dict()[k]) for k, v in final.model.state_dict().items())
    assert (final.round, first.round) == (2, 1)
    with pytest.raises(RunDirError, match=r"round 7 .* kept rounds: \[1, 2\]"):
        load_trained(run.path, round_=7)
    with pytest.raises(RunDirError, match="site 'nowhere' has no model of its own"):
        load_trained(run.path, site="nowhere")


def test_onnx_export_reproduces_pytorch_on_test_images(finished_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export_run(finished_run.path, "onnx", tmp_path / "onnx")
    contract = json.loads((tmp_path / "onnx" / "contract-onnx.json").read_text())
    assert contract["input"]["shape"] == ["batch", 3, 12, 12]
    assert contract["output"]["classes"][4] == "4 proliferative"
    assert contract["source"]["round"] == 2 and contract["check"]["max_abs_difference_to_pytorch"] < 1e-3
    x = _test_images(finished_run)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        expected = load_trained(finished_run.path).model(x).numpy()
    assert got.shape == (len(x), 5)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torchscript_export_and_no_overwrite(finished_run, tmp_path):
    path = export_run(finished_run.path, "torchscript", tmp_path, round_=1)
    x = _test_images(finished_run)
    with torch.no_grad():
        expected = load_trained(finished_run.path, round_=1).model(x)
        got = torch.jit.load(str(path))(x)
    torch.testing.assert_close(got, expected)
    before = path.read_bytes()
    with pytest.raises(RunDirError, match="exists; export into another --out folder"):
        export_run(finished_run.path, "torchscript", tmp_path)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="format must be one of onnx, torchscript, got 'pickle'"):
        export_run(finished_run.path, "pickle", tmp_path / "x")


def test_export_shows_its_stages_and_none_of_the_exporters_internals(finished_run, tmp_path):
    """Run as a user would (a fresh process): stderr holds fedsilo's own lines only, no torch/onnx
    warnings or optimisation-pass logs."""
    import re
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    done = subprocess.run([sys.executable, "-m", "fedsilo", "export", str(finished_run.path), "--out",
                           str(tmp_path / "x")], capture_output=True, text=True, check=True)
    assert done.stdout.startswith(f"Exported: {tmp_path / 'x' / 'model.onnx'}")
    lines = done.stderr.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d INFO fedsilo\.inference\.export: ", line) for line in lines), lines
    assert [line.split(": ", 1)[1].split(" ")[0] for line in lines] == ["Loading", "Exporting", "Checking", "Exported"]


def test_quiet_exporter_keeps_errors_and_hides_the_rest(caplog):
    import logging
    import warnings

    from fedsilo.inference.export import quiet_exporter

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # not -v: debug logging shows everything
    try:
        with caplog.at_level(logging.INFO), quiet_exporter():
            logging.getLogger("onnxscript.optimizer").info("pass applied")
            logging.getLogger("torch.onnx._internal").warning("torchvision is not installed")
            logging.getLogger("onnx_ir").error("a real failure")
            warnings.warn("deprecated inside torch", FutureWarning, stacklevel=1)
    finally:
        root.setLevel(level)
    assert [r.getMessage() for r in caplog.records] == ["a real failure"]
    assert logging.getLogger("onnxscript").level == logging.NOTSET  # levels are restored


def test_using_a_smoke_test_runs_model_warns(finished_run, tmp_path, caplog):
    import shutil

    copy = tmp_path / "smoke"
    shutil.copytree(finished_run.path, copy)
    config = copy / "config.toml"
    config.write_text(config.read_text().replace("smoke_test = false", "smoke_test = true"))
    with caplog.at_level("WARNING", logger="fedsilo.run.load"):
        load_trained(finished_run.path)
        assert not caplog.records
        load_trained(copy)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"{finished_run.cfg.experiment.name} is a smoke test (experiment.smoke_test = true)"]
    assert "its model and what it makes say nothing about the method" in caplog.records[0].getMessage()


def test_export_cli_errors_are_user_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_model_card_quotes_the_run(finished_run):
    card = (finished_run.path / "MODEL_CARD.md").read_text()
    for heading in ("## Model", "## Data", "## Training", "## Privacy", "## Evaluation", "## Intended use",
                    "## Known limitations"):
        assert heading in card
    glob = final_rows(finished_run)["global"]
    assert f"| kappa | {glob['test_kappa']:.4f} | {glob['test_kappa_ci_low']:.3f} – {glob['test_kappa_ci_high']:.3f} |" in card
    assert "No formal differential privacy" in card
    sites = finished_run.read_sites()
    assert [s["name"] for s in sites] == ["site-1", "site-2"]
    for s in sites:
        assert f"| {s['name']} | {s['num_train']} | {s['num_val']} |" in card


def test_kappa_from_confusion_matches_torchmetrics():
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(0, 5, (400,), generator=gen)
    p = torch.where(torch.rand(400, generator=gen) < 0.5, t, torch.randint(0, 5, (400,), generator=gen))
    conf = np.zeros((5, 5))
    np.add.at(conf, (t.numpy(), p.numpy()), 1)
    assert kappa_from_confusion(conf) == pytest.approx(quadratic_kappa(p, t, 5), abs=1e-6)
    # perfect agreement: kappa 1; constant prediction and truth: undefined
    assert kappa_from_confusion(np.diag([3.0, 2, 0, 0, 1])) == pytest.approx(1.0)
    assert np.isnan(kappa_from_confusion(np.diag([4.0, 0, 0, 0, 0])))


def test_bootstrap_interval_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.7, t, rng.integers(0, 5, 300))
    ci = bootstrap_grading_ci(p, t, 5, 500, seed=1)
    acc = float((p == t).mean())
    assert ci["accuracy_ci_low"] < acc < ci["accuracy_ci_high"]
    # the 95% interval of a proportion over 300 samples is about +-1.96 sqrt(p(1-p)/n) wide
    half = 1.96 * np.sqrt(acc * (1 - acc) / 300)
    assert (ci["accuracy_ci_high"] - ci["accuracy_ci_low"]) / 2 == pytest.approx(half, rel=0.2)
    assert ci == bootstrap_grading_ci(p, t, 5, 500, seed=1)
    with pytest.raises(ValueError, match="n_bootstrap must be >= 1, got 0"):
        bootstrap_grading_ci(p, t, 5, 0, seed=1)
