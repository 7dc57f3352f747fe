"""Apply a trained segmentation run to new scans (``fedsilo predict``)."""

from .cases import find_cases
from .geometry import probabilities_to_native
from .run import PredictSummary, predict_path, segment_volume

__all__ = ["PredictSummary", "find_cases", "predict_path", "probabilities_to_native", "segment_volume"]
