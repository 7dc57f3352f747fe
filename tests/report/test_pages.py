"""Report pages read well: captioned figures, tables that fit, short chart labels, overlays,
"% of centralised" explained in its direction, visible markers on short curves."""

from __future__ import annotations

import csv
import io
import re

import matplotlib.image
import numpy as np

from fedsilo.report import plots
from fedsilo.report.html import audit_caption
from fedsilo.report.markup import fit_table, header_cell, img, img_file, markdown_tables, png_width, table
from fedsilo.report.summary import MetricTable, percent_note
from fedsilo.report.sweep_page import _sweep_bars, setting_label, short_value
from fedsilo.report.tasks.segmentation import SegmentationPresenter
from helpers import seg_config


def _png(width: int, height: int = 10) -> bytes:
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.zeros((height, width)), format="png")
    return buf.getvalue()


def test_images_are_captioned_figures_and_tiny_ones_are_enlarged(tmp_path):
    html = img(_png(400), "curves", "Metrics over rounds.")
    assert html.startswith("<figure style='width:400px'><img alt=\"curves\"")
    assert html.endswith("<figcaption>Metrics over rounds.</figcaption></figure>")
    assert "<figcaption>curves</figcaption>" in img(_png(400), "curves")  # the alt text is the default caption
    assert img(_png(400), "curves", "").startswith("<img")  # an explicitly empty caption: the bare image
    assert img(None, "x") == "" and img_file(tmp_path / "missing.png", "x") == ""
    assert png_width(_png(230)) == 230 and png_width(b"not a png") == 0
    strip = img(_png(100), "strip", "Samples.")  # 100 px -> shown 4 x 100 = 400 px, pixel for pixel
    assert 'style="width:400px;image-rendering:pixelated"' in strip and "<figure style='width:400px'>" in strip


def test_headers_break_after_underscores_only_and_tables_scroll():
    assert header_cell("test_accuracy") == "test_<wbr>accuracy"
    assert header_cell("% of centralised: sel_test_kappa") == "% of centralised: sel_<wbr>test_<wbr>kappa"
    html = table(["a_b", "c"], [[1, 2]])
    assert html.startswith("<div class='scroll'><table>") and "<th>a_<wbr>b</th><th>c</th>" in html


def test_wide_tables_are_turned_on_their_side():
    header = ["grid", "mode", "seeds", *(f"m{i}" for i in range(8))]
    rows = [["default", mode, "1", *(f"{mode[0]}{i}" for i in range(8))] for mode in ("federated", "centralised")]
    html = fit_table(header, rows)
    # columns: one per former row, named by what tells the rows apart (mode; grid is the same)
    assert "<th>mode</th><th>federated</th><th>centralised</th>" in html
    assert "<tr><td>grid</td><td>default</td><td>default</td></tr>" in html
    assert "<tr><td>m7</td><td>f7</td><td>c7</td></tr>" in html
    narrow = fit_table(header[:5], [r[:5] for r in rows])
    assert "<th>grid</th><th>mode</th><th>seeds</th>" in narrow  # narrow enough: as it was
    md = "| grid | mode | " + " | ".join(header[2:]) + " |\n|" + "---|" * len(header) + "\n"
    md += "".join("| " + " | ".join(r) + " |\n" for r in rows)
    assert "<th>mode</th><th>federated</th><th>centralised</th>" in markdown_tables(md)


def test_sweep_chart_labels_are_the_swept_values_rounded(tmp_path, monkeypatch):
    assert short_value("0.5199999809265137") == "0.52" and short_value("gin") == "gin" and short_value("inf") == "inf"
    assert setting_label({"train.lr": "0.0020000001", "segmentation.method": "gin"}) == "lr=0.002\nmethod=gin"
    assert setting_label({}) == "one setting"
    with (tmp_path / "summary.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["train.lr", "mode", "seed", "run", "test_kappa", "sel_test_kappa", "sel_test_accuracy"])
        writer.writerow(["0.0020000001", "federated", "0", "a", "0.5", "0.4", "0.5199999809265137"])
        writer.writerow(["0.001", "federated", "0", "b", "0.3", "0.2", "0.31"])
    seen = {}
    monkeypatch.setattr(plots, "bars_png", lambda groups, metric: seen.setdefault(metric, groups) and b"")
    _sweep_bars(tmp_path)
    # one chart per test metric, grouped by the swept setting only (sel_* values are no setting)
    assert list(seen) == ["test_kappa"]
    assert list(seen["test_kappa"]) == ["lr=0.002", "lr=0.001"]
    assert seen["test_kappa"]["lr=0.002"]["federated"] == (0.5, 0.0)


def test_segmentation_report_shows_the_latest_overlays_of_each_modality(tmp_path):
    folder = tmp_path / "overlays"
    folder.mkdir()
    for name in ("ct-round-001", "ct-round-003", "mr-round-003", "mr-round-002"):
        matplotlib.image.imsave(folder / f"{name}.png", np.zeros((8, 400)))
    sections = SegmentationPresenter(seg_config()).report_sections(tmp_path)
    assert [s[0] for s in sections] == ["Segmentations of test patients"]
    body = sections[0][1]
    assert len(re.findall(r"<figure", body)) == 2
    assert "CT test patients after round 3: image (left), ground truth (middle)" in body
    assert "overlays/mr-round-003.png" in body and "round-001" not in body and "round-002" not in body
    assert SegmentationPresenter(seg_config()).report_sections(tmp_path / "empty") == []


def test_percent_of_centralised_reads_the_same_way_for_lower_is_better_metrics(tmp_path):
    from fedsilo.sweep import write_metric_table

    hd95 = MetricTable("hd95_ct", "HD95", ["liver"], ["test_hd95_ct_liver"], higher_is_better=False)
    stats = {((), "federated"): {"test_hd95_ct_liver": (20.0, 0.0)},
             ((), "centralised"): {"test_hd95_ct_liver": (10.0, 0.0)}}
    groups = {key: {tmp_path / key[1]: {}} for key in stats}
    md = write_metric_table(hd95, stats, groups, tmp_path)
    assert md.startswith(percent_note(False))
    assert "| default | federated | 1 | 20.000 (50%) |" in md  # twice the distance: half as good as centralised
    assert "centralised/this" in percent_note(False) and "Higher is better" in percent_note(True)


def test_short_curves_get_large_markers():
    assert plots.marker_size(2) > plots.marker_size(8) > plots.marker_size(40)


def test_every_audit_figure_has_its_own_caption():
    for stem in ("roc", "dcr_nearest", "inversion_members", "inversion_nonmembers", "gradient_inversion"):
        assert len(audit_caption(stem)) > 60
    assert "inversion of never-used images" in audit_caption("inversion_nonmembers")
    assert audit_caption("new_plot") == "Audit figure: new plot (see audit.md)."
