"""Boxes in pixel space and in latent space, and snapping between them.

A latent diffusion model works on a latent canvas ``factor`` times smaller than the
image (8 for Stable Diffusion). The paper maps a pixel box to a latent box by dividing
its edges by the factor, which needs edges on multiples of the factor: `snap_box` puts
them there and the snapped box is what the user is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENT_FACTOR = 8


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle: left ``x``, top ``y``, ``width``, ``height``.

    The same type serves pixel and latent boxes; the unit is whatever the caller works in.
    Edges are half-open: the box covers columns ``[x, x + width)`` and rows ``[y, y + height)``.
    """

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) slices, for indexing the last two dims of a tensor."""
        return slice(self.y, self.bottom), slice(self.x, self.right)

    def scaled(self, factor: float) -> "Box":
        return Box(round(self.x * factor), round(self.y * factor),
                   round(self.width * factor), round(self.height * factor))

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]

    def intersects(self, other: "Box") -> bool:
        return (self.x < other.right and other.x < self.right
                and self.y < other.bottom and other.y < self.bottom)


def snap_box(x: float, y: float, width: float, height: float,
             canvas_width: int, canvas_height: int, grid: int = LATENT_FACTOR) -> Box:
    """Snap a pixel box to the ``grid`` and clamp it to the canvas.

    Each edge moves to the nearest multiple of ``grid`` (so a box keeps its place and
    roughly its size); a box that would vanish keeps one grid cell. The canvas size itself
    must be a multiple of ``grid``.
    """
    left = _nearest(x, grid)
    top = _nearest(y, grid)
    right = _nearest(x + width, grid)
    bottom = _nearest(y + height, grid)
    left = min(max(left, 0), canvas_width - grid)
    top = min(max(top, 0), canvas_height - grid)
    right = min(max(right, left + grid), canvas_width)
    bottom = min(max(bottom, top + grid), canvas_height)
    return Box(left, top, right - left, bottom - top)


def to_latent(box: Box, factor: int = LATENT_FACTOR) -> Box:
    """Pixel box -> latent box. The box must already lie on the ``factor`` grid."""
    for name in ("x", "y", "width", "height"):
        if getattr(box, name) % factor:
            raise ValueError(f"box {box.as_list()} is not on the {factor}-pixel latent grid ({name})")
    return Box(box.x // factor, box.y // factor, box.width // factor, box.height // factor)


def to_pixels(box: Box, factor: int = LATENT_FACTOR) -> Box:
    return Box(box.x * factor, box.y * factor, box.width * factor, box.height * factor)


def _nearest(value: float, grid: int) -> int:
    # Round half up, so 4 -> 8 on an 8 grid, the same on every platform (no banker's rounding).
    return int((value + grid / 2) // grid) * grid
