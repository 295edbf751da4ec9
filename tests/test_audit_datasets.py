"""Planted shortcuts for audits: sklrp.datasets.plant_shortcut and shortcut_mask."""

import numpy as np
import pytest

from sklrp.datasets import plant_shortcut, shortcut_mask


def test_shortcut_mask_places_and_frames():
    m = shortcut_mask((6, 8), size=2, position="top-right")
    assert m.sum() == 4 and m[0:2, 6:8].all()
    m = shortcut_mask((6, 8), size=3, position="bottom")
    assert m.sum() == 9 and m[3:6, 2:5].all()  # centred along the bottom edge
    m = shortcut_mask((6, 8), size=1, position=(2, 3))
    assert np.argwhere(m).tolist() == [[2, 3]]
    f = shortcut_mask((6, 8), kind="frame", size=1)
    assert f.sum() == 2 * 8 + 2 * 4 and not f[1:5, 1:7].any()
    for kw, msg in [(dict(size=9), "does not fit"), (dict(size=0), "positive int"),
                    (dict(position="nowhere"), "position must be"), (dict(position=(5, 7)), "outside"),
                    (dict(kind="frame", size=3), "does not fit"), (dict(kind="blob"), "kind")]:
        with pytest.raises(ValueError, match=msg):
            shortcut_mask((6, 8), **kw)


def test_plant_shortcut_fraction_value_and_copy():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 6, 6)
    y = np.repeat([0, 1], 20)
    Xp, planted = plant_shortcut(X, y, target_class=1, fraction=0.25, size=2, position="bottom-left", value=5.0,
                                 random_state=0)
    assert planted.sum() == 5 and set(y[planted]) == {1}
    assert np.all(Xp[planted][:, 4:6, 0:2] == 5.0)
    np.testing.assert_array_equal(Xp[~planted], X[~planted])
    assert not np.shares_memory(Xp, X)
    # flat rows and the default value (the maximum of X: a bright tag)
    Xf, p2 = plant_shortcut(X.reshape(40, -1), y, target_class=1, fraction=0.25, size=2, position="bottom-left",
                            random_state=0)
    assert Xf.shape == (40, 36) and np.array_equal(p2, planted)
    assert np.all(Xf.reshape(40, 6, 6)[p2][:, 4:6, 0:2] == X.max())
    # stamping every image (the reliance test)
    Xs, ps = plant_shortcut(X, kind="frame", size=1, value=-1.0)
    assert ps.all() and np.all(Xs[:, 0] == -1.0) and np.all(Xs[:, :, -1] == -1.0)


def test_plant_background_level_shifts_background_only():
    X = np.zeros((10, 8, 8))
    X[:, 2:6, 2:6] = 1.0  # an object on a dark background
    y = np.repeat([0, 1], 5)
    Xp, planted = plant_shortcut(X, y, kind="background", target_class=0, value=0.2, random_state=1)
    assert planted.sum() == 5
    np.testing.assert_allclose(Xp[planted][:, 0, 0], 0.2)  # background lifted
    np.testing.assert_allclose(Xp[planted][:, 3, 3], 1.0)  # object unchanged


def test_plant_shortcut_bad_input():
    X = np.zeros((4, 4, 4))
    with pytest.raises(ValueError, match="fraction"):
        plant_shortcut(X, fraction=0)
    with pytest.raises(ValueError, match="target_class needs y"):
        plant_shortcut(X, target_class=0)
    with pytest.raises(ValueError, match="no sample has the label"):
        plant_shortcut(X, np.zeros(4), target_class=3)
    with pytest.raises(ValueError, match="NaN"):
        plant_shortcut(np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="not square"):
        plant_shortcut(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="kind"):
        plant_shortcut(X, kind="sticker")
