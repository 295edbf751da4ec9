"""Tests for sklrp.datasets.make_clever_hans (the Section 6.2 watermark scenario)."""

import numpy as np
import pytest

from sklrp.datasets import make_clever_hans


def test_shapes_labels_and_mask():
    X, y, mark = make_clever_hans(n_samples=300, n_classes=3, random_state=0)
    assert X.shape == (300, 32, 32) and X.dtype == np.float64
    assert y.shape == mark.shape == (300,) and mark.dtype == bool
    assert np.bincount(y).tolist() == [100, 100, 100]
    assert set(y[mark]) == {0}  # only the watermark class is tagged
    assert mark.sum() == 25  # round(0.25 * 100)


def test_tag_sits_at_the_fixed_place():
    X, y, mark = make_clever_hans(n_samples=200, noise=0.0, jitter=0, watermark_fraction=0.5,
                                  image_shape=(32, 32), random_state=1)
    region = (slice(32 - 5 - 1, 32 - 1), slice(1, 8))  # default: bottom-left corner
    tagged, clean = X[mark][:, region[0], region[1]], X[~mark & (y == 0)][:, region[0], region[1]]
    assert tagged.sum((1, 2)).min() > 20  # the 27 stroke pixels
    assert np.abs(clean).max() == 0
    # outside the tag, tagged and untagged class-0 images are drawn alike
    out = np.ones((32, 32), bool)
    out[region] = False
    assert abs(X[mark][:, out].mean() - X[~mark & (y == 0)][:, out].mean()) < 0.05


def test_custom_position_fraction_and_shape():
    X, y, mark = make_clever_hans(n_samples=90, n_classes=2, image_shape=(20, 24), watermark_class=1,
                                  watermark_fraction=1.0, watermark_position=(0, 0), noise=0.0,
                                  random_state=0)
    assert X.shape == (90, 20, 24)
    np.testing.assert_array_equal(mark, y == 1)
    assert np.all(X[mark][:, 0, :7] >= 1.0)


def test_deterministic_and_unshuffled_order():
    a = make_clever_hans(n_samples=60, random_state=3)
    b = make_clever_hans(n_samples=60, random_state=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    _, y, _ = make_clever_hans(n_samples=60, shuffle=False, random_state=3)
    assert np.all(np.diff(y) >= 0)


def test_classes_differ_in_content():
    X, y, _ = make_clever_hans(n_samples=300, n_classes=5, watermark_fraction=0.0, random_state=0)
    means = np.array([X[y == c].mean(0).ravel() for c in range(5)])
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert d[~np.eye(5, dtype=bool)].min() > 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0), "n_samples"),
    (dict(n_classes=1), "n_classes"),
    (dict(watermark_class=3), "watermark_class"),
    (dict(watermark_fraction=1.5), "watermark_fraction"),
    (dict(image_shape=(6, 6)), "image_shape"),
    (dict(watermark_position=(30, 30)), "outside"),
    (dict(noise=-1.0), "noise"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_clever_hans(**kwargs)
