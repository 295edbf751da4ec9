"""Spectral Relevance Analysis (SpRAy).

SpRAy (thesis Chapter 6, Appendix E, Algorithm 3) screens a whole set of relevance maps
for distinct prediction strategies: the maps are preprocessed (channel sum, sum pooling onto
a coarse grid, optional low-pass filter), a sparse k-nearest-neighbour affinity graph is built
(Eq. (6.1)), its graph Laplacian (Eq. (6.2), or the symmetric normalised L_sym recommended in
Section 6.3) is eigendecomposed, the eigengap suggests the number of strategies, k-means on the
spectral embedding assigns them, and t-SNE on distances derived from the affinity
(Section 6.2, DIST = 1 / (W + eps)) gives a 2-D picture.

All graph objects are :mod:`scipy.sparse` matrices of O(N k) entries and only the smallest
``n_eigenvalues`` eigenpairs are computed. With the optional extra ``scale`` (faiss-cpu, pyamg,
openTSNE) the neighbour search, the eigensolver and t-SNE scale to a million maps.
"""

from ._estimator import SpRAy, spray_spectra
from ._preprocess import pool_maps
from ._spectrum import scale_aware_gaps as _scale_aware_gaps  # noqa: F401  (tests)

__all__ = ["SpRAy", "spray_spectra", "pool_maps"]
