"""Apply a trained segmentation run to new scans (``fedsilo predict``)."""

from fedsilo.inference.predict.cases import find_cases
from fedsilo.inference.predict.geometry import probabilities_to_native
from fedsilo.inference.predict.run import PredictSummary, predict_path, segment_volume

__all__ = ["PredictSummary", "find_cases", "predict_path", "probabilities_to_native", "segment_volume"]
