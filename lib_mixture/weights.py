"""Per-pixel mixing weights of a region (paper, section 3.1).

Gaussian weights: the density of a 2-D gaussian centred on the region, with distances
normalised by the region's width (x) and height (y), variance 0.01 by default::

    w(x, y) = exp(-((x - (W-1)/2) / W)^2 / (2 v)) * exp(-((y - (H-1)/2) / H)^2 / (2 v)) / (2 pi v)

The map is separable, so it is built from two 1-D profiles (`profile`, plain Python so
the plan preview needs no torch). The constant factor cancels in the per-pixel
normalisation but is kept so the numbers match the paper's definition.
"""

from __future__ import annotations

import math
from collections import OrderedDict

GAUSSIAN = "gaussian"
CONSTANT = "constant"
KINDS = (GAUSSIAN, CONSTANT)
DEFAULT_VARIANCE = 0.01


def profile(kind: str, length: int, variance: float = DEFAULT_VARIANCE) -> list[float]:
    """One axis of a weight map: ``length`` values, in float64.

    The gaussian's 1/(2 pi v) factor is split evenly between the two axes.
    """
    if kind == CONSTANT:
        return [1.0] * length
    if kind != GAUSSIAN:
        raise ValueError(f"weights kind must be one of {KINDS}, got {kind!r}")
    if not variance > 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    centre = (length - 1) / 2
    scale = 1.0 / math.sqrt(2 * math.pi * variance)
    return [scale * math.exp(-(((i - centre) / length) ** 2) / (2 * variance)) for i in range(length)]


def weight_map(kind: str, height: int, width: int, variance: float = DEFAULT_VARIANCE,
               dtype=None, device="cpu"):
    """Weight map ``[height, width]`` as a torch tensor (float64 maths, cast once)."""
    import torch

    wy = torch.tensor(profile(kind, height, variance), dtype=torch.float64)
    wx = torch.tensor(profile(kind, width, variance), dtype=torch.float64)
    return torch.outer(wy, wx).to(device=device, dtype=dtype or torch.float32)


def gaussian_weights(height: int, width: int, variance: float = DEFAULT_VARIANCE, dtype=None, device="cpu"):
    return weight_map(GAUSSIAN, height, width, variance, dtype, device)


def constant_weights(height: int, width: int, dtype=None, device="cpu"):
    return weight_map(CONSTANT, height, width, DEFAULT_VARIANCE, dtype, device)


class WeightCache:
    """Weight maps keyed by (height, width, kind, variance, device, dtype).

    Grids repeat one tile size many times, so a plan of 88 tiles builds one map, not 88.
    """

    def __init__(self, max_entries: int = 64):
        self._maps: OrderedDict = OrderedDict()
        self._max = max_entries
        self.builds = 0  # maps made so far (tests check the cache is used)

    def get(self, kind: str, height: int, width: int, variance: float = DEFAULT_VARIANCE,
            dtype=None, device="cpu"):
        import torch

        device = torch.device(device)
        dtype = dtype or torch.float32
        key = (height, width, kind, float(variance) if kind == GAUSSIAN else None, device, dtype)
        found = self._maps.get(key)
        if found is not None:
            self._maps.move_to_end(key)
            return found
        made = weight_map(kind, height, width, variance, dtype, device)
        self.builds += 1
        self._maps[key] = made
        if len(self._maps) > self._max:
            self._maps.popitem(last=False)
        return made

    def __len__(self) -> int:
        return len(self._maps)


DEFAULT_CACHE = WeightCache()
