"""What each demo step claims, checked on the numbers its runs wrote.

The demo narrates an effect per step; a :class:`Claim` states it as an inequality on the step's
final test metrics and records whether this run showed it, so the demo page never says more than
its own numbers (and ``benchmarks/demo_seeds.py`` checks the same claims over seeds 0, 1, 2):

- classification: a federation of hospitals with the same grade mix (IID) comes close to pooling
  the data (kappa >= ``CLOSE_TO_CENTRALISED`` x centralised), and label skew (Dirichlet) costs
  kappa against it;
- FedGIN: GIN raises the scarce modality's (MRI) 3D Dice and does not sink the rich one's (CT
  Dice within ``NOT_SUNK`` of no augmentation);
- CT pre-training: a reference discriminator trained on the real CT slices gives the generated
  slices a mean probability of being real of at least ``RECOGNISABLE`` (the FedGAN paper's
  realism score).

The thresholds are fixed here, before the runs, and the same at every size and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedsilo.report.summary import final_metrics
from fedsilo.run.folder import RunDir

#: federated (IID) test kappa as a fraction of centralised that counts as "close"
CLOSE_TO_CENTRALISED = 0.85
#: CT 3D Dice that GIN may lose against no augmentation and still "not sink" CT (absolute)
NOT_SUNK = 0.05
#: realism (mean probability of being real under a reference discriminator) of a "recognisable" generator
RECOGNISABLE = 0.5


@dataclass(frozen=True)
class Claim:
    """One narrated effect, measured.

    Attributes
    ----------
    step : str
        The demo step that makes it.
    statement : str
        The effect in words, with its threshold.
    holds : bool
        Whether this run's numbers show it.
    evidence : str
        The numbers it was judged on.
    values : dict
        Those numbers by name (for tables over seeds).
    """

    step: str
    statement: str
    holds: bool
    evidence: str
    values: dict[str, float] = field(default_factory=dict)


def _runs(folder: Path) -> list[RunDir]:
    return [RunDir.open(p.parent) for p in sorted(folder.rglob("config.toml")) if (p.parent / "final.pt").is_file()]


def _metric(folder: Path, metric: str, match: Callable[[RunDir], bool], what: str) -> float:
    """``metric`` of the one finished run under ``folder`` that ``match`` picks."""
    found = [r for r in _runs(folder) if match(r)]
    if len(found) != 1:
        raise ValueError(f"{folder}: expected one finished {what} run, found {len(found)}")
    value = final_metrics(found[0]).get(metric)
    if value is None:
        raise ValueError(f"{found[0].path}: no final {metric!r} in metrics.jsonl")
    return value


def classification_claims(folder: Path) -> list[Claim]:
    """Federated IID close to centralised; label skew costs kappa (test kappa, final round)."""
    def run(mode: str, partition: str | None) -> Callable[[RunDir], bool]:
        return lambda r: r.cfg.experiment.mode == mode and (partition is None or r.cfg.partition.name == partition)

    cent = _metric(folder, "test_kappa", run("centralised", "iid"), "centralised")
    iid = _metric(folder, "test_kappa", run("federated", "iid"), "federated IID")
    skew = _metric(folder, "test_kappa", run("federated", "dirichlet"), "federated Dirichlet")
    ratio = iid / cent if cent > 0 else float("nan")
    return [
        Claim("classification", f"federated (same grade mix) reaches >= {CLOSE_TO_CENTRALISED:.0%} of centralised "
              "kappa", bool(ratio >= CLOSE_TO_CENTRALISED),
              f"kappa {iid:.3f} federated vs {cent:.3f} centralised ({ratio:.0%})",
              {"kappa_centralised": cent, "kappa_federated_iid": iid, "iid_over_centralised": ratio}),
        Claim("classification", "label skew across hospitals costs kappa", bool(skew < iid),
              f"kappa {skew:.3f} with label skew vs {iid:.3f} without ({skew - iid:+.3f})",
              {"kappa_federated_skew": skew, "skew_cost": iid - skew}),
    ]


def fedgin_claims(folder: Path) -> list[Claim]:
    """GIN lifts MRI 3D Dice and keeps CT within ``NOT_SUNK`` of no augmentation (final round)."""
    def run(method: str) -> Callable[[RunDir], bool]:
        return lambda r: r.cfg.segmentation.method == method

    mr = {m: _metric(folder, "test_dice3d_mr_mean", run(m), m) for m in ("none", "gin")}
    ct = {m: _metric(folder, "test_dice3d_ct_mean", run(m), m) for m in ("none", "gin")}
    return [
        Claim("fedgin", "GIN raises the scarce modality's (MRI) 3D Dice", bool(mr["gin"] > mr["none"]),
              f"MRI Dice {mr['none']:.3f} -> {mr['gin']:.3f} with GIN ({mr['gin'] - mr['none']:+.3f})",
              {"mr_dice_none": mr["none"], "mr_dice_gin": mr["gin"]}),
        Claim("fedgin", f"GIN does not sink the rich modality (CT 3D Dice within {NOT_SUNK} of no augmentation)",
              bool(ct["gin"] >= ct["none"] - NOT_SUNK),
              f"CT Dice {ct['none']:.3f} -> {ct['gin']:.3f} with GIN ({ct['gin'] - ct['none']:+.3f})",
              {"ct_dice_none": ct["none"], "ct_dice_gin": ct["gin"]}),
    ]


def pretrain_claims(folder: Path) -> list[Claim]:
    """The pre-trained generator's CT slices score realism >= ``RECOGNISABLE``."""
    realism = _metric(folder, "test_realism", lambda r: True, "pre-training")
    return [Claim("pretrain", f"the pre-trained generator draws CT slices that a discriminator trained on real CT "
                  f"takes for real (realism >= {RECOGNISABLE})", bool(realism >= RECOGNISABLE),
                  f"realism {realism:.3f}", {"ct_realism": realism})]


#: the claims of each demo step that narrates an effect
CLAIMS: dict[str, Callable[[Path], list[Claim]]] = {
    "classification": classification_claims,
    "fedgin": fedgin_claims,
    "pretrain": pretrain_claims,
}


def step_claims(name: str, folder: Path) -> list[Claim]:
    """The claims of step ``name`` judged on its folder (none for a step that narrates no effect)."""
    check = CLAIMS.get(name)
    return check(folder) if check else []
