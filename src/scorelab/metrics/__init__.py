"""metrics: distribution distances and dataset-specific quality measures."""

from scorelab.metrics.digits import DigitsClassifier, classify_digits, digits_quality, get_classifier
from scorelab.metrics.distances import frechet_distance, frechet_distance_features, sliced_wasserstein
from scorelab.metrics.fid import evaluate, kernel_inception_distance
from scorelab.metrics.shapes import classify_shapes, shape_census

__all__ = [
    "DigitsClassifier",
    "classify_digits",
    "classify_shapes",
    "digits_quality",
    "evaluate",
    "frechet_distance",
    "frechet_distance_features",
    "get_classifier",
    "kernel_inception_distance",
    "shape_census",
    "sliced_wasserstein",
]
