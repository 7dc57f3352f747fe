"""`fedsilo audit` on real (tiny) runs, its files and errors, and audit columns in privacy sweeps."""

from __future__ import annotations

import json

import pytest

from fedsilo.audit import registry as audit_mod
from fedsilo.audit.registry import AuditOutcome, audits_for, register_audit, run_audit
from fedsilo.cli import main
from fedsilo.config import ConfigError
from fedsilo.report.summary import final_metrics
from fedsilo.run.folder import RunDir, RunDirError
from fedsilo.run.start import start_run


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main` installs a handler on the (captured) stderr; put the root logger back afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


FAST = ("audit.reference_models=2", "audit.inversion_iterations=20", "audit.inversion_batch_sizes=[1, 2]",
        "audit.max_samples=40")


def test_audit_cli_writes_json_markdown_and_plots(tiny_cfg, tmp_path, capsys):
    run = start_run(tiny_cfg("privacy.mode=sample", "privacy.noise_multiplier=1.0", "train.local_epochs=1"),
                    tmp_path / "run")
    argv = ["audit", str(run.path), *[a for s in FAST for a in ("--set", s)]]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "# Privacy audit" in out and "| loss | membership |" in out
    # progress while it works: each attack, each reference model, each inversion trial
    for line in ("audit: reference models 2/2 (", "audit 1/3: membership done (",
                 "audit: gradient inversion 4/4: batch 2, 1 step(s), clip 1 + noise 1 (",
                 "audit 3/3: dp-canary done ("):
        assert line in captured.err, line
    assert "<th>loss</th>" in (run.path / "report.html").read_text()  # the report shows the audit at once
    report = json.loads((run.path / "audit.json").read_text())
    assert set(report["attacks"]) == {"loss", "lira", "rmia"}
    loss = report["attacks"]["loss"]
    # 40 per side requested, 39 of them grade-matched (as many of each grade as the other side has)
    assert loss["auc_ci_low"] < loss["auc"] < loss["auc_ci_high"] and loss["n_pos"] == loss["n_neg"] == 39
    # each reference model trains on half the pool (39), the attacked model on every site's images
    assert report["attacks"]["lira"]["details"]["bound"].startswith("lower bound: each reference model trains on 39")
    assert "bound" not in loss["details"]
    assert report["privacy"]["mode"] == "sample" and report["privacy"]["epsilon"] > 0
    assert set(report["privacy"]["site_epsilon"]) == {"site-1", "site-2"}
    gi = report["tables"]["Gradient inversion"]
    assert [r[:3] for r in gi["rows"]] == [[1, 1, "none"], [1, 1, "clip 1 + noise 1"], [2, 1, "none"],
                                           [2, 1, "clip 1 + noise 1"]]
    assert {"loss_auc", "rmia_auc", "lira_auc", "gi_psnr", "gi_psnr_dp"} <= set(report["summary"])
    for f in report["files"]:
        assert (run.path / f).stat().st_size > 1000, f
    assert report["settings"]["reference_models"] == 2  # the overrides were used
    # final_metrics picks up the spent epsilon and the audit for sweep tables
    metrics = final_metrics(RunDir.open(run.path))
    assert metrics["privacy_epsilon"] == pytest.approx(report["privacy"]["epsilon"])
    assert metrics["audit_loss_auc"] == pytest.approx(loss["auc"])


def test_local_mode_audits_a_sites_own_model(tiny_cfg, tmp_path):
    run = start_run(tiny_cfg("experiment.mode=local", "federation.rounds=1"), tmp_path / "run")
    report = run_audit(run.path, ["membership"], ["audit.reference_models=0", "audit.max_samples=20"])
    assert set(report["attacks"]) == {"loss"} and report["attacks"]["loss"]["n_pos"] == 18  # grade-matched of 20
    assert report["privacy"]["epsilon"] == "inf"  # no DP (JSON has no infinity)
    import torch

    final = torch.load(run.path / "final.pt", weights_only=False)
    final["site_models"] = {}
    torch.save(final, run.path / "final.pt")
    with pytest.raises(RunDirError, match="must hold per-site models"):
        run_audit(run.path, ["membership"])


def test_audit_errors(tiny_cfg, tmp_path, monkeypatch):
    run = start_run(tiny_cfg("federation.rounds=1"), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"audit.attacks must be among membership, gradient_inversion, dp-canary, got \['lira'\]"):
        run_audit(run.path, ["lira"])
    with pytest.raises(ConfigError, match="only changes audit.\\* keys"):
        run_audit(run.path, overrides=["train.lr=0.1"])
    (run.path / "final.pt").unlink()
    with pytest.raises(RunDirError, match="has not finished"):
        run_audit(run.path)
    start_run(tiny_cfg("federation.rounds=1"), tmp_path / "run2")
    monkeypatch.setattr(audit_mod, "audits_for", lambda task: {})
    with pytest.raises(ConfigError, match="no audit is registered for task 'classification'"):
        run_audit(tmp_path / "run2")


def test_plugins_register_by_task():
    @register_audit("toy-task", "noop")
    def noop(ctx):
        return AuditOutcome(summary={"x": 1.0})

    from fedsilo.audit.tasks.canary import dp_canary

    assert audits_for("toy-task") == {"noop": noop, "dp-canary": dp_canary}  # the canary audit serves every task
    assert set(audits_for("classification")) == {"membership", "gradient_inversion", "dp-canary"}


def test_privacy_sweep_over_epsilon_with_audit_columns(tiny_npz, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""[experiment]
name = "sweep"
threads = 1
[data]
source = "medmnist"
path = "{tiny_npz}"
image_size = 12
val_fraction = 0.2
[federation]
num_sites = 2
rounds = 1
[train]
batch_size = 8
local_epochs = 1
[classifier]
width = 4
depth = 2
[privacy]
mode = "sample"
[audit]
attacks = ["membership"]
reference_models = 0
max_samples = 20
"""
    )
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "sw"), "--grid", "privacy.epsilon=inf,4",
                 "--modes", "federated", "--audit"]) == 0
    md = (tmp_path / "sw" / "summary.md").read_text()
    assert "privacy_epsilon" in md and "audit_loss_auc" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| epsilon=")}
    assert set(rows) == {"epsilon=inf", "epsilon=4"}
    assert (tmp_path / "sw" / "epsilon=inf" / "federated" / "seed-0" / "audit.json").exists()
    # one seed: no "mean ± std" claimed over a single value
    assert "One seed per setting" in md and "Mean ± std" not in md
    html = (tmp_path / "sw" / "report.html").read_text()
    assert "Comparison (one seed)" in html and "mean ± std over seeds" not in html


def test_gan_outcome_runs_every_gan_attack_for_a_plugin(tmp_path):
    """The shared GAN audit on toys: what the synthesis task's plug-in will call."""
    import torch

    from fedsilo.audit.registry import AuditContext
    from fedsilo.audit.tasks.gan import gan_outcome
    from fedsilo.config import config_from_dict
    from helpers import MixtureGenerator, overfit_discriminator

    images = torch.rand(180, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    members, nonmembers = images[:90], images[90:]
    cfg = config_from_dict({"audit": {"gan_samples": 500, "latent_steps": 100, "max_targets": 30}})
    ctx = AuditContext(RunDir(tmp_path, cfg), None, MixtureGenerator(members), {}, None, torch.device("cpu"),
                       tmp_path / "audit")
    out = gan_outcome(ctx, ctx.model, overfit_discriminator(members, 0), members, nonmembers)
    by_name = {r.name: r for r in out.attacks}
    assert set(by_name) == {"logan", "gan_leaks_blackbox", "gan_leaks_whitebox", "dcr", "real_vs_synthetic"}
    assert by_name["real_vs_synthetic"].kind == "realism" and by_name["dcr"].kind == "distance"
    for name in ("logan", "gan_leaks_blackbox", "gan_leaks_whitebox", "dcr"):
        assert by_name[name].auc > 0.9, name  # a memorising generator and an overfit discriminator
    assert out.summary["dcr_share_closer_to_train"] > 0.9
    assert out.summary["inversion_mse_members"] < out.summary["inversion_mse_nonmembers"]
    assert set(out.tables) == {"Model inversion (latent optimisation)", "Distance to closest record"}
    for f in out.files:
        assert (tmp_path / f).stat().st_size > 100


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_membership_attacks_on_an_untrained_model_are_at_chance(tmp_path, task):
    """An untrained model has seen no member, so the loss attack must score AUC 0.5 within its
    confidence interval: a pool whose two sides differ in anything but membership fails this."""
    import torch

    from fedsilo.audit.registry import AuditContext
    from fedsilo.run.folder import RunDir as Folder
    from fedsilo.run.load import initial_weights
    from fedsilo.tasks import make_task
    from helpers import SEG_SHAPE, phantom_classification_config, phantom_sites, seg_config

    settings = ("audit.reference_models=0", "audit.max_samples=200")
    cfg = (phantom_classification_config(*settings) if task == "classification"
           else seg_config(*settings, "data.volume.skip_empty=false",
                           sites=phantom_sites(("ct", "mr"), 8, list(SEG_SHAPE))))
    task_ = make_task(cfg)
    model = task_.build_model()
    model.load_state_dict(initial_weights(task_))
    ctx = AuditContext(Folder(tmp_path, cfg), task_, model.eval(), {}, None, torch.device("cpu"), tmp_path / "audit")
    outcome = audits_for(task)["membership"](ctx)
    (loss,) = [r for r in outcome.attacks if r.name == "loss"]
    summary = loss.summary()
    assert loss.n_pos == loss.n_neg >= 20
    assert summary["auc_ci_low"] <= 0.5 <= summary["auc_ci_high"], summary
