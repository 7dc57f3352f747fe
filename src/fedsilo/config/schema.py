"""The experiment config schema: every key a TOML file in ``configs/`` may set.

Sections map one-to-one to TOML tables. Each field's ``doc`` is the sentence that appears in
the generated config reference, so keep it precise (units, ranges, defaults' meaning).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from fedsilo.config.data_schema import (
    DataSection,
    PartitionSection,
)
from fedsilo.config.federation_schema import FederationSection
from fedsilo.config.gan_federation_schema import GanFederationSection, check_gan_federation
from fedsilo.config.loader import ConfigError, param, section
from fedsilo.config.privacy_schema import (
    CLIENT_DP_STRATEGIES,
    SECURE_STRATEGIES,
    AuditSection,
    PrivacySection,
)
from fedsilo.config.simulation_schema import SimulationSection
from fedsilo.registry import TASKS

ModeName = Literal["federated", "centralised", "local"]
EngineName = Literal["local", "simulation"]
TrackerName = Literal["none", "tensorboard", "mlflow"]
NormName = Literal["batch", "group", "instance", "none"]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclass
class ExperimentSection:
    name: str = param("experiment", "Name used in run folders and reports.")
    task: str = param("classification", f"What is learnt, one of the registered tasks (fedsilo.registry.TASKS): "
                                        f"{', '.join(TASKS)} (DR grading, organ segmentation, GAN synthesis).")
    mode: ModeName = param(
        "federated",
        "federated = Flower rounds across sites; centralised = all sites' training data pooled "
        "(upper reference); local = each site trains alone (lower reference).",
    )
    seed: int = param(0, "Seed for every random choice (data, partition, init, sampling, training).", ge=0)
    device: str = param("auto", "Torch device: auto (CUDA when present, else CPU; a simulated site on Ray: the GPU "
                                "Ray assigned it, see simulation.gpus_per_site), cpu, cuda, cuda:N or mps.")
    engine: EngineName = param(
        "local",
        "How federated rounds run: local = in-process Flower Grid (deterministic, no Ray); "
        "simulation = Flower's simulation engine (Ray). `fedsilo run --engine` overrides it.",
    )
    threads: int = param(0, "Torch CPU threads per process (0 = torch's default).", ge=0)
    amp: bool = param(False, "Mixed precision on CUDA: bfloat16 autocast of forward passes and losses (no effect on "
                             "CPU, the tested default).")
    tracking: TrackerName = param(
        "none",
        "Experiment tracker that also receives each round's global and per-site metrics, the resolved config "
        "and the report and model card (the run folder stays the complete record): none; tensorboard = event "
        "files in RUN_DIR/tensorboard/; mlflow = an MLflow run in a local SQLite store RUN_DIR/mlflow/mlflow.db, "
        "no server. Needs `pip install 'fedsilo[tracking]'`.",
    )
    tracking_uri: str = param(
        "", "Where the tracker writes instead of the run folder ('' = inside it). tensorboard: a log folder that "
            "runs share, each run in FOLDER/PARENT/RUN (RUN its run folder, PARENT the folder holding it); mlflow: "
            "a tracking URI (sqlite:///path/mlflow.db, http://host:5000, ...), runs filed under the MLflow "
            "experiment named experiment.name.")
    smoke_test: bool = param(False, "Marks a smoke test (the tour's configs/quick-*.toml): sized to show in about a "
                                    "minute that every step runs, not to give meaningful numbers. `fedsilo run` and "
                                    "the commands that use the trained model (sample, predict, export) then warn "
                                    "that its metrics and outputs say nothing about the method.")

    def validate(self, prefix: str) -> None:
        if self.task not in TASKS:
            close = difflib.get_close_matches(self.task, list(TASKS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{prefix}.task must be one of {', '.join(map(repr, TASKS))}, got {self.task!r}{hint}")
        if not _DEVICE_RE.match(self.device):
            raise ConfigError(
                f"{prefix}.device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', got {self.device!r}"
            )
        if not self.name or "/" in self.name:
            raise ConfigError(f"{prefix}.name must be a non-empty name without '/', got {self.name!r}")


@dataclass
class TrainSection:
    local_epochs: int = param(1, "Local epochs per round at each site.", ge=1)
    local_steps: int = param(0, "Local optimiser steps per round (0 = use local_epochs).", ge=0)
    batch_size: int = param(32, "Training batch size.", ge=1)
    lr: float = param(1e-3, "Learning rate.", gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = param(
        "cosine", "Learning rate over rounds: constant, or cosine decay from lr to lr * lr_final_factor."
    )
    lr_final_factor: float = param(0.05, "Last round's learning rate as a fraction of lr (cosine).", ge=0.0, le=1.0)
    optimizer: Literal["adam", "adamw", "sgd"] = param("adam", "Local optimiser (reset each round unless "
                                                                "keep_optimizer_state).")
    momentum: float = param(0.9, "SGD momentum.", ge=0.0, lt=1.0)
    weight_decay: float = param(0.0, "Weight decay.", ge=0.0)
    keep_optimizer_state: bool = param(
        False,
        "Each site keeps its optimisers' state (Adam moments and step counts of every network; a GAN's "
        "generator and discriminator) from one round to its next instead of starting fresh (the learning-rate "
        "schedule follows the round number either way). The state never travels: the site keeps it in memory "
        "(Flower's Context.state) and in a file for resume: deployed sites in the folder their node config key "
        "'site-state' names, simulated sites (local and simulation engines) in RUN_DIR/site-state/. A resumed "
        "run then equals an uninterrupted one bit for bit. Centralised runs keep it in their checkpoint.")


GanNorm = Literal["batch", "group", "instance", "none"]
DiffAugmentPolicy = Literal["color", "translation", "cutout"]
GAN_SIZES = (28, 32, 64, 128)


@dataclass
class GanSection:
    latent_dim: int = param(100, "Size of the latent code z (DCGAN: 100).", ge=1)
    g_width: int = param(64, "Generator width: channels of its last hidden layer (ngf; doubles towards z).", ge=4)
    d_width: int = param(64, "Discriminator width: channels of its first layer (ndf; doubles per block).", ge=4)
    norm: GanNorm = param(
        "batch", "Normalisation of both networks: batch (DCGAN), group, instance or none (DP-SGD needs the "
                 "discriminator without batch norm; privacy.mode = 'sample' converts it).")
    conditional: bool = param(False, "Class-conditional on the DR grade (generator label embedding, projection "
                                     "discriminator); enables train-on-synthetic, test-on-real utility.")
    label_smoothing: float = param(0.0, "One-sided label smoothing: real target 1 - label_smoothing (0 = off).",
                                   ge=0.0, lt=0.5)
    lr_g: float = param(2e-4, "Generator learning rate (Adam).", gt=0.0)
    lr_d: float = param(2e-4, "Discriminator learning rate (Adam).", gt=0.0)
    beta1: float = param(0.5, "Adam beta1 of both networks (DCGAN: 0.5).", ge=0.0, lt=1.0)
    d_steps: int = param(1, "Discriminator steps per generator step.", ge=1, le=10)
    pretrained: str = param(
        "", "A finished GAN run folder (e.g. CT pre-training) whose generator and discriminator initialise "
            "this run, adapted to its channels and resolution ('' = DCGAN initialisation). Works with "
            "privacy.mode = 'sample' as a public-data warm start (the source run's images count as public: "
            "epsilon covers only this run's sites; the discriminator's batch norms become group norms: "
            "scales copied, running statistics dropped) and with a smaller discriminator (gan.d_width, "
            "gan.d_blocks: matching layers copied).")
    eval_samples: int = param(1000, "Generated images per evaluation (realism, FD, KID, precision/recall).", ge=10)
    evaluation: Literal["reference", "federated"] = param(
        "reference", "How realism, FD and precision/recall are scored: 'reference' = networks trained centrally on "
                     "the pooled real images (a discriminator for realism, a grade classifier's features for FD/KID; "
                     "against the global test split; local and simulation engines only); 'federated' = a fixed "
                     "random feature network that ships with fedsilo, statistics computed at each site on its "
                     "training images and combined at the coordinator (k-NN realism, no KID; every engine, "
                     "deployment included). See the README's FedGAN deployment section.")
    reference_epochs: int = param(
        20, "Epochs of the reference networks trained centrally on the pooled real training images (a GAN "
            "whose discriminator scores realism, and a DR-grade classifier whose features give FD/KID); cached. "
            "gan.evaluation = 'reference' only.",
        ge=1)
    tstr_epochs: int = param(10, "Conditional runs: epochs of the train-on-synthetic classifier.", ge=1)
    ema_decay: float = param(
        0.0, "Exponential moving average of the generator (Karras et al., ICLR 2018; Yazici et al., ICLR 2019), "
             "kept by the coordinator (or the centralised trainer) over the global generators, once per round: "
             "ema = decay * ema + (1 - decay) * G_round, started at round 1; evaluation, sample grids, final.pt, "
             "`fedsilo sample` and `export` use it (final.pt keeps the raw weights as model_raw), sites keep "
             "training the raw aggregate; the decay is per round, so choose it for the number of rounds "
             "(0 = off; ignored in experiment.mode = 'local').", ge=0.0, lt=1.0)
    diffaugment: list[DiffAugmentPolicy] = param(
        [], "DiffAugment (Zhao et al., NeurIPS 2020): differentiable colour, translation (1/8 of the side) and "
            "cutout (half the side) transforms, drawn per image, applied to real and generated images before "
            "every discriminator call of site training, in the order listed ([] = off).")
    spectral_norm: bool = param(
        False, "Spectral normalisation of every discriminator weight (Miyato et al., ICLR 2018; the projection "
               "embedding too). Not with privacy.mode = 'sample': Opacus has no per-sample gradients for it.")
    d_blocks: int = param(
        -1, "Stride-2 blocks of the discriminator between stem and head (-1 = DCGAN's for the image size: 1 at "
            "28 px, 2 at 32, 3 at 64, 4 at 128); fewer gives a smaller discriminator (its head covers the larger "
            "map), e.g. for DP-SGD, whose noise grows with the number of weights.", ge=-1, le=4)
    federation: GanFederationSection = section(
        GanFederationSection, "How the generator and discriminator are federated (site-kept discriminator, "
                              "server optimiser per network).")


@dataclass
class ClassifierSection:
    width: int = param(32, "Channels of the first conv block (doubles per block).", ge=1)
    depth: int = param(3, "Conv blocks (each halves the resolution).", ge=1, le=6)
    norm: NormName = param("batch", "Normalisation layers (group/none for DP-SGD).")
    dropout: float = param(0.0, "Dropout before the classifier head.", ge=0.0, lt=1.0)
    hflip: bool = param(True, "Random horizontal flips in training (fundus laterality carries no grade).")


#: Segmentation methods whose batches tie slices together, and how (refused under sample-level DP).
PER_SAMPLE_BREAKERS = {
    "gin+ipa": "it trains on two views of each slice as two rows (two clipped gradients per slice)",
    "fmaug": "it mixes amplitude spectra between the slices of a batch (one slice moves the others' gradients)",
}
SegMethod = Literal["none", "gin", "gin+ipa", "randconv", "prorandconv", "fmaug", "raffesdg", "dsbn"]
UNetNorm = Literal["batch", "instance", "group", "dsbn"]


@dataclass
class SegmentationSection:
    method: SegMethod = param(
        "gin",
        "Cross-modality method: an intensity augmentation (none, gin, gin+ipa, randconv, prorandconv, fmaug, "
        "raffesdg) with unet.norm, or dsbn (no augmentation, one batch norm per modality).",
    )
    lambda_dice: float = param(1.0, "Weight of the (marginal) soft Dice term of the loss.", ge=0.0)
    lambda_ce: float = param(1.0, "Weight of the (marginal) cross-entropy term of the loss.", ge=0.0)
    hd95: bool = param(True, "Compute 3D HD95 (mm) per organ on the test sets (slower than Dice).")
    overlays: bool = param(True, "Write overlay PNGs (image, truth, prediction) per test modality.")

    def validate(self, prefix: str) -> None:
        if self.lambda_dice == 0 and self.lambda_ce == 0:
            raise ConfigError(f"{prefix}.lambda_dice and lambda_ce must not both be 0")


@dataclass
class UNetSection:
    base_width: int = param(16, "Channels of the first U-Net level (doubled per level).", ge=1)
    depth: int = param(4, "U-Net levels (depth - 1 down-samplings; data.volume.size must divide by 2**(depth-1)).",
                       ge=2, le=7)
    num_res_units: int = param(1, "Residual units per block (MONAI UNet).", ge=0, le=4)
    norm: UNetNorm = param(
        "batch", "Normalisation: batch, instance, group, or dsbn (one batch norm per modality; "
                 "segmentation.method = 'dsbn' sets it).",
    )
    dropout: float = param(0.0, "Dropout probability in the U-Net blocks.", ge=0.0, lt=1.0)


@dataclass
class AugmentSection:
    prob: float = param(1.0, "Probability that a training slice is augmented (0 = never).", ge=0.0, le=1.0)
    gin_layers: int = param(4, "GIN / IPA: random conv layers (Ouyang et al.: 4).", ge=2, le=8)
    gin_channels: int = param(2, "GIN / IPA: intermediate channels (Ouyang et al.: 2).", ge=1, le=16)
    consistency_weight: float = param(
        1.0, "gin+ipa: weight of the consistency loss between the two views' predictions.", ge=0.0
    )
    consistency_kind: Literal["kl", "js", "symmetric_kl"] = param(
        "kl", "gin+ipa: consistency divergence (kl = Ouyang et al.'s reference code).")
    randconv_kernels: list[int] = param([1, 3, 5, 7], "randconv: kernel sizes drawn from (odd).", ge=1)
    fmaug_band: float = param(0.1, "fmaug: low-frequency band (fraction of the spectrum) whose amplitude is mixed.",
                              gt=0.0, lt=1.0)

    def validate(self, prefix: str) -> None:
        if not self.randconv_kernels or any(k % 2 == 0 for k in self.randconv_kernels):
            raise ConfigError(f"{prefix}.randconv_kernels must be a non-empty list of odd sizes, "
                              f"got {self.randconv_kernels!r}")


@dataclass
class EvalSection:
    batch_size: int = param(256, "Evaluation batch size.", ge=1)
    keep_models: bool = param(
        True,
        "Keep the global model of every evaluation round in RUN_DIR/models/ (what `fedsilo sample/export/"
        "predict --round` use); false keeps only final.pt.",
    )


@dataclass
class ExperimentConfig:
    """A whole experiment. Build it with :func:`fedsilo.config.load_config`."""

    experiment: ExperimentSection = section(ExperimentSection, "What runs, how, with which seed.")
    data: DataSection = section(DataSection, "Images, preprocessing and splits.")
    partition: PartitionSection = section(PartitionSection, "Splitting training data into sites.")
    federation: FederationSection = section(FederationSection, "Rounds, sites, sampling and strategy.")
    train: TrainSection = section(TrainSection, "Local training at each site.")
    classifier: ClassifierSection = section(
        ClassifierSection, "DR-grade CNN classifier (task = classification; synthesis: the reference classifier).")
    gan: GanSection = section(GanSection, "DCGAN generator and discriminator (task = synthesis).")
    segmentation: SegmentationSection = section(SegmentationSection, "Organ segmentation (task = segmentation).")
    unet: UNetSection = section(UNetSection, "2D U-Net (task = segmentation).")
    augment: AugmentSection = section(AugmentSection, "Intensity augmentation options (task = segmentation).")
    eval: EvalSection = section(EvalSection, "Evaluation.")
    simulation: SimulationSection = section(
        SimulationSection, "Flower's simulation engine (experiment.engine = 'simulation'): which Ray cluster, and "
                           "what each simulated site gets.")
    privacy: PrivacySection = section(PrivacySection, "Differential privacy in training (sample- or client-level).")
    audit: AuditSection = section(AuditSection, "Privacy audit of a finished run (`fedsilo audit RUN_DIR`).")

    def _check_secure_aggregation(self) -> None:
        fed = self.federation
        if fed.strategy.name not in SECURE_STRATEGIES:
            raise ConfigError(
                f"federation.strategy.name = {fed.strategy.name!r} cannot run with federation.secure_aggregation = "
                f"true: it needs each site's update, and the coordinator only sees their sum (use one of "
                f"{', '.join(SECURE_STRATEGIES)})")
        if fed.strategy.local_norm:
            raise ConfigError("federation.strategy.local_norm cannot run with federation.secure_aggregation = true: "
                              "group-local arrays are averaged per group, which needs the individual updates")
        if self.privacy.mode == "client" and (self.privacy.clipping, self.privacy.clipping_side) != ("fixed", "client"):
            raise ConfigError("privacy.mode = 'client' with federation.secure_aggregation = true is distributed DP: "
                              "each site clips and noises its own update, so it needs privacy.clipping = 'fixed' and "
                              f"privacy.clipping_side = 'client', got {self.privacy.clipping!r} and "
                              f"{self.privacy.clipping_side!r}")
        if self.experiment.mode != "federated":
            raise ConfigError(f"federation.secure_aggregation needs experiment.mode = 'federated', got "
                              f"{self.experiment.mode!r}")
        if fed.num_sites < 2:
            raise ConfigError("federation.secure_aggregation needs at least 2 sites (a sum of one update is that update)")
        if self.experiment.task == "segmentation" and self.segmentation.method == "dsbn":
            raise ConfigError("segmentation.method = 'dsbn' cannot run with federation.secure_aggregation = true: its "
                              "per-modality normalisation is averaged per modality, which needs the individual updates")
        if fed.validation.bounds_norms:
            raise ConfigError("federation.validation.max_update_norm / max_update_norm_factor cannot run with "
                              "federation.secure_aggregation = true: the coordinator only sees masked updates and "
                              "their sum; bound each update at its site with federation.secagg.clipping_range")

    def _check_gan(self, size: int) -> None:
        gan = self.gan
        if gan.spectral_norm and self.privacy.mode == "sample":
            raise ConfigError("gan.spectral_norm cannot be combined with privacy.mode = 'sample': Opacus computes no "
                              "per-sample gradients through the spectral-norm parametrisation (its power-iteration "
                              "buffers); use a small discriminator (gan.d_width, gan.d_blocks) for DP instead")
        full = 1 if size == 28 else (size // 4).bit_length() - 2
        if gan.d_blocks > full:
            raise ConfigError(f"gan.d_blocks must be <= {full} at {size} px (DCGAN's depth), got {gan.d_blocks}")
        if len(set(gan.diffaugment)) != len(gan.diffaugment):
            raise ConfigError(f"gan.diffaugment lists a policy twice: {gan.diffaugment}")

    def validate(self, prefix: str = "") -> None:
        fed, part = self.federation, self.partition
        if fed.min_sites > fed.num_sites:
            raise ConfigError(
                f"federation.min_sites must be <= federation.num_sites ({fed.num_sites}), got {fed.min_sites}"
            )
        if fed.site_names and len(fed.site_names) != fed.num_sites:
            raise ConfigError(
                f"federation.site_names must name all {fed.num_sites} sites, got {len(fed.site_names)} names"
            )
        if len(set(fed.site_names)) != len(fed.site_names):
            raise ConfigError(f"federation.site_names must be unique, got {fed.site_names!r}")
        if part.name == "severity" and part.sites_per_class > fed.num_sites:
            raise ConfigError(
                f"partition.sites_per_class must be <= federation.num_sites ({fed.num_sites}), "
                f"got {part.sites_per_class}"
            )
        if part.name == "pathological" and part.classes_per_site > 5:
            raise ConfigError(f"partition.classes_per_site must be <= 5 (DR grades), got {part.classes_per_site}")
        if self.data.source in ("medmnist", "imagefolder") and not self.data.path:
            raise ConfigError(f"data.path must name the {self.data.source} data when data.source = {self.data.source!r}")
        if self.data.source == "volumes":
            if len(self.data.sites) != fed.num_sites:
                raise ConfigError(
                    f"federation.num_sites ({fed.num_sites}) must equal the number of [[data.sites]] "
                    f"entries ({len(self.data.sites)}) when data.source = 'volumes'"
                )
            names = [s.name for s in self.data.sites if s.name] + [t.name for t in self.data.test if t.name]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(f"data.sites / data.test names must be unique, got duplicates {dup}")
        elif self.data.sites:
            raise ConfigError(f"[[data.sites]] is only used with data.source = 'volumes', got {self.data.source!r}")
        if fed.secure_aggregation:
            self._check_secure_aggregation()
        if self.privacy.mode == "client":
            strategy = fed.strategy
            if strategy.name not in CLIENT_DP_STRATEGIES:
                raise ConfigError(
                    f"federation.strategy.name must be one of {', '.join(CLIENT_DP_STRATEGIES)} with "
                    f"privacy.mode = 'client' (DP-FedAvg noises a plain average), got {strategy.name!r}"
                )
            if strategy.local_norm:
                raise ConfigError(
                    "federation.strategy.local_norm must be false with privacy.mode = 'client' "
                    "(group-local arrays would be shared without noise)"
                )
            if fed.validation.max_update_norm_factor > 0 and self.privacy.active:
                raise ConfigError(
                    "federation.validation.max_update_norm_factor must be 0 with privacy.mode = 'client': whether "
                    "a site's update is kept would depend on the other sites' updates (through the median), "
                    "outside the per-site sensitivity DP-FedAvg's noise assumes; updates are clipped to the "
                    "clipping norm already, and federation.validation.max_update_norm judges each one alone")
        if self.experiment.task == "synthesis":
            size = self.data.volume.size if self.data.source == "volumes" else self.data.image_size
            where = "data.volume.size" if self.data.source == "volumes" else "data.image_size"
            if size not in GAN_SIZES:
                raise ConfigError(f"{where} must be one of {', '.join(map(str, GAN_SIZES))} for the DCGAN "
                                  f"(experiment.task = 'synthesis'), got {size}")
            check_gan_federation(self.gan.federation, fed.strategy.name)
            if self.gan.conditional and self.data.source == "volumes":
                raise ConfigError("gan.conditional needs graded fundus images; abdominal slices have no grade "
                                  "(data.source = 'volumes')")
            self._check_gan(size)
        if self.privacy.canaries and self.privacy.mode != "sample":
            # (with epsilon = inf, the non-private point of a sweep, there is no DP-SGD to audit: no canaries)
            raise ConfigError(f"privacy.canaries audits DP-SGD: it needs privacy.mode = 'sample', got "
                              f"{self.privacy.mode!r}")
        if self.experiment.task == "segmentation":
            reason = PER_SAMPLE_BREAKERS.get(self.segmentation.method)
            if reason and self.privacy.mode == "sample" and self.privacy.active:
                raise ConfigError(f"segmentation.method = {self.segmentation.method!r} cannot be combined with "
                                  f"privacy.mode = 'sample': {reason}, which breaks DP-SGD's per-sample bound")
            if self.data.source != "volumes":
                raise ConfigError(f"data.source must be 'volumes' when experiment.task = 'segmentation', "
                                  f"got {self.data.source!r}")
            step = 2 ** (self.unet.depth - 1)
            if self.data.volume.size % step:
                raise ConfigError(f"data.volume.size must be divisible by 2**(unet.depth - 1) = {step}, "
                                  f"got {self.data.volume.size}")
