"""fedsilo.tasks.synthesis: the FedGAN synthesis task and its metrics, features and grids."""

from fedsilo.tasks.synthesis.diversity import ms_ssim_diversity, ms_ssim_settings
from fedsilo.tasks.synthesis.features import FeatureAdapter, extract_features
from fedsilo.tasks.synthesis.grids import sample_grid, save_grid_png, to_uint8
from fedsilo.tasks.synthesis.manifold import knn_radii, nearest_neighbours, precision_recall_density_coverage
from fedsilo.tasks.synthesis.metrics import frechet_distance, kernel_inception_distance, realism_score
from fedsilo.tasks.synthesis.stats import MetricResult, bootstrap_mean_ci
from fedsilo.tasks.synthesis.task import SynthesisTask

__all__ = [
    "FeatureAdapter",
    "MetricResult",
    "SynthesisTask",
    "bootstrap_mean_ci",
    "extract_features",
    "frechet_distance",
    "kernel_inception_distance",
    "knn_radii",
    "ms_ssim_diversity",
    "ms_ssim_settings",
    "nearest_neighbours",
    "precision_recall_density_coverage",
    "realism_score",
    "sample_grid",
    "save_grid_png",
    "to_uint8",
]
