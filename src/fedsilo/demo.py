"""``fedsilo demo``: the headline demonstration on built-in phantoms, one page linking it all.

Each step is an ordinary fedsilo command on a shipped config (so every number in the demo can
be reproduced and changed by hand); the demo only chains them and writes ``index.html``:

1. federated DR grading (classification) against its centralised and local references;
2. FedGIN: CT-rich hospitals and an MRI-scarce hospital train one organ segmenter, without and
   with GIN augmentation;
3. FedGAN: a DCGAN pre-trained on phantom CT, fine-tuned on fundus images across 3 hospitals;
4. a privacy audit of that generator (membership inference, distance to closest record, inversion).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedsilo.fileio import atomic_write_text
from fedsilo.report.html import Section, esc, img_file, markdown_tables, page, table
from fedsilo.run.folder import RunDir, RunDirError

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Step:
    """One demo step: a title, what it shows, the function that runs it into a folder, and the
    figures (paths relative to that folder) shown on the demo page."""

    name: str
    title: str
    explains: str
    run: Callable[[Path], Path]
    figures: list[tuple[str, str]] = field(default_factory=list)
    #: headings of the sweep summary's tables shown on the demo page (empty = all)
    tables: tuple[str, ...] = ()


def _sweep(config: str, modes: str, grid: dict[str, list[str]] | None = None, *sets: str) -> Callable[[Path], Path]:
    def run(out: Path) -> Path:
        from fedsilo.sweep import SweepSpec, run_sweep

        spec = SweepSpec(config=str(CONFIGS / config), grid=grid or {}, modes=modes.split(","), seeds=[0],
                         overrides=list(sets))
        run_sweep(spec, out)
        return out

    return run


def _run(config: str, *sets: str, after: str = "") -> Callable[[Path], Path]:
    """A single run; ``after`` names an earlier step whose folder becomes ``gan.pretrained``."""

    def run(out: Path) -> Path:
        from fedsilo.config import load_config
        from fedsilo.report import write_run_files
        from fedsilo.run.start import start_run

        overrides = list(sets)
        if after:
            overrides.append(f"gan.pretrained={out.parent / after}")
        start_run(load_config(CONFIGS / config, overrides), out)
        write_run_files(out)
        return out

    return run


def _audit(target: str) -> Callable[[Path], Path]:
    def run(out: Path) -> Path:
        from fedsilo.audit.registry import run_audit
        from fedsilo.report.modelcard import write_model_card

        run_dir = out.parent / target
        run_audit(run_dir, overrides=["audit.max_samples=200", "audit.gan_samples=400", "audit.latent_steps=60",
                                      "audit.max_targets=32"])
        write_model_card(run_dir)
        from fedsilo.report import run_report

        run_report(run_dir)
        return run_dir

    return run


def demo_steps() -> list[Step]:
    """The demo's steps, in order."""
    return [
        Step("classification", "Federated DR grading on fundus phantoms",
             "Three hospitals with different cameras and grade mixes (Dirichlet label skew) train one grading "
             "CNN with FedAvg; the same data pooled (centralised) is the upper reference, each hospital alone "
             "(local) the lower one.",
             _sweep("demo-classify.toml", "federated,centralised,local")),
        Step("fedgin", "FedGIN: CT-rich and MRI-scarce hospitals segment organs together",
             "Two CT hospitals and one hospital with only two MRI patients train one multi-organ U-Net. "
             "Without augmentation the model learns CT intensities and fails on MRI; GIN (random shallow "
             "convolutions that change intensities but keep shapes) lets the CT data teach the MRI task.",
             _sweep("demo-fedgin.toml", "federated", {"segmentation.method": ["none", "gin"]}),
             [("MRI test patients, no augmentation (image, truth, prediction)",
               "method=none/federated/seed-0/overlays/mr-round-012.png"),
              ("MRI test patients, GIN", "method=gin/federated/seed-0/overlays/mr-round-012.png")],
             tables=("3D Dice per patient",)),
        Step("pretrain", "DCGAN pre-training on phantom CT slices",
             "A centralised DCGAN learns abdominal CT slices; its weights initialise the fundus GAN below "
             "(channels 1 -> 3 adapted, every transferred tensor logged). Kept to 4 epochs on purpose: a "
             "generator pre-trained until its CT slices look real stayed close to CT through the 20 "
             "fine-tuning rounds below (README, known limitations).",
             _run("pretrain-ct-gan.toml", "federation.rounds=4", "federation.eval_every=4"),
             [("CT slices from the pre-trained generator", "samples/round-004.png")]),
        Step("fedgan", "FedGAN: three hospitals fine-tune the generator",
             "Each hospital holds the fundus images of its DR grades (severity specialisation); generator and "
             "discriminator are averaged every round. Realism is scored by a reference discriminator, FD/KID "
             "and precision/recall in the features of a reference grade classifier.",
             _run("demo-fedgan.toml", after="pretrain"),
             [("Generated fundus images after the last round", "samples/round-020.png"),
              ("Generated (top) and their closest real training images (bottom)", "samples/nearest-real.png")]),
        Step("audit", "What the FedGAN generator leaks",
             "Membership inference against the generator and discriminator (LOGAN, GAN-Leaks), distance to "
             "closest record, latent inversion, and the paper's real-vs-synthetic detector (a realism test).",
             _audit("fedgan"),
             [("ROC curves of the attacks (diagonal = guessing)", "audit/roc.png")]),
    ]


def _summary(folder: Path, tables: tuple[str, ...] = ()) -> str:
    """The step's numbers: a sweep's summary tables (those under the ``tables`` headings, or all),
    a run's final metrics, an audit's summary."""
    summary = folder / "summary.md"
    if summary.is_file():
        md = summary.read_text(encoding="utf-8")
        if tables:
            parts = md.split("\n## ")
            md = "\n".join(f"### {p}" for p in parts[1:] if p.startswith(tables))
        return markdown_tables(md)
    audit = folder / "audit.md"
    if audit.is_file() and (folder / "audit.json").is_file():
        import json

        s = json.loads((folder / "audit.json").read_text(encoding="utf-8")).get("summary", {})
        rows = [[k, f"{v:.3f}" if isinstance(v, float) else str(v)] for k, v in s.items()]
        return table(["attack / measure", "value"], rows)
    if (folder / "config.toml").is_file():
        from fedsilo.report.summary import headline_columns, scope_table
        from fedsilo.report.tasks import presenter_for

        run = RunDir.open(folder)
        header, body = scope_table(run, headline_columns(run, presenter_for(run.cfg)))
        glob = [r for r in body if r[0] == "global"]
        return table(header, glob or body)
    return ""


def run_demo(out: str | Path) -> Path:
    """Run every step into ``out`` (a new folder) and write ``out/index.html``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"demo folder {str(out)!r} exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    t0 = time.monotonic()
    steps = demo_steps()
    for i, step in enumerate(steps, start=1):
        logger.info("Demo step %d/%d: %s", i, len(steps), step.title)
        t = time.monotonic()
        folder = step.run(out / step.name)
        rel = folder.relative_to(out)
        body = (f"<p>{esc(step.explains)}</p><p><a href='{esc(rel)}/report.html'>Full report</a> "
                f"({time.monotonic() - t:.0f} s)</p>" + _summary(folder, step.tables))
        for caption, path in step.figures:
            if (folder / path).is_file():
                body += f"<p>{esc(caption)}</p>" + img_file(folder / path, caption)
        sections.append(Section(f"{i}. {step.title}", body))
    index = out / "index.html"
    atomic_write_text(index, page("fedsilo demo", f"{out} — {time.monotonic() - t0:.0f} s in all", sections))
    return index
