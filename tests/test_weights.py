import math

import pytest
import torch

from lib_mixture.weights import WeightCache, constant_weights, gaussian_weights, profile


def paper_weight(x, y, W, H, var=0.01):
    """The paper's definition, written out independently of the implementation."""
    mx, my = (W - 1) / 2, (H - 1) / 2
    return math.exp(-((x - mx) / W) ** 2 / (2 * var)) * math.exp(-((y - my) / H) ** 2 / (2 * var)) / (2 * math.pi * var)


@pytest.mark.parametrize("H,W", [(64, 64), (16, 128), (128, 16), (7, 3)])
def test_gaussian_matches_the_paper_formula(H, W):
    w = gaussian_weights(H, W, dtype=torch.float64)
    expected = torch.tensor([[paper_weight(x, y, W, H) for x in range(W)] for y in range(H)], dtype=torch.float64)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)


def test_y_axis_is_normalised_by_height_not_width():
    # A wide region: its top edge must fall to the paper's exp(-0.5^2/0.02) of the centre,
    # not to ~0.46 as when y is divided by the width (the leading extension's bug).
    w = gaussian_weights(32, 128, dtype=torch.float64)
    centre_col = w[:, 63]
    ratio = float(centre_col[0] / centre_col.max())
    assert ratio == pytest.approx(math.exp(-((0 - 15.5) / 32) ** 2 / 0.02) / math.exp(-((15 - 15.5) / 32) ** 2 / 0.02))
    assert ratio < 1e-4
    # And a tall region likewise along x.
    w = gaussian_weights(128, 32, dtype=torch.float64)
    assert float(w[63, 0] / w[63].max()) < 1e-4


def test_gaussian_is_symmetric_and_peaks_at_the_centre():
    w = gaussian_weights(9, 12, dtype=torch.float64)
    assert torch.equal(w, w.flip(0)) and torch.allclose(w, w.flip(1), rtol=1e-15, atol=0)
    assert w[4, 5] == w.max() == w[4, 6]


def test_variance_is_a_parameter():
    wide = profile("gaussian", 64, 0.05)
    narrow = profile("gaussian", 64, 0.01)
    assert wide[0] / max(wide) > narrow[0] / max(narrow)
    with pytest.raises(ValueError):
        profile("gaussian", 8, 0)
    with pytest.raises(ValueError):
        profile("quadratic", 8)


def test_constant_weights_are_ones():
    assert torch.equal(constant_weights(3, 5), torch.ones(3, 5))


def test_cache_builds_each_map_once_per_key():
    cache = WeightCache()
    a = cache.get("gaussian", 96, 96)
    b = cache.get("gaussian", 96, 96)
    assert a is b and cache.builds == 1
    cache.get("gaussian", 96, 96, dtype=torch.float64)
    cache.get("gaussian", 96, 96, variance=0.02)
    cache.get("constant", 96, 96, variance=0.5)
    cache.get("constant", 96, 96, variance=0.7)  # variance means nothing for constant maps
    assert cache.builds == 4
