"""Toy data with known features, and SAEs scored against them.

``synthetic``: known dictionaries, Zipf frequencies, correlated and hierarchical features.
``composed``: the composed-features toy (sets of mutually exclusive features).
``true_solution``: the SAE whose decoder is the true dictionary, and its objective.
``feature_metrics``: composite latents, absorption, hedging, nearest-neighbour cosines.
``ground_truth``: train SAEs and score them against the known features.
"""

from saelib.toys.composed import ComposedSets, composed_sets
from saelib.toys.synthetic import SyntheticBatch, SyntheticConfig, SyntheticData, random_dictionary

__all__ = [
    "ComposedSets",
    "SyntheticBatch",
    "SyntheticConfig",
    "SyntheticData",
    "composed_sets",
    "random_dictionary",
]
