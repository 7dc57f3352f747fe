"""One-sentence definitions of every metric a report shows (matched by name pattern)."""

from __future__ import annotations

import re

# (pattern on the metric name without its test_/val_/train_ prefix, definition)
_DEFINITIONS: list[tuple[str, str]] = [
    (r"balanced_accuracy", "Best balanced accuracy of an attack's yes/no decision over all thresholds (the mean "
                           "of its true-positive and true-negative rates): 0.5 = chance."),
    (r"accuracy", "Share of images whose predicted DR grade equals the true grade."),
    (r"kappa", "Quadratic-weighted Cohen's kappa between predicted and true grades: 1 = perfect "
               "agreement, 0 = chance; large grade errors cost more (the standard DR-grading score)."),
    (r"loss$", "Mean training objective (cross-entropy for grading; Dice + CE for segmentation; BCE for GANs)."),
    (r"realism", "gan.evaluation = 'reference': mean sigmoid output of a reference discriminator trained "
                 "centrally on pooled real training images, over generated images (as defined by the FedGAN "
                 "paper); 'federated': mean k-NN realism (Kynkäänniemi et al. 2019) capped at 1 against the "
                 "sites' real images. Higher = more real-looking."),
    (r"^fd", "Fréchet distance between Gaussian fits of real and generated images' features: held-out images "
             "and a reference DR-grade classifier (gan.evaluation = 'reference'), or the sites' training images "
             "and a fixed random network ('federated'); not Inception (no weights offline). Lower is better."),
    (r"^kid", "Kernel Inception Distance (unbiased MMD with a cubic kernel) in the same feature space; lower is better."),
    (r"precision", "Share of generated images inside the k-NN manifold of real images (fidelity)."),
    (r"recall", "Share of real images inside the k-NN manifold of generated images (diversity / coverage of modes)."),
    (r"density", "Expected number of real-image k-NN balls containing a generated image, divided by k."),
    (r"coverage", "Share of real images whose k-NN ball contains at least one generated image."),
    (r"eval_sites", "Sites whose statistics entered the federated GAN metrics this evaluation "
                    "(gan.evaluation = 'federated')."),
    (r"ms_ssim|diversity", "Mean 1 - MS-SSIM over random pairs of generated images (0 = identical images)."),
    (r"tstr", "Train-on-synthetic, test-on-real: a grade classifier trained on generated images, scored on real ones."),
    (r"dice3d", "Dice overlap per patient (slices re-stacked into volumes), averaged over patients: 1 = perfect."),
    (r"dice", "Dice overlap 2|A∩B| / (|A|+|B|) between predicted and true organ masks: 1 = perfect."),
    (r"hd95", "95th percentile of surface distances between predicted and true organ boundaries, in mm; lower is better."),
    (r"epsilon_lower_bound", "Empirical lower bound on epsilon from the one-run canary audit (95% confidence): "
                             "a sound mechanism keeps it at or below the accountant's epsilon."),
    (r"epsilon", "Differential-privacy budget spent so far (with the stated delta): smaller = stronger guarantee."),
    (r"secagg_clipped", "Share of a site's update weights that secure aggregation clipped to its range (0 keeps "
                        "the secure mean within the rounding error of plain FedAvg)."),
    (r"dcr_auc", "Distance to closest record: AUC of telling training images from held-out ones by how close "
                 "the nearest generated image is. 0.5 = no sign of copying; below 0.5 the generated images sit "
                 "closer to held-out than to training images, which is not leakage either."),
    (r"auc", "Area under the ROC curve of a membership-inference attack: 0.5 = no leakage, 1 = members fully exposed."),
    (r"tpr", "True-positive rate of the attack at a fixed low false-positive rate: how many members are exposed with confidence."),
    (r"sites_norm_rejected", "Sites whose update federation.validation's norm bound rejected this round (also "
                             "counted in sites_rejected)."),
    (r"update_norm", "L2 norm of a site's update (its trained minus the received weights), as federation.validation's "
                     "norm bounds measure it."),
    (r"sites_(sampled|aggregated|rejected|dropped)", "Sites sampled this round, whose updates were aggregated, "
                                                     "rejected by validation, or that did not reply."),
    (r"^n$|_n$", "Number of evaluated samples."),
]


def define(metric: str) -> str | None:
    """The definition of a metric name (``test_kappa``, ``val_dice3d_mr_liver``, ...), or None."""
    name = re.sub(r"^(test|val|train)_", "", metric)
    for pattern, text in _DEFINITIONS:
        if re.search(pattern, name):
            return text
    return None


def definitions(metrics: list[str]) -> list[tuple[str, str]]:
    """Unique (label, definition) pairs for the metrics shown, in first-appearance order."""
    seen: dict[str, str] = {}
    for m in metrics:
        text = define(m)
        if text and text not in seen.values():
            seen[re.sub(r"^(test|val|train)_", "", m)] = text
    return list(seen.items())
