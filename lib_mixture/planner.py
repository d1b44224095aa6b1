"""The tile planner: the fewest tiles that cover a canvas with at least a given overlap.

Along one axis, ``n`` tiles of size ``t`` spread evenly over a canvas of size ``L`` step by
``s = (L - t) / (n - 1)`` and overlap by ``t - s``. The overlap is at least ``o`` when
``n >= 1 + (L - t) / (t - o)``, so the planner takes the smallest such ``n``. It works in
latent cells, so every tile edge falls on the latent grid and the real overlaps (which are
never below the requested one) can be reported exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import LATENT_FACTOR, Box


@dataclass(frozen=True)
class AxisPlan:
    """Tile starts along one axis, in latent cells."""

    size: int  # tile size after clamping to the canvas
    starts: tuple[int, ...]

    @property
    def overlaps(self) -> tuple[int, ...]:
        """Overlap between each pair of neighbouring tiles."""
        return tuple(self.size - (b - a) for a, b in zip(self.starts, self.starts[1:]))


@dataclass(frozen=True)
class TilePlan:
    """A grid of tiles over a canvas. Boxes are in pixels; ``factor`` maps them to latents."""

    canvas_width: int
    canvas_height: int
    tiles: tuple[Box, ...]
    columns: AxisPlan
    rows: AxisPlan
    requested_overlap: tuple[int, int]  # (x, y) in pixels
    factor: int = LATENT_FACTOR

    @property
    def tile_width(self) -> int:
        return self.columns.size * self.factor

    @property
    def tile_height(self) -> int:
        return self.rows.size * self.factor

    @property
    def overlaps_x(self) -> tuple[int, ...]:
        """Real horizontal overlaps between neighbouring columns, in pixels."""
        return tuple(o * self.factor for o in self.columns.overlaps)

    @property
    def overlaps_y(self) -> tuple[int, ...]:
        return tuple(o * self.factor for o in self.rows.overlaps)

    @property
    def redundancy(self) -> float:
        """Sum of tile areas over canvas area: how many times each pixel is computed on average."""
        return sum(t.area for t in self.tiles) / (self.canvas_width * self.canvas_height)


def axis_count(length: int, tile: int, min_overlap: int) -> int:
    """How many tiles `plan_axis` places (latent cells in, O(1)): the fewest with the overlap."""
    if tile >= length:
        return 1
    return 1 + math.ceil((length - tile) / (tile - min_overlap))


def tile_count(canvas_width: int, canvas_height: int, tile_width: int, tile_height: int,
               overlap: int | tuple[int, int], factor: int = LATENT_FACTOR) -> int:
    """How many tiles `plan_tiles` would place, computed without placing them (pixels in), so
    a request for millions of tiles is refused before any list is built."""
    ox, oy = (overlap, overlap) if isinstance(overlap, int) else overlap
    tw, th = max(1, tile_width // factor), max(1, tile_height // factor)
    cols = axis_count(canvas_width // factor, tw, min(-(-ox // factor), tw - 1))
    rows = axis_count(canvas_height // factor, th, min(-(-oy // factor), th - 1))
    return cols * rows


def plan_axis(length: int, tile: int, min_overlap: int) -> AxisPlan:
    """Plan one axis; all arguments in latent cells.

    A tile at least as long as the canvas is clamped to it (one tile, no overlap).
    """
    if length <= 0 or tile <= 0:
        raise ValueError("canvas and tile sizes must be positive")
    if tile >= length:
        return AxisPlan(length, (0,))
    if not 0 <= min_overlap < tile:
        raise ValueError(f"overlap {min_overlap} must be in [0, {tile - 1}] latent cells (below the tile size)")
    count = axis_count(length, tile, min_overlap)
    span = length - tile
    # Integer starts, first flush left and last flush right. Steps differ by at most one
    # cell and never exceed tile - min_overlap, because that bound is an integer >= span/(count-1).
    starts = tuple((i * span + (count - 1) // 2) // (count - 1) for i in range(count))
    return AxisPlan(tile, starts)


def plan_tiles(canvas_width: int, canvas_height: int, tile_width: int, tile_height: int,
               overlap: int | tuple[int, int], factor: int = LATENT_FACTOR) -> TilePlan:
    """Plan a grid of tiles over a pixel canvas.

    Sizes are in pixels and are taken onto the latent grid: the canvas and tiles must be
    multiples of ``factor`` (snap them first); a requested overlap is rounded *up* to the grid
    so the real overlap is never smaller than asked. ``overlap`` is one value or ``(x, y)``.
    """
    ox, oy = (overlap, overlap) if isinstance(overlap, int) else overlap
    for name, value in (("canvas width", canvas_width), ("canvas height", canvas_height),
                        ("tile width", tile_width), ("tile height", tile_height)):
        if value <= 0 or value % factor:
            raise ValueError(f"{name} {value} must be a positive multiple of {factor}")
    cols = plan_axis(canvas_width // factor, tile_width // factor, -(-ox // factor))
    rows = plan_axis(canvas_height // factor, tile_height // factor, -(-oy // factor))
    tiles = tuple(Box(cx * factor, ry * factor, cols.size * factor, rows.size * factor)
                  for ry in rows.starts for cx in cols.starts)
    return TilePlan(canvas_width, canvas_height, tiles, cols, rows, (ox, oy), factor)


def model_calls_per_step(group_sizes: list[int], batch_size: int) -> int:
    """Host model calls per sampling step for crop groups of the given sizes.

    Crops batch together only within a group (equal size and guidance scale).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return sum(math.ceil(n / batch_size) for n in group_sizes)
