"""Spectral Relevance Analysis (SpRAy), thesis Chapter 6 and Algorithm 3."""

from ._estimator import SpRAy, _scale_aware_gaps, pool_maps, spray_spectra

__all__ = ["SpRAy", "spray_spectra", "pool_maps"]
