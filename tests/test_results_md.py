"""benchmarks/RESULTS.md: its generated contents, and the scripts that build headline tables from run folders."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from benchmarks import fedgin_chaos_schedule, results_toc, retinamnist_grading
from benchmarks.common import write_section
from benchmarks.run_stats import seed_stats

from fedsilo.config import load_config
from fedsilo.config.loader import dumps

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


# -- contents ---------------------------------------------------------------------------------


def test_committed_contents_list_every_section_in_order_and_are_in_sync():
    text = RESULTS.read_text(encoding="utf-8")
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    block = text[text.index(results_toc.BEGIN):text.index(results_toc.END)]
    links = re.findall(r"^- \[(.+)\]\(#([^)]+)\)", block, re.M)
    assert [title for title, _ in links] == headings
    assert len(headings) >= 20
    assert len({a for _, a in links}) == len(links)  # every anchor leads to one section
    assert results_toc.with_contents(text) == text, "run `python -m benchmarks.results_toc`"
    assert text.index(results_toc.END) < text.index("\n## ")  # the contents come first
    # the hand-made headline sections are marked so that their script can replace them
    assert "<!-- bench:retinamnist-grading -->" in text and "<!-- /bench:retinamnist-grading -->" in text


def test_anchors_follow_github():
    seen: dict[str, int] = {}
    assert (results_toc.anchor("`make bench`: every benchmark in one run (issue 9)", seen)
            == "make-bench-every-benchmark-in-one-run-issue-9")
    assert (results_toc.anchor("FedGIN on CHAOS MRI + phantom CT, GIN probability 0.5", seen)
            == "fedgin-on-chaos-mri--phantom-ct-gin-probability-05")
    assert results_toc.anchor("Profile of the engine's overhead", seen) == "profile-of-the-engines-overhead"
    assert results_toc.anchor("Results", seen) == "results"
    assert results_toc.anchor("Results", seen) == "results-1"


def test_writing_a_section_regenerates_the_contents(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nIntro.\n\n```\n## not a heading (code)\n```\n", encoding="utf-8")
    write_section("one", "First study (issue 1)", "cmd one", "body one", 0.0, md)
    write_section("two", "Second: study (issue 2)", "cmd two", "body two", 0.0, md)
    text = md.read_text(encoding="utf-8")
    today = dt.date.today().isoformat()
    assert re.search(rf"- \[First study \(issue 1\)\]\(#first-study-issue-1\) — {today}, commit \w+\n"
                     rf"- \[Second: study \(issue 2\)\]\(#second-study-issue-2\) — {today}, commit \w+\n", text)
    assert "not a heading" not in text[text.index(results_toc.BEGIN):text.index(results_toc.END)]
    assert text.index(results_toc.END) < text.index("## First")
    write_section("one", "First study, renamed (issue 1)", "cmd", "new body", 0.0, md)
    assert "- [First study, renamed (issue 1)](#first-study-renamed-issue-1)" in md.read_text(encoding="utf-8")


def test_results_toc_command_checks_and_regenerates(tmp_path, caplog):
    md = tmp_path / "R.md"
    md.write_text("# R\n\n## A (issue 1)\n\n- Date: 2026-11-22; commit abc1234; took 3 s\n", encoding="utf-8")
    assert results_toc.main(["--file", str(md), "--check"]) == 1
    assert results_toc.main(["--file", str(md)]) == 0
    assert "- [A (issue 1)](#a-issue-1) — 2026-11-22, commit abc1234" in md.read_text(encoding="utf-8")
    assert results_toc.main(["--file", str(md), "--check"]) == 0
    assert results_toc.main(["--file", str(tmp_path / "none.md")]) == 2
    assert "no such file" in caplog.text


# -- statistics over seeds ----------------------------------------------------------------------


def test_seed_stats_give_the_t_interval():
    s = seed_stats([0.4, 0.5, 0.6])
    assert (s.n, round(s.mean, 6), round(s.std, 6)) == (3, 0.5, 0.1)
    assert (s.pm(), s.ci()) == ("0.500 ± 0.100", "[0.252, 0.748]")  # t(0.975, 2) = 4.303
    one = seed_stats([0.7, float("nan")])
    assert (one.n, one.pm(), one.ci()) == (1, "0.700", "– (one seed)")


# -- synthetic run folders ----------------------------------------------------------------------


def fake_run(path: Path, config: str, sets: list[str], rows: list[dict], minutes: float = 10.0) -> None:
    """A finished run folder: resolved config, env.json, metrics.jsonl and final.pt (``minutes`` after start)."""
    path.mkdir(parents=True)
    (path / "config.toml").write_text(dumps(load_config(REPO / config, sets)), encoding="utf-8")
    env = {"start_time": START.isoformat(), "git": {"commit": "abcdef1" + "0" * 33}}
    (path / "env.json").write_text(json.dumps(env), encoding="utf-8")
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (path / "final.pt").write_bytes(b"")
    end = START.timestamp() + 60 * minutes
    os.utime(path / "final.pt", (end, end))


def write_spec(folder: Path, spec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(asdict(spec)), encoding="utf-8")


def grading_rows(final: float, selected: float) -> list[dict]:
    """Round 2 has the best validation kappa, round 3 the best test kappa, round 4 is the last."""
    g = {"scope": "global"}
    return [{**g, "round": 2, "val_kappa": 0.9}, {**g, "round": 2, "test_kappa": selected, "test_accuracy": 0.5},
            {**g, "round": 3, "val_kappa": 0.4}, {**g, "round": 3, "test_kappa": 0.99, "test_accuracy": 0.9},
            {**g, "round": 4, "val_kappa": 0.5},
            {**g, "round": 4, "test_kappa": final, "test_accuracy": 0.6, "test_n": 120}]


def test_retinamnist_grading_section_from_run_folders(tmp_path):
    runs = tmp_path / "retina"
    spec = retinamnist_grading.spec()
    write_spec(runs, spec)
    kappas = {("iid", "federated"): [0.4, 0.5, 0.6], ("iid", "centralised"): [0.52, 0.5, 0.48],
              ("dirichlet", "federated"): [0.3, 0.4, 0.5], ("dirichlet", "centralised"): [0.5, 0.5, 0.5]}
    for (partition, mode), values in kappas.items():
        for seed, k in enumerate(values):
            fake_run(runs / f"name={partition}" / mode / f"seed-{seed}", retinamnist_grading.CONFIG,
                     [f"partition.name={partition}", f"experiment.mode={mode}", f"experiment.seed={seed}"],
                     grading_rows(k, 0.45 if mode == "federated" else 0.5))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n", encoding="utf-8")
    assert retinamnist_grading.main(["--runs", str(runs), "--results", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    # round 2 is selected on validation although round 3 has the best test kappa (0.99: never shown)
    assert ("| iid | federated | 3 | 0.500 ± 0.100 | [0.252, 0.748] | 0.600 ± 0.000 | 0.450 ± 0.000 | "
            "[0.450, 0.450] | 2 | 100.0% | 90.0% |") in text
    assert "| dirichlet (alpha 1) | federated | 3 | 0.400 ± 0.100 | [0.152, 0.648] |" in text
    assert "0.990" not in text
    assert "n = 3 runs per row (seeds 0, 1, 2); 12 runs, commit abcdef1, 120 min of run time" in text
    assert "the file's val split (120 images) is the held-out test set" in text
    assert "Which data chose what" in text and "no setting was chosen on it" in text
    assert "reaches 100.0% of the centralised test kappa" in text and "reaches 80.0%" in text
    assert "took 7200 s" in text  # the runs' own time, not the seconds this script took
    assert "- [Federated DR grading on RetinaMNIST (issue 2)](#federated-dr-grading-on-retinamnist-issue-2)" in text


def test_retinamnist_grading_names_missing_runs(tmp_path, caplog):
    runs = tmp_path / "retina"
    write_spec(runs, retinamnist_grading.spec())
    md = tmp_path / "RESULTS.md"
    assert retinamnist_grading.main(["--runs", str(runs), "--results", str(md)]) == 2
    assert "0 of 12" not in caplog.text and "12 of 12 runs have not finished" in caplog.text
    assert "--rerun" in caplog.text and not md.exists()
    assert retinamnist_grading.main(["--runs", str(tmp_path / "nothing"), "--results", str(md)]) == 2
    assert "no sweep.json" in caplog.text


def seg_rows(val: float, mr_mean: float, ct: float) -> list[dict]:
    test = {f"test_dice3d_mr_{o}": mr_mean for o in fedgin_chaos_schedule.MR_ORGANS}
    return [{"scope": "global", "round": 5, "val_dice2d_mean": val},
            {"scope": "global", "round": 5, **test, "test_dice3d_mr_mean": mr_mean, "test_dice3d_ct_mean": ct,
             "test_dice3d_mean": (mr_mean + ct) / 2}]


def test_fedgin_schedule_is_chosen_on_validation_and_only_its_test_is_read(tmp_path):
    runs = tmp_path / "sched"
    seeds = [0, 1]
    # 100 x 5 scores worse on validation (0.6 < 0.7); its test numbers (0.111) must not appear
    plan = {(100, 5): {"federated": (0.6, [0.111, 0.111]), "centralised": (0.65, [0.111, 0.111])},
            (50, 10): {"federated": (0.7, [0.78, 0.80]), "centralised": (0.75, [0.80, 0.80])}}
    for (rounds, steps), modes in plan.items():
        folder = runs / f"{rounds}x{steps}"
        write_spec(folder, fedgin_chaos_schedule.spec(rounds, steps, seeds))
        for mode, (val, mr) in modes.items():
            for seed in seeds:
                fake_run(folder / "default" / mode / f"seed-{seed}", fedgin_chaos_schedule.CONFIG,
                         [f"federation.rounds={rounds}", f"train.local_steps={steps}",
                          f"experiment.mode={mode}", f"experiment.seed={seed}"], seg_rows(val, mr[seed], 0.4), 5.0)
    md = tmp_path / "RESULTS.md"
    assert fedgin_chaos_schedule.main(["--runs", str(runs), "--schedules", "100x5,50x10", "--results", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    assert "| 50 x 10 | federated | 2 | 0.700 ± 0.000 | [0.700, 0.700] | **chosen** |" in text
    assert "| 100 x 5 | federated | 2 | 0.600 ± 0.000 | [0.600, 0.600] |  |" in text
    assert "**Test sets, read once for the chosen schedule (50 x 10)**" in text
    assert "0.111" not in text
    assert "| 0 | federated | 0.780 | 0.780 | 0.780 | 0.780 | 0.780 | 0.400 | 97.5% |" in text
    assert "| mean ± std (n = 2) | federated | 0.790 ± 0.014 |" in text
    assert "| 95% CI | federated | [0.663, 0.917] |" in text  # t(0.975, 1) = 12.71
    assert "reaches 97.5%, 100.0% of centralised GIN" in text and "over the seeds, 98.8%" in text
    assert "98.8% (mean of the per-seed ratios 98.8%, 95% CI [82.9%, 114.6%])" in text
    assert "The goal (>= 98%) holds for the mean over seeds; it holds for 1 of 2 seeds (lowest 97.5%)" in text
    assert "chosen on the sites' validation splits" in text
    assert "8 runs, commit abcdef1, 40 min of run time" in text


def test_fedgin_schedule_rejects_a_bad_schedule(capsys):
    with pytest.raises(SystemExit):
        fedgin_chaos_schedule.main(["--schedules", "100by5"])
    assert "expected ROUNDSxSTEPS" in capsys.readouterr().err


def test_retinamnist_grading_reruns_a_missing_sweep(tmp_path, tiny_npz):
    """--rerun runs the sweep (here on a tiny file, 2 seeds, 2 rounds) and builds the section from it."""
    config = tmp_path / "tiny.toml"
    config.write_text(f"""
[experiment]
name = "tiny"
threads = 1
[data]
source = "medmnist"
path = "{tiny_npz}"
image_size = 12
test_split = "test"
val_fraction = 0.2
[partition]
min_size = 10
[federation]
num_sites = 2
rounds = 2
[train]
batch_size = 8
lr = 0.01
[classifier]
width = 4
depth = 2
""", encoding="utf-8")
    runs, md = tmp_path / "retina", tmp_path / "RESULTS.md"
    assert retinamnist_grading.main(["--runs", str(runs), "--rerun", "--config", str(config), "--seeds", "0,1",
                                     "--results", str(md)]) == 0
    assert sorted(str(p.relative_to(runs)) for p in runs.glob("*/*/seed-1")) == [
        "name=dirichlet/centralised/seed-1", "name=dirichlet/federated/seed-1",
        "name=iid/centralised/seed-1", "name=iid/federated/seed-1"]
    text = md.read_text(encoding="utf-8")
    assert "n = 2 runs per row (seeds 0, 1); 8 runs" in text
    assert "the file's test split (50 images) is the held-out test set" in text
    rows = [line for line in text.splitlines() if line.startswith(("| iid |", "| dirichlet"))]
    assert [r.split(" | ")[1:3] for r in rows] == [["federated", "2"], ["centralised", "2"]] * 2
    assert all(r.split(" | ")[-2] == "100.0%" for r in rows if "centralised" in r)
