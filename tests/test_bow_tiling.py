"""Patch-wise explanation of large images by overlapping tiles (Fig. 2.13)."""

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

import sklrp
from sklrp.bow import BoWEncoder, DenseSIFT, explain_tiled, tile_positions
from sklrp.datasets import make_shapes


@pytest.fixture(scope="module")
def lrp():
    X, y, _ = make_shapes(40, image_size=48, radius=(6, 10), random_state=0)
    model = make_pipeline(DenseSIFT(scales=(1.5,), steps=(4,), backend="numpy"), BoWEncoder(16, random_state=0),
                          LinearSVC()).fit(X, y)
    return sklrp.LRPTransformer(FrozenEstimator(model), rule="z", dtype="float64").fit(X, y)


def test_tiles_are_averaged_like_a_loop(lrp):
    big, _, _ = make_shapes(1, image_size=100, radius=(6, 10), random_state=2)
    T = explain_tiled(lrp, big[0], tile_size=48, stride=20, target=1)
    total, count = np.zeros((100, 100)), np.zeros((100, 100))
    for r in [0, 20, 40, 52]:
        for c in [0, 20, 40, 52]:
            R = lrp.explain(big[:, r:r + 48, c:c + 48], target=1).relevance[0]
            for i in range(48):
                for j in range(48):
                    total[r + i, c + j] += R[i, j]
                    count[r + i, c + j] += 1
    np.testing.assert_array_equal(T.counts, count)
    np.testing.assert_allclose(T.relevance, total / count, atol=1e-12)
    assert T.positions.shape == (16, 2) and T.output.shape == (16,)


def test_without_overlap_the_map_conserves_tile_relevance(lrp):
    big, _, _ = make_shapes(1, image_size=96, radius=(6, 10), random_state=3)
    T = explain_tiled(lrp, big[0], tile_size=48, stride=48, target=1)
    assert np.all(T.counts == 1)
    E = lrp.explain(np.stack([big[0, r:r + 48, c:c + 48] for r, c in T.positions]), target=1)
    np.testing.assert_allclose(T.relevance.sum(), E.relevance.sum(), atol=1e-10)


def test_tiling_bad_input(lrp):
    assert tile_positions(10, 10, 3).tolist() == [0]
    with pytest.raises(ValueError, match="smaller than tile_size"):
        explain_tiled(lrp, np.zeros((30, 60)), tile_size=48)
    with pytest.raises(ValueError, match="shape \\(H, W\\)"):
        explain_tiled(lrp, np.zeros((2, 60, 60)), tile_size=48)
    with pytest.raises(ValueError, match="stride"):
        explain_tiled(lrp, np.zeros((60, 60)), tile_size=48, stride=0)
    with pytest.raises(ValueError, match="NaN"):
        explain_tiled(lrp, np.full((60, 60), np.nan), tile_size=48)
