"""The demo's steps: each an ordinary fedsilo command on a shipped config.

Every number in the demo can therefore be reproduced and changed by hand (``fedsilo run`` /
``fedsilo sweep`` on ``configs/demo-*.toml`` with the overrides below). A step's ``run`` takes
the folder to write and the overrides common to the whole demo (the seed, and the reduced size's
settings); ``reduced`` lists the step's own overrides at the reduced size that the test suite runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[3] / "configs"

#: A step's runner: (folder, overrides for every run of the step) -> the folder holding its report.
Runner = Callable[[Path, Sequence[str]], Path]


@dataclass
class Step:
    """One demo step.

    Attributes
    ----------
    name, title, explains : str
        Folder name, heading and what the step shows (one paragraph on the demo page).
    run : Runner
        Runs the step into a folder.
    figures : list of (caption, path)
        Figures shown on the demo page (paths relative to the step's folder).
    tables : tuple of str
        Headings of the sweep summary's tables shown on the demo page (empty = all).
    reduced : tuple of str
        This step's overrides at the reduced size (tests); empty = the step is left out there.
    """

    name: str
    title: str
    explains: str
    run: Runner
    figures: list[tuple[str, str]] = field(default_factory=list)
    tables: tuple[str, ...] = ()
    reduced: tuple[str, ...] = ()


def _seed(sets: Sequence[str]) -> int:
    """The ``experiment.seed=`` among the overrides (0 if none)."""
    seeds = [int(s.split("=", 1)[1]) for s in sets if s.startswith("experiment.seed=")]
    return seeds[-1] if seeds else 0


def _sweep(config: str, modes: str, grid: dict[str, list[str]] | None = None, *sets: str) -> Runner:
    def run(out: Path, common: Sequence[str]) -> Path:
        from fedsilo.sweep import SweepSpec, run_sweep

        overrides = [*sets, *(s for s in common if not s.startswith("experiment.seed="))]
        spec = SweepSpec(config=str(CONFIGS / config), grid=grid or {}, modes=modes.split(","),
                         seeds=[_seed(common)], overrides=overrides)
        run_sweep(spec, out)
        return out

    return run


def _run(config: str, *sets: str, after: str = "") -> Runner:
    """A single run; ``after`` names an earlier step whose folder becomes ``gan.pretrained``."""

    def run(out: Path, common: Sequence[str]) -> Path:
        from fedsilo.config import load_config
        from fedsilo.report import write_run_files
        from fedsilo.run.start import start_run

        overrides = [*sets, *common]
        if after:
            overrides.append(f"gan.pretrained={out.parent / after}")
        start_run(load_config(CONFIGS / config, overrides), out)
        write_run_files(out)
        return out

    return run


def _audit(target: str) -> Runner:
    def run(out: Path, common: Sequence[str]) -> Path:
        from fedsilo.audit.registry import run_audit
        from fedsilo.report import run_report
        from fedsilo.report.modelcard import write_model_card

        run_dir = out.parent / target
        run_audit(run_dir, overrides=["audit.max_samples=200", "audit.gan_samples=400", "audit.latent_steps=60",
                                      "audit.max_targets=32"])
        write_model_card(run_dir)
        run_report(run_dir)
        return run_dir

    return run


#: CT pre-training length: 4 rounds of 5 epochs (the config's own default is a longer study)
PRETRAIN = ("federation.rounds=4", "federation.eval_every=4", "train.local_epochs=5")


def demo_steps() -> list[Step]:
    """The demo's steps, in order."""
    return [
        Step("classification", "Federated DR grading on fundus phantoms",
             "Three hospitals with different cameras train one grading CNN with FedAvg, once with the same "
             "grade mix at every hospital (IID) and once with label skew (Dirichlet, alpha 0.1: each hospital "
             "sees mostly a few grades); the same data pooled (centralised) is the reference. The federation "
             "usually comes close to pooling when the hospitals' grade mixes agree (not on every split: the "
             "check below says whether it did here); label skew is what costs.",
             _sweep("demo-classify.toml", "federated,centralised", {"partition.name": ["iid", "dirichlet"]}),
             reduced=("federation.eval_every=12",)),
        Step("fedgin", "FedGIN: CT-rich and MRI-scarce hospitals segment organs together",
             "Two CT hospitals and one hospital with only two MRI patients train one multi-organ U-Net. "
             "Without augmentation the model learns CT intensities and does poorly on MRI; GIN (random "
             "shallow convolutions that change intensities but keep shapes, applied to half the slices) "
             "lets the CT data teach the MRI task while CT keeps its accuracy.",
             _sweep("demo-fedgin.toml", "federated", {"segmentation.method": ["none", "gin"]}),
             [("MRI test patients, no augmentation (image, truth, prediction)",
               "method=none/federated/seed-0/overlays/mr-round-012.png"),
              ("MRI test patients, GIN (image, truth, prediction)",
               "method=gin/federated/seed-0/overlays/mr-round-012.png")],
             tables=("3D Dice per patient",), reduced=("federation.eval_every=12",)),
        Step("pretrain", "DCGAN pre-training on phantom CT slices",
             "A centralised DCGAN learns abdominal CT slices (4 rounds of 5 epochs); its weights initialise "
             "the fundus GAN below (channels 1 -> 3 adapted, every transferred tensor logged).",
             _run("pretrain-ct-gan.toml", *PRETRAIN),
             [("CT slices from the pre-trained generator", "samples/round-004.png"),
              ("Generated CT slices (top) and their closest real training slices (bottom)",
               "samples/nearest-real.png")],
             reduced=("gan.eval_samples=100",)),
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
