"""Toy data with known features, and SAEs scored against them.

``dictionaries``: planted dictionaries, Zipf frequencies, the batch type every toy returns.
``synthetic``: the configurable generator (correlated pairs, hierarchy, offset, noise).
``composed``: the composed-features toy (sets of mutually exclusive features).
``hedging``: the parent-child hedging toy and MSE's prediction for it.
``true_solution``: the SAE whose decoder is the true dictionary, and its objective.
``feature_metrics``: composite latents, absorption, hedging, nearest-neighbour cosines.
``ground_truth``: train SAEs and score them against the known features.
"""

from saelib.toys.composed import ComposedSets, composed_sets
from saelib.toys.dictionaries import SyntheticBatch, firing_probabilities, random_dictionary
from saelib.toys.hedging import hedging_toy
from saelib.toys.synthetic import SyntheticConfig, SyntheticData

__all__ = [
    "ComposedSets",
    "SyntheticBatch",
    "SyntheticConfig",
    "SyntheticData",
    "composed_sets",
    "firing_probabilities",
    "hedging_toy",
    "random_dictionary",
]
