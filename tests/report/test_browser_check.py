"""Report pages in a real browser: headless Chromium lays out the quick configs' reports (run,
sweep, comparison) at 1400 and 800 px, and nothing overflows, no header breaks inside a word,
every image is captioned.

Skipped where no Chromium is on PATH (CI installs Debian's ``chromium`` in ``.ci/run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.report.browser import BROWSERS, check_page, find_browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_browser() is None,
                       reason=f"no headless Chromium on PATH (tried {', '.join(BROWSERS)}): "
                              "apt-get install chromium to check report pages in a browser"),
]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """The quick configs' reports at a small size: a classification sweep (two settings x two modes,
    like the demo's), a segmentation sweep (federated and centralised), an audited FedGAN run and a
    comparison of two runs."""
    from fedsilo.audit.registry import run_audit
    from fedsilo.config import load_config
    from fedsilo.report import compare_report, run_report, write_run_files
    from fedsilo.run.start import start_run
    from fedsilo.sweep import SweepSpec, run_sweep

    out = tmp_path_factory.mktemp("pages")
    small = ["experiment.threads=1", "federation.rounds=2", "data.phantom.n_train=200", "data.phantom.n_test=60"]
    run_sweep(SweepSpec(config=str(CONFIGS / "quick-classify.toml"), grid={"train.lr": ["0.0020000001", "0.001"]},
                        modes=["federated", "centralised"], seeds=[0],
                        overrides=[*small, "partition.min_size=10", "train.local_epochs=1"]), out / "classify")
    run_sweep(SweepSpec(config=str(CONFIGS / "quick-fedgin.toml"), grid={}, modes=["federated", "centralised"],
                        seeds=[0], overrides=["federation.rounds=1", "train.local_steps=2"]), out / "fedgin")
    gan = start_run(load_config(CONFIGS / "quick-fedgan.toml", [*small, "gan.eval_samples=60",
                                                                 "gan.reference_epochs=1"]), out / "fedgan")
    write_run_files(gan.path)
    run_audit(gan.path, overrides=["audit.max_samples=40", "audit.gan_samples=60", "audit.latent_steps=5",
                                   "audit.max_targets=4"])
    run_report(gan.path)
    runs = out / "classify" / "lr=0.0020000001"
    return {
        "classification sweep": out / "classify" / "report.html",
        "classification run": runs / "federated" / "seed-0" / "report.html",
        "segmentation sweep": out / "fedgin" / "report.html",
        "segmentation run": out / "fedgin" / "default" / "federated" / "seed-0" / "report.html",
        "fedgan run with audit": gan.path / "report.html",
        "comparison": compare_report([runs / "federated" / "seed-0", runs / "centralised" / "seed-0"],
                                     out / "compare.html"),
    }


@pytest.mark.parametrize("page", ["classification sweep", "classification run", "segmentation sweep",
                                  "segmentation run", "fedgan run with audit", "comparison"])
def test_report_page_reads_well_at_1400_and_800_px(reports, page):
    html = reports[page].read_text(encoding="utf-8")
    assert html.count("<img") >= 1 and html.count("<figcaption>") == html.count("<img")
    assert check_page(reports[page], widths=(1400, 800)) == []


def test_the_check_finds_overflow_broken_headers_and_uncaptioned_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><head><style>body{margin:0} th{width:30px;word-break:break-all}</style></head><body>"
        "<div style='width:1500px'>a very wide banner</div>"
        "<table><tr><th>test_accuracy</th></tr><tr><td>0.5</td></tr></table>"
        "<img alt='' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk"
        "YAAAAAYAAjCB0C8AAAAASUVORK5CYII='>"
        "<figure><img alt='ok' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lE"
        "QVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII='><figcaption>A caption.</figcaption></figure>"
        "</body></html>", encoding="utf-8")
    problems = check_page(page, widths=(800,))
    assert "800 px: the page is 1500 px wide in a 800 px window (horizontal scrolling)" in problems
    assert any(p.startswith("800 px: div \"a very wide banner\" reaches 1500 px, past the 800 px window") for p in problems)
    assert "800 px: header \"test_accuracy\" breaks inside \"test_accuracy\"" in problems
    assert "800 px: img has no alt text" in problems and "800 px: img has no caption (figure/figcaption)" in problems
    assert not any("\"ok\"" in p for p in problems)  # the captioned image passes
