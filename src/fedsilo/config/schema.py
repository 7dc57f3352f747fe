"""The experiment config schema: every key a TOML file in ``configs/`` may set.

Sections map one-to-one to TOML tables. Each field's ``doc`` is the sentence that appears in
the generated config reference, so keep it precise (units, ranges, defaults' meaning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from fedsilo.config.loader import ConfigError, param, section

TaskName = Literal["classification", "synthesis", "segmentation"]
ModeName = Literal["federated", "centralised", "local"]
EngineName = Literal["local", "simulation"]
StrategyName = Literal[
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavgm",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "centeredclip",
    "fedbn",
]
PartitionName = Literal["iid", "dirichlet", "pathological", "size_skew", "natural", "severity"]
NormName = Literal["batch", "group", "instance", "none"]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclass
class ExperimentSection:
    name: str = param("experiment", "Name used in run folders and reports.")
    task: TaskName = param("classification", "What is learnt: DR grading, GAN synthesis or organ segmentation.")
    mode: ModeName = param(
        "federated",
        "federated = Flower rounds across sites; centralised = all sites' training data pooled "
        "(upper reference); local = each site trains alone (lower reference).",
    )
    seed: int = param(0, "Seed for every random choice (data, partition, init, sampling, training).", ge=0)
    device: str = param("auto", "Torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.")
    engine: EngineName = param(
        "local",
        "How federated rounds run: local = in-process Flower Grid (deterministic, no Ray); "
        "simulation = Flower's simulation engine (Ray). `fedsilo run --engine` overrides it.",
    )
    threads: int = param(0, "Torch CPU threads per process (0 = torch's default).", ge=0)
    amp: bool = param(False, "Mixed precision on CUDA: bfloat16 autocast of forward passes and losses (no effect on "
                             "CPU, the tested default).")

    def validate(self, prefix: str) -> None:
        if not _DEVICE_RE.match(self.device):
            raise ConfigError(
                f"{prefix}.device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', got {self.device!r}"
            )
        if not self.name or "/" in self.name:
            raise ConfigError(f"{prefix}.name must be a non-empty name without '/', got {self.name!r}")


@dataclass
class FundusPhantomSection:
    n_train: int = param(600, "Phantom training images (all sites together).", ge=1)
    n_test: int = param(200, "Phantom held-out test images (the global test split).", ge=0)
    n_cameras: int = param(
        3, "Distinct camera styles (colour cast, vignetting, blur); `natural` partitioning gives one per site.", ge=1
    )
    grade_weights: list[float] = param(
        [0.45, 0.12, 0.19, 0.18, 0.06],
        "Relative frequency of DR grades 0-4 (default: RetinaMNIST's skew).",
        ge=0.0,
    )

    def validate(self, prefix: str) -> None:
        if len(self.grade_weights) != 5 or sum(self.grade_weights) <= 0:
            raise ConfigError(
                f"{prefix}.grade_weights must be 5 non-negative numbers with a positive sum, "
                f"got {self.grade_weights!r}"
            )


@dataclass
class ImageFolderSection:
    csv: str = param("", "CSV of labels (APTOS/EyePACS layout); relative paths are relative to data.path.")
    image_dir: str = param("", "Folder of images; relative to data.path; empty = data.path itself.")
    id_column: str = param("id_code", "CSV column with the image id (file name without extension, or with it).")
    label_column: str = param("diagnosis", "CSV column with the DR grade 0-4.")
    site_column: str = param("", "Optional CSV column naming each image's site (for `natural` partitioning).")
    extensions: list[str] = param([".png", ".jpg", ".jpeg", ".tif"], "File extensions tried for each id.")


@dataclass
class FundusPreprocessSection:
    grayscale: bool = param(False, "Convert to one channel (luminance) instead of RGB.")
    clahe: bool = param(False, "Contrast-limited adaptive histogram equalisation (per channel, skimage).")
    clahe_clip: float = param(0.01, "CLAHE clip limit (skimage's normalised clip_limit).", gt=0.0, le=1.0)
    clahe_tiles: int = param(8, "CLAHE tiles per side.", ge=1)
    gamma: float = param(1.0, "Gamma correction exponent applied to [0, 1] intensities (1 = off).", gt=0.0)
    quantise_levels: int = param(0, "Quantise intensities to this many levels (0 = off).", ge=0, le=256)

    def validate(self, prefix: str) -> None:
        if self.quantise_levels == 1:
            raise ConfigError(f"{prefix}.quantise_levels must be 0 (off) or 2..256, got 1")


VolumeKind = Literal["phantom", "chaos", "nnunet", "manifest", "pair", "dicom", "png"]


@dataclass
class VolumeSourceSection:
    """One ``[[data.sites]]`` (a hospital's scans) or ``[[data.test]]`` (a held-out set) entry."""

    name: str = param("", "Site or test-set name (default: <kind>-<modality>-<position>).")
    kind: VolumeKind = param(
        "phantom",
        "phantom (built-in abdomen), chaos (image_<id>/label_<id>.nii.gz), nnunet (imagesTr/labelsTr + "
        "dataset.json; AMOS, MSD), manifest (CSV: image, label, modality, patient_id, site), pair (one "
        "image + label file), dicom (folder of DICOM series), png (<patient>/<series>/<slice>.png, unlabelled).",
    )
    modality: Literal["ct", "mr"] = param("ct", "Imaging modality of these scans.")
    path: str = param("", "Folder, CSV or image file (relative paths: relative to the working directory).")
    label_path: str = param("", "Label map file for kind = 'pair'.")
    mapping: str = param(
        "", "Label table to the organ vocabulary: chaos_mr, amos, totalsegmentator_v2 or a .toml file "
            "('' = the source's default)."
    )
    patients: list[str] = param([], "Only these patient ids ([] = all).")
    count: int = param(0, "Phantom: number of patients; other kinds: keep the first N patients (0 = all).", ge=0)
    offset: int = param(0, "Phantom: index of the first patient; other kinds: skip the first N patients.", ge=0)
    contrast: str = param("", "Phantom: CT phase (native, venous) or MR weighting (t2, t1); '' = default.")
    shape: list[int] = param([32, 128, 128], "Phantom volume size (D, H, W) in voxels.", ge=4)

    def validate(self, prefix: str) -> None:
        if self.kind == "phantom":
            if self.count < 1:
                raise ConfigError(f"{prefix}.count must be >= 1 for a phantom, got {self.count}")
            if len(self.shape) != 3:
                raise ConfigError(f"{prefix}.shape must be [D, H, W], got {self.shape!r}")
        elif not self.path:
            raise ConfigError(f"{prefix}.path must name the {self.kind} data")
        if self.kind == "pair" and not self.label_path and self.mapping:
            raise ConfigError(f"{prefix}.mapping is set but label_path is empty")


@dataclass
class VolumePreprocessSection:
    size: int = param(96, "In-plane size: every slice becomes size x size pixels.", ge=8, le=1024)
    ct_level: float = param(40.0, "CT window level (HU); default abdomen W400/L40.")
    ct_width: float = param(400.0, "CT window width (HU).", gt=0.0)
    mr_lower_percentile: float = param(0.5, "MR: lower clipping percentile per volume.", ge=0.0, lt=100.0)
    mr_upper_percentile: float = param(99.5, "MR: upper clipping percentile per volume.", gt=0.0, le=100.0)
    mr_method: Literal["minmax", "zscore"] = param("minmax", "MR: min-max to [0, 1] or z-score after clipping.")
    crop_foreground: bool = param(False, "Crop in-plane to the body before resizing.")
    skip_empty: bool = param(False, "Leave slices without any labelled organ out of training.")
    context: int = param(0, "2.5D: neighbouring slices on each side given as extra channels.", ge=0, le=4)
    cache: bool = param(True, "Cache preprocessed files on disk (FEDSILO_CACHE or ~/.cache/fedsilo).")

    def validate(self, prefix: str) -> None:
        if self.mr_lower_percentile >= self.mr_upper_percentile:
            raise ConfigError(
                f"{prefix}.mr_lower_percentile must be < mr_upper_percentile, got "
                f"{self.mr_lower_percentile} >= {self.mr_upper_percentile}"
            )


@dataclass
class DataSection:
    source: Literal["phantom", "medmnist", "imagefolder", "volumes"] = param(
        "phantom",
        "Where images come from: built-in fundus phantom, a MedMNIST .npz file, an image folder + CSV, "
        "or 'volumes': abdominal CT/MRI sites listed in [[data.sites]].",
    )
    path: str = param("", "MedMNIST .npz file or image-folder root (unused for phantom).")
    image_size: int = param(28, "Images are resized to image_size x image_size pixels.", ge=8, le=512)
    train_split: str = param("train", "MedMNIST split partitioned over the sites.")
    test_split: str = param(
        "test", "MedMNIST split used as the global held-out test set ('' = none). RetinaMNIST here has only 'val'."
    )
    val_fraction: float = param(
        0.15, "Fraction of each site's partition kept as that site's validation split.", ge=0.0, lt=1.0
    )
    phantom: FundusPhantomSection = section(FundusPhantomSection, "Built-in fundus phantom.")
    imagefolder: ImageFolderSection = section(ImageFolderSection, "Image folder with a CSV of labels.")
    preprocess: FundusPreprocessSection = section(FundusPreprocessSection, "Fundus preprocessing (FedGAN pipeline).")
    sites: list[VolumeSourceSection] = param([], "Abdominal sites (data.source = 'volumes'), one table each.")
    test: list[VolumeSourceSection] = param([], "Held-out abdominal test sets, evaluated by the server.")
    volume: VolumePreprocessSection = section(VolumePreprocessSection, "CT/MRI preprocessing and slicing.")


@dataclass
class PartitionSection:
    name: PartitionName = param(
        "iid",
        "How training data is split into sites: iid, dirichlet (label skew, alpha), pathological "
        "(classes_per_site grades per site), size_skew, natural (by site/camera id), severity "
        "(each grade held by sites_per_class sites: the FedGAN protocol).",
    )
    alpha: float = param(0.5, "Dirichlet concentration (smaller = more skewed).", gt=0.0)
    classes_per_site: int = param(2, "Grades per site for `pathological`.", ge=1)
    sites_per_class: int = param(2, "Sites sharing each grade for `severity`.", ge=1)
    size_skew: Literal["linear", "square", "exponential"] = param(
        "linear", "Site size profile for `size_skew` (flwr-datasets Linear/Square/Exponential partitioner)."
    )
    min_size: int = param(2, "Minimum training images per site (dirichlet retries until met).", ge=0)


@dataclass
class StrategySection:
    name: StrategyName = param(
        "fedavg", "Aggregation strategy (Flower strategies; centeredclip: centered clipping; fedbn keeps normalisation local)."
    )
    proximal_mu: float = param(0.01, "FedProx proximal weight mu (applied in the client loss).", ge=0.0)
    server_lr: float = param(0.1, "Server learning rate eta (fedadam, fedyogi, fedadagrad, fedavgm).", gt=0.0)
    server_momentum: float = param(0.9, "Server momentum (fedavgm).", ge=0.0, lt=1.0)
    beta_1: float = param(0.9, "First-moment decay (fedadam, fedyogi).", ge=0.0, lt=1.0)
    beta_2: float = param(0.99, "Second-moment decay (fedadam, fedyogi).", ge=0.0, lt=1.0)
    tau: float = param(1e-3, "Adaptivity constant tau (fedadam, fedyogi, fedadagrad).", gt=0.0)
    trim_beta: float = param(0.2, "Fraction trimmed from each end (fedtrimmedavg).", ge=0.0, lt=0.5)
    num_malicious: int = param(0, "Assumed malicious sites f (krum, multikrum, bulyan).", ge=0)
    num_selected: int = param(1, "Updates kept by multikrum.", ge=1)
    clip_radius: float = param(
        0.0, "Centered clipping radius tau in update-norm units (centeredclip; 0 = the round's median update norm).",
        ge=0.0)
    clip_iterations: int = param(3, "Centered clipping iterations per round (centeredclip).", ge=1, le=100)
    local_norm: bool = param(
        False, "Keep normalisation parameters and statistics local to each site (FedBN-style) with any strategy."
    )


@dataclass
class FederationSection:
    num_sites: int = param(3, "Number of sites (hospitals).", ge=1, le=1000)
    rounds: int = param(5, "Federated rounds (centralised/local modes: training periods of the same size).", ge=1)
    fraction_train: float = param(1.0, "Fraction of sites sampled for training each round.", gt=0.0, le=1.0)
    min_sites: int = param(
        1, "Minimum sites sampled and minimum valid updates per round; fewer stops the run with an error.", ge=1
    )
    eval_every: int = param(1, "Sites evaluate the global model on their validation split every N rounds.", ge=1)
    timeout: float = param(3600.0, "Seconds to wait for site replies each round.", gt=0.0)
    site_names: list[str] = param([], "Names of the sites (default site-1 ... site-N).")
    strategy: StrategySection = section(StrategySection, "Aggregation strategy.")


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
    optimizer: Literal["adam", "adamw", "sgd"] = param("adam", "Local optimiser (reset each round).")
    momentum: float = param(0.9, "SGD momentum.", ge=0.0, lt=1.0)
    weight_decay: float = param(0.0, "Weight decay.", ge=0.0)


GanNorm = Literal["batch", "group", "instance", "none"]
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
            "this run, adapted to its channels and resolution ('' = DCGAN initialisation).")
    eval_samples: int = param(1000, "Generated images per evaluation (realism, FD, KID, precision/recall).", ge=10)
    reference_epochs: int = param(
        20, "Epochs of the reference networks trained centrally on the pooled real training images (a GAN "
            "whose discriminator scores realism, and a DR-grade classifier whose features give FD/KID); cached.",
        ge=1)
    tstr_epochs: int = param(10, "Conditional runs: epochs of the train-on-synthetic classifier.", ge=1)


@dataclass
class ClassifierSection:
    width: int = param(32, "Channels of the first conv block (doubles per block).", ge=1)
    depth: int = param(3, "Conv blocks (each halves the resolution).", ge=1, le=6)
    norm: NormName = param("batch", "Normalisation layers (group/none for DP-SGD).")
    dropout: float = param(0.0, "Dropout before the classifier head.", ge=0.0, lt=1.0)
    hflip: bool = param(True, "Random horizontal flips in training (fundus laterality carries no grade).")


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


PrivacyMode = Literal["none", "sample", "client"]
CLIENT_DP_STRATEGIES = ("fedavg", "fedprox")


@dataclass
class PrivacySection:
    mode: PrivacyMode = param(
        "none",
        "none = no differential privacy; sample = DP-SGD at each site (Opacus; protects each training "
        "sample of a site); client = DP-FedAvg (Flower's DP wrappers; protects each site's whole contribution).",
    )
    epsilon: float = param(
        0.0,
        "Target epsilon of the whole run (per site for sample, for the federation for client): the noise "
        "multiplier is calibrated to reach it after federation.rounds rounds. 0 = use noise_multiplier; "
        "inf = no DP (the model keeps its DP-compatible layers, but nothing is clipped or noised: the "
        "non-private point of a privacy sweep).",
        ge=0.0,
    )
    noise_multiplier: float = param(1.0, "Noise standard deviation over the clipping norm, used when epsilon = 0.", gt=0.0)
    delta: float = param(
        0.0,
        "Target delta; 0 = min(1e-5, 1/n) with n a site's training samples (sample) or the number of sites (client).",
        ge=0.0,
        lt=1.0,
    )
    max_grad_norm: float = param(1.0, "Sample level: per-sample gradient clipping norm C.", gt=0.0)
    max_epsilon: float = param(
        0.0,
        "Hard budget: a site (sample) stops being sampled, or the run (client) stops, before a round that "
        "would take its epsilon above this; when no site can train the run ends cleanly. 0 = no cap.",
        ge=0.0,
    )
    accountant: Literal["rdp", "prv"] = param(
        "rdp", "Opacus accountant: rdp (Renyi DP) or prv (privacy loss random variables; tighter)."
    )
    clipping: Literal["fixed", "adaptive"] = param(
        "fixed",
        "Client level: a fixed clipping norm, or adaptive clipping towards a quantile of update norms "
        "(Andrew et al., NeurIPS 2021).",
    )
    clipping_side: Literal["server", "client"] = param(
        "server",
        "Client level: updates are clipped by the server's wrapper, or by each site before it sends "
        "(the server then never sees an unclipped update).",
    )
    clipping_norm: float = param(
        1.0, "Client level: L2 bound of a site's model update (fixed clipping) or its initial value (adaptive).", gt=0.0
    )
    target_quantile: float = param(
        0.5, "Client level, adaptive: fraction of updates left unclipped that the norm adapts to.", ge=0.0, le=1.0
    )
    clip_norm_lr: float = param(0.2, "Client level, adaptive: learning rate of the geometric norm update.", gt=0.0)
    clipped_count_stddev: float = param(
        0.0,
        "Client level, adaptive: noise std of the count of clipped updates (0 = sites per round / 20, "
        "Flower's default; it must exceed noise_multiplier / 2).",
        ge=0.0,
    )

    @property
    def active(self) -> bool:
        """True when training is private (a DP mode and a finite epsilon)."""
        return self.mode != "none" and self.epsilon != float("inf")


@dataclass
class AuditSection:
    attacks: list[str] = param([], "Attacks `fedsilo audit` runs ([] = every attack the task's audit offers).")
    max_samples: int = param(
        500, "Members and non-members per membership attack (each side; fewer when the data holds fewer).", ge=2
    )
    reference_models: int = param(
        4,
        "Reference models of the calibrated membership attacks (RMIA, LiRA), each trained on a random half "
        "of the attack pool; 0 = run only uncalibrated attacks.",
        ge=0,
    )
    reference_rounds: int = param(
        0, "Training periods (task train() calls) of each reference model; 0 = federation.rounds.", ge=0
    )
    inversion_batch_sizes: list[int] = param([1, 4], "Gradient inversion: client batch sizes attacked.", ge=1)
    inversion_local_steps: list[int] = param([1], "Gradient inversion: local SGD steps in the attacked update.", ge=1)
    inversion_iterations: int = param(300, "Gradient inversion: Adam iterations on the dummy images.", ge=1)
    inversion_tv: float = param(1e-2, "Gradient inversion: weight of the total-variation prior.", ge=0.0)
    inversion_clip: float = param(1.0, "Gradient inversion: L2 clipping norm of the update in the 'DP' rows.", gt=0.0)
    inversion_noise: float = param(
        1.0, "Gradient inversion: noise multiplier (std over the clipping norm) in the 'DP' rows.", ge=0.0
    )
    gan_samples: int = param(
        2000, "GAN audits: generated images for GAN-Leaks black-box, DCR and the realism detector.", ge=4
    )
    latent_steps: int = param(200, "GAN audits: Adam steps of the latent optimisation (white-box, inversion).", ge=1)
    latent_restarts: int = param(2, "GAN audits: random starts per target of the latent optimisation.", ge=1)
    max_targets: int = param(
        200, "GAN audits: members and non-members per side for the latent optimisation (the costly attack).", ge=2
    )


@dataclass
class SimulationSection:
    cpus_per_site: float = param(
        0.0,
        "CPUs Ray reserves per simulated site; 0 = all CPUs, so sites run one at a time with the same "
        "torch thread count as the local engine (which makes the two engines' weights bit-identical).",
        ge=0.0,
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
    simulation: SimulationSection = section(SimulationSection, "Flower simulation engine settings.")
    privacy: PrivacySection = section(PrivacySection, "Differential privacy in training (sample- or client-level).")
    audit: AuditSection = section(AuditSection, "Privacy audit of a finished run (`fedsilo audit RUN_DIR`).")

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
        if self.experiment.task == "synthesis":
            size = self.data.volume.size if self.data.source == "volumes" else self.data.image_size
            where = "data.volume.size" if self.data.source == "volumes" else "data.image_size"
            if size not in GAN_SIZES:
                raise ConfigError(f"{where} must be one of {', '.join(map(str, GAN_SIZES))} for the DCGAN "
                                  f"(experiment.task = 'synthesis'), got {size}")
            if self.gan.conditional and self.data.source == "volumes":
                raise ConfigError("gan.conditional needs graded fundus images; abdominal slices have no grade "
                                  "(data.source = 'volumes')")
        if self.experiment.task == "segmentation":
            if self.data.source != "volumes":
                raise ConfigError(f"data.source must be 'volumes' when experiment.task = 'segmentation', "
                                  f"got {self.data.source!r}")
            step = 2 ** (self.unet.depth - 1)
            if self.data.volume.size % step:
                raise ConfigError(f"data.volume.size must be divisible by 2**(unet.depth - 1) = {step}, "
                                  f"got {self.data.volume.size}")
