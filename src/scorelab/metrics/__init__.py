"""metrics: distribution distances and dataset-specific quality measures."""

from scorelab.metrics.digits import DigitsClassifier, classify_digits, digits_quality, get_classifier
from scorelab.metrics.distances import frechet_distance, frechet_distance_features, sliced_wasserstein
from scorelab.metrics.fid import kernel_inception_distance
from scorelab.metrics.shape_manifold import manifold_scores
from scorelab.metrics.shapes import classify_shapes, shape_census

__all__ = [
    "DigitsClassifier",
    "classify_digits",
    "classify_shapes",
    "digits_quality",
    "frechet_distance",
    "frechet_distance_features",
    "get_classifier",
    "kernel_inception_distance",
    "manifold_scores",
    "shape_census",
    "sliced_wasserstein",
]
