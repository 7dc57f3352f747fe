"""Reports: self-contained HTML for runs, sweeps and comparisons."""

from __future__ import annotations

import re

import pytest

from fedsilo.cli import main
from fedsilo.report import write_run_files
from fedsilo.report.glossary import define
from fedsilo.report.html import markdown_tables
from fedsilo.run.start import start_run


@pytest.fixture
def two_runs(tiny_cfg, tmp_path):
    a = start_run(tiny_cfg(), tmp_path / "a")
    b = start_run(tiny_cfg("federation.strategy.name=fedmedian"), tmp_path / "b")
    write_run_files(a.path)
    write_run_files(b.path)
    return a, b


def test_run_report_is_written_and_self_contained(two_runs):
    a, _ = two_runs
    html = (a.path / "report.html").read_text()
    for title in ("Experiment", "Data at each site", "Convergence", "Final metrics", "Privacy", "Metric definitions"):
        assert f"<h2>{title}</h2>" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 2  # partition chart and curves embedded
    assert "src=\"http" not in html and "<link" not in html  # nothing external
    assert "Quadratic-weighted Cohen&#x27;s kappa" in html
    assert a.cfg.experiment.name in html and "fedavg" in html


def test_report_and_compare_commands(two_runs, tmp_path, capsys):
    a, b = two_runs
    (a.path / "report.html").unlink()
    assert main(["report", str(a.path)]) == 0
    assert (a.path / "report.html").is_file()
    out = tmp_path / "cmp.html"
    assert main(["compare", str(a.path), str(b.path), "--out", str(out)]) == 0
    html = out.read_text()
    assert "fedmedian" in html and "fedavg" in html and "test_kappa" in html
    assert main(["compare", str(a.path), str(b.path), "--out", str(out)]) == 2  # never overwritten
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_compare_writes_beside_the_runs_and_refuses_runs_of_different_tasks(two_runs, tmp_path, capsys, monkeypatch):
    from fedsilo.run.start import start_run
    from helpers import seg_config

    a, b = two_runs
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # e.g. a checkout's root
    assert main(["compare", str(a.path), str(b.path)]) == 0
    written = sorted(a.path.parent.glob("compare-*.html"))
    assert len(written) == 1 and not list((tmp_path / "elsewhere").iterdir())  # beside the runs, not in cwd
    seg = start_run(seg_config("federation.rounds=1"), a.path.parent / "seg")
    capsys.readouterr()
    assert main(["compare", str(a.path), str(seg.path), "--out", str(tmp_path / "mixed.html")]) == 2
    err = capsys.readouterr().err
    assert "compare needs runs of one task" in err and f"{seg.path.name}: segmentation" in err
    assert not (tmp_path / "mixed.html").exists()


def test_markdown_tables_to_html():
    html = markdown_tables("# T\n\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert "<h2>T</h2>" in html and "<p>text</p>" in html
    assert "<th>a</th><th>b</th>" in html and "<td>1</td><td>2</td>" in html


def test_glossary_defines_prefixed_metrics():
    assert "kappa" in define("test_kappa")
    assert "mm" in define("val_hd95_mr_liver")
    assert define("test_unknown_thing") is None
    assert "norm bound rejected" in define("sites_norm_rejected") and "L2 norm" in define("update_norm")
    assert "rejected by validation" in define("sites_rejected")
    # attack and audit numbers are not read as grading accuracy or as the budget spent
    assert "attack" in define("balanced_accuracy") and "0.5 = chance" in define("logan_balanced_accuracy")
    assert "DR grade" in define("test_accuracy")
    assert "lower bound" in define("audit_dp_canary_epsilon_lower_bound")
    assert "spent" in define("train_epsilon") and "clipped" in define("secagg_clipped")
    assert "below 0.5" in define("audit_dcr_auc") and "membership" in define("audit_loss_auc")
    assert "training objective" in define("train_d_loss") and "training objective" in define("val_loss")


def test_sweep_report_plots_privacy_utility_when_epsilon_is_swept(tmp_path):
    import csv
    import json

    from fedsilo.report.html import _privacy_utility

    (tmp_path / "sweep.json").write_text(json.dumps({"config": "c.toml", "grid": {"privacy.epsilon": ["inf", "8", "2"]},
                                                     "modes": ["federated"], "seeds": [0, 1], "overrides": []}))
    with (tmp_path / "summary.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["privacy.epsilon", "mode", "seed", "run", "test_kappa", "test_kappa_ci_low", "audit_lira_auc"])
        for eps, q, a in (("inf", 0.6, 0.7), ("8", 0.5, 0.55), ("2", 0.3, 0.5)):
            for seed in (0, 1):
                w.writerow([eps, "federated", seed, f"r{eps}{seed}", q + 0.01 * seed, 0.1, a])
    html = _privacy_utility(tmp_path)
    assert "data:image/png;base64," in html and "highest AUC" in html
    # a sweep that did not vary epsilon gets no such section
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "c.toml", "grid": {"federation.num_sites": ["3"]},
                                                     "modes": ["federated"], "seeds": [0], "overrides": []}))
    assert _privacy_utility(tmp_path) == ""
