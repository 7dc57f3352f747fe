"""Config sections of the data: sources, preprocessing, phantoms and partitioning into sites."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedsilo.config.loader import ConfigError, param, section

PartitionName = Literal["iid", "dirichlet", "pathological", "size_skew", "natural", "severity"]


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
