"""Feature-map patches: a tensor together with where it sits, and the rectangles they cover.

A :data:`Rect` is ``(y0, y1, x0, x1)``, half-open, in pixels of the feature map it refers
to (each resolution of the VAE has its own). It is a plain tuple because the planner and
the executor slice with it on every op; the canvas boxes of :class:`lib_mixture.geometry.Box`
(``x, y, width, height``) are a different thing.
"""

from __future__ import annotations

from typing import Tuple

import torch

Rect = Tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open, in pixels of its own resolution
Size = Tuple[int, int]  # (H, W)


class Patch:
    """A tensor ``(B, C, h, w)`` holding rows ``y0..y0+h`` and columns ``x0..x0+w`` of a
    feature map at one resolution."""

    __slots__ = ("t", "y0", "x0")

    def __init__(self, t: torch.Tensor, y0: int, x0: int):
        self.t, self.y0, self.x0 = t, y0, x0

    @property
    def rect(self) -> Rect:
        return (self.y0, self.y0 + self.t.shape[-2], self.x0, self.x0 + self.t.shape[-1])


def crop(p: Patch, r: Rect) -> Patch:
    """The part of ``p`` covering ``r`` (a view; ``p`` itself when ``r`` is all of it).
    ``r`` outside ``p`` is a planning bug: ``RuntimeError``."""
    y0, y1, x0, x1 = p.rect
    if r[0] < y0 or r[1] > y1 or r[2] < x0 or r[3] > x1:
        raise RuntimeError(f"tiled VAE planning error: region {r} is not inside patch {p.rect}")
    if r == p.rect:
        return p
    return Patch(p.t[:, :, r[0] - y0 : r[1] - y0, r[2] - x0 : r[3] - x0], r[0], r[2])


def bbox(a: Rect, b: Rect) -> Rect:
    """The smallest rectangle covering ``a`` and ``b``."""
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def area(r: Rect) -> int:
    """Pixels in ``r`` (0 when empty)."""
    return max(0, r[1] - r[0]) * max(0, r[3] - r[2])
