"""benchmarks/fedgan_ablation: the choice on validation numbers and the section's tables, on
synthetic run records (no training)."""

from __future__ import annotations

import pytest
from benchmarks import fedgan_ablation
from benchmarks import fedgan_ablation_tables as tables
from benchmarks.fedgan_ablation_tables import METHODS, Record


def records_of(sites: int, method: str, mode: str, val_fd: list[float],
               test: list[dict[str, float]] | None = None) -> list[Record]:
    return [Record(sites, method, mode, seed, {"fd": fd, "recall": 0.5}, None if test is None else test[seed])
            for seed, fd in enumerate(val_fd)]


def study(combination_fd: list[float]) -> list[Record]:
    """Two seeds at 3 sites: federated validation FD per method (baseline 2.1 on average)."""
    fed = {"baseline": [2.0, 2.2], "keep_opt": [1.5, 1.7], "fedadam_g": [1.8, 1.8], "fedavgm_g": [1.2, 1.4],
           "ema": [2.5, 2.5], "diffaugment": [2.1, 2.1], "local_norm_d": [2.0, 2.1], "local_d": [3.0, 3.0]}
    out = [r for name, fds in fed.items() for r in records_of(3, name, "federated", fds)]
    out += records_of(3, "baseline", "centralised", [0.5, 0.7])
    out += records_of(3, "keep_opt+fedavgm_g+local_norm_d", "federated", combination_fd)
    return out


def test_the_combination_takes_the_best_improving_option_of_each_group():
    methods = list(METHODS.values())
    chosen = tables.choose_combination(study([1.0, 1.2]), 3, methods)
    # ema, diffaugment (equal, not below) and local_d do not beat the baseline; fedavgm_g beats fedadam_g
    assert [m.name for m in chosen] == ["keep_opt", "fedavgm_g", "local_norm_d"]
    combo = tables.combine(chosen)
    assert combo.name == "keep_opt+fedavgm_g+local_norm_d"
    assert combo.sets == ("train.keep_optimizer_state=true", "gan.federation.server_opt_g=fedavgm",
                          "gan.federation.discriminator=local_norm")
    assert not combo.federated_only and combo.schedule is None and not combo.ema
    # its centralised run: without the federated-only options, i.e. keep_opt's run
    assert tables.centralised_counterpart(combo) == METHODS["keep_opt"]
    assert tables.centralised_counterpart(METHODS["local_d"]) == METHODS["baseline"]
    assert tables.centralised_counterpart(METHODS["ema"]) == METHODS["ema"]


def test_the_selection_is_the_lowest_federated_validation_fd():
    names = [*METHODS, "keep_opt+fedavgm_g+local_norm_d"]
    assert tables.select(study([1.0, 1.2]), 3, names) == "keep_opt+fedavgm_g+local_norm_d"
    assert tables.select(study([1.5, 1.5]), 3, names) == "fedavgm_g"  # the combination lost to one option
    assert tables.select([], 3, names) == "baseline"  # nothing measured: nothing chosen


def test_combining_two_options_of_one_group_is_refused():
    with pytest.raises(ValueError, match="two of one group"):
        tables.combine([METHODS["fedadam_g"], METHODS["fedavgm_g"]])
    assert tables.combine([]) == METHODS["baseline"]
    both = tables.combine([METHODS["ema"], METHODS["steps_5"]])
    assert both.ema and both.schedule == (180, 5)


def test_goal_ratios_and_verdicts():
    fed = [{"fd": 3.0, "recall": 0.8, "precision": 0.95}, {"fd": 4.0, "recall": 0.9, "precision": 0.95}]
    cen = [{"fd": 2.0, "recall": 1.0, "precision": 1.0}, {"fd": 2.0, "recall": 1.0, "precision": 1.0}]
    recs = records_of(3, "baseline", "federated", [2.0, 2.0], fed) + records_of(3, "baseline", "centralised",
                                                                              [1.0, 1.0], cen)
    of_means, per_seed = tables.ratio(recs, 3, "baseline", "fd")
    assert of_means == pytest.approx(1.75) and per_seed.mean == pytest.approx(1.75) and per_seed.n == 2
    rows = {r[2]: r for r in tables.goal_rows(recs, 3, ["baseline"])}
    assert rows["FD federated / centralised"][3].startswith("1.75x (per seed 1.75x")
    assert rows["FD federated / centralised"][4] == "does not hold (<= 1.5)"
    assert rows["recall, % of centralised"][3].startswith("85.00%")
    assert rows["recall, % of centralised"][4] == "holds (>= 85)"
    assert rows["precision, % of centralised"][4] == "holds (>= 95)"
    assert rows["TSTR kappa, % of centralised"][4] == "not measured (unconditional generator)"
    # no goal stated at 5 sites
    five = [Record(5, r.method, r.mode, r.seed, r.val, r.test) for r in recs]
    assert tables.goal_rows(five, 5, ["baseline"])[0][4] == "no goal at this number of sites"


def test_the_section_shows_held_out_numbers_only_for_the_reported_configurations():
    recs = study([1.0, 1.2])
    held_out = [{"fd": 2.0, "kid": 0.1, "precision": 0.9, "recall": 0.6, "coverage": 0.8, "realism": 0.7}] * 2
    for r in recs:
        if r.method in ("baseline", "keep_opt+fedavgm_g+local_norm_d"):
            r.test = held_out[r.seed]
    recs += records_of(3, "keep_opt+fedavgm_g+local_norm_d", "centralised", [0.4, 0.4], held_out)
    combo = tables.combine(tables.choose_combination(recs, 3, list(METHODS.values())))
    text = tables.site_section(recs, 3, [*METHODS, combo.name], combo, combo.name)
    validation, held = text.split("**Test split")
    assert "| keep_opt | federated | 2 | 1.600 ± 0.141 |" in validation
    assert "| fedavgm_g | federated | 2 | 1.300 ± 0.141 |" in validation and "in the combination" in validation
    assert "**selected**" in validation and "keep_opt+fedavgm_g+local_norm_d" in validation
    assert "| keep_opt |" not in held and "| fedavgm_g |" not in held
    assert "| baseline | federated | 2 | 2.000 ± 0.000 | 0.100 ± 0.000 |" in held
    assert "| keep_opt+fedavgm_g+local_norm_d | centralised | 2 |" in held


def test_run_overrides_validate_only_and_scale_the_schedule():
    sets = fedgan_ablation.overrides(METHODS["ema"], 10, "federated", 1, (60, 15), 1.0)
    assert sets[:2] == ["gan.evaluation=federated", "data.test_split="]  # no held-out split in the runs
    assert "federation.num_sites=10" in sets and "experiment.seed=1" in sets
    assert "gan.ema_decay=0.9000" in sets and "federation.rounds=60" in sets
    short = fedgan_ablation.overrides(METHODS["steps_5"], 3, "centralised", 0, (60, 15), 0.25, ["gan.conditional=true"])
    assert {"federation.rounds=45", "federation.eval_every=45", "train.local_steps=5"} <= set(short)
    assert short[-1] == "gan.conditional=true"
    assert fedgan_ablation.ema_decay(6) == 0.5 and fedgan_ablation.ema_decay(180) == pytest.approx(29 / 30)
    assert [m.name for m in fedgan_ablation.parse_methods("ema,baseline")] == ["baseline", "ema"]
    with pytest.raises(ValueError, match="unknown nope"):
        fedgan_ablation.parse_methods("nope")
    # a combination given by name (e.g. chosen at 3 sites, run at 10): one method with its parts
    combo = fedgan_ablation.parse_methods("keep_opt+ema")[1]
    assert combo.name == "keep_opt+ema" and combo.parts == ("keep_opt", "ema") and combo.ema
    assert combo.sets == ("train.keep_optimizer_state=true",)
    assert "gan.ema_decay=0.9000" in fedgan_ablation.overrides(combo, 10, "federated", 0, (60, 15), 1.0)
    with pytest.raises(ValueError, match="two of one group"):
        fedgan_ablation.parse_methods("local_d+local_norm_d")


def test_dp_goals_compare_with_the_non_private_run_paired_by_seed():
    from benchmarks import fedgan_dp_options as dp

    private = records_of(3, "small_d", "federated", [1.0, 1.0],
                         [{"precision": 0.9, "recall": 0.2, "fd": 9.0}, {"precision": 0.8, "recall": 0.3, "fd": 12.0}])
    plain = records_of(3, "baseline", "federated", [1.0, 1.0],
                       [{"precision": 1.0, "recall": 0.5, "fd": 4.0}, {"precision": 1.0, "recall": 0.5, "fd": 4.0}])
    rows = {r[1]: r for r in dp.goal_rows(private, plain, "small_d")}
    assert rows["precision (absolute)"][2].startswith("0.850 ± 0.071") and rows["precision (absolute)"][3] == "holds (>= 0.8)"
    assert rows["recall, % of the non-private federated run"][2].startswith("50.00%")
    assert rows["recall, % of the non-private federated run"][3] == "holds (>= 50)"
    assert rows["FD / the non-private federated run's"][2].startswith("2.62x (per seed 2.62x")
    assert rows["FD / the non-private federated run's"][3] == "holds (<= 3)"
    collapsed = records_of(3, "baseline", "federated", [1.0], [{"precision": 0.1, "recall": 0.0, "fd": 40.0}])
    no_recall = records_of(3, "baseline", "federated", [1.0], [{"precision": 1.0, "recall": 0.0, "fd": 4.0}])
    rows = {r[1]: r for r in dp.goal_rows(collapsed, no_recall, "baseline")}
    assert rows["precision (absolute)"][3] == "does not hold (>= 0.8)"
    assert rows["recall, % of the non-private federated run"][3] == "undefined (non-private value 0)"
    assert rows["FD / the non-private federated run's"][3] == "does not hold (<= 3)"
    assert dp.dp_sets(8) == ["privacy.mode=sample", "privacy.epsilon=8", "privacy.delta=1e-5"]


def test_the_dp_section_reads_a_collapse_only_when_every_tested_private_run_has_zero_recall():
    from benchmarks import fedgan_dp_options as dp

    test = [{"precision": 0.01, "recall": 0.0, "fd": 40.0}] * 2
    private = records_of(3, "baseline", "federated", [0.5, 0.6], test)
    plain = records_of(3, "baseline", "federated", [0.1, 0.1], [{"precision": 0.9, "recall": 0.4, "fd": 5.0}] * 2)
    text = dp.section(private, plain, 3, ["baseline"], METHODS["baseline"], "baseline", 8.0)
    assert "| baseline, no DP | federated | 2 |" in text and "collapsed" in text
    private[1].test = {"precision": 0.9, "recall": 0.2, "fd": 8.0}
    assert "collapsed" not in dp.section(private, plain, 3, ["baseline"], METHODS["baseline"], "baseline", 8.0)
