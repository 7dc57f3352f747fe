"""The headline demo's wiring: its configs load, and the figures it shows are ones its runs write."""

from __future__ import annotations

import re

from fedsilo.config import load_config
from fedsilo.demo import CONFIGS, _summary, demo_steps


def test_demo_configs_load_and_name_the_rounds_they_show():
    steps = {s.name: s for s in demo_steps()}
    assert list(steps) == ["classification", "fedgin", "pretrain", "fedgan", "audit"]
    rounds = {"fedgin": load_config(CONFIGS / "demo-fedgin.toml").federation.rounds,
              "fedgan": load_config(CONFIGS / "demo-fedgan.toml").federation.rounds, "pretrain": 4}
    for name, expected in rounds.items():
        for _, path in steps[name].figures:
            m = re.search(r"round-(\d+)\.png", path)
            if m:
                assert int(m.group(1)) == expected, path
    for cfg in ("demo-classify.toml", "demo-fedgin.toml", "demo-fedgan.toml", "pretrain-ct-gan.toml"):
        assert load_config(CONFIGS / cfg).experiment.threads == 1  # robust on a busy 2-core machine


def test_demo_summary_keeps_only_the_chosen_tables(tmp_path):
    (tmp_path / "summary.md").write_text("# Sweep summary\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                                         "## 3D Dice per patient, MR test set\n\n| liver |\n|---|\n| 0.5 |\n\n"
                                         "## HD95 (mm) per patient, MR test set\n\n| liver |\n|---|\n| 9 |\n")
    html = _summary(tmp_path, ("3D Dice per patient",))
    assert "3D Dice per patient, MR test set" in html and "0.5" in html
    assert "HD95" not in html and "<td>2</td>" not in html
    assert "HD95" in _summary(tmp_path)
