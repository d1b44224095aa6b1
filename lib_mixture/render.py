"""Draw a plan as a PNG: tile and region boxes over a map of the normalised weights.

Each crop has a colour; every latent pixel shows the mix of the colours of the crops that
cover it, in proportion to their normalised weights (paper, Fig. 4 and 6), so the blend
bands are visible where crops hand over. Plain Python with a small PNG writer: the preview
runs on a machine with no torch, numpy or Pillow.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from pathlib import Path
from typing import Sequence

from .plan import MixturePlan
from .weights import profile

# Neighbouring tiles alternate between two muted colours; regions get saturated ones.
_TILE_COLOURS = ((70, 90, 140), (60, 120, 110), (110, 80, 130), (95, 110, 70))
_REGION_COLOURS = ((230, 80, 60), (250, 190, 40), (60, 170, 240), (120, 210, 90),
                   (220, 100, 220), (255, 140, 40), (40, 220, 200), (240, 240, 240))

# 5x7 glyphs for region labels ("R12").
_GLYPHS = {
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}


def crop_colours(plan: MixturePlan) -> list[tuple[int, int, int]]:
    colours = []
    if plan.tiles is not None:
        ncols = len(plan.tiles.columns.starts)
        for i in range(len(plan.tiles.tiles)):
            row, col = divmod(i, ncols)
            colours.append(_TILE_COLOURS[(row % 2) * 2 + col % 2])
    colours += [_REGION_COLOURS[r.index % len(_REGION_COLOURS)] for r in plan.regions]
    return colours


def weight_colour_map(plan: MixturePlan, rows: Sequence[int] | None = None,
                      cols: Sequence[int] | None = None) -> list[list[tuple[int, int, int]]]:
    """Per latent pixel, the crops' colours mixed by normalised weight; black where uncovered.

    ``rows`` and ``cols`` (increasing latent indices, default all) limit the map to the cells a
    picture samples: a 16384 px canvas drawn 1024 px wide needs a quarter of its 4 million
    cells, and memory stays that of the sampled cells (flat arrays, not a list per cell).
    """
    lh, lw = plan.latent_size
    rows = range(lh) if rows is None else rows
    cols = range(lw) if cols is None else cols
    nc = len(cols)
    row_at, col_at = _positions(rows), _positions(cols)
    total = array("d", bytes(8 * len(rows) * nc))
    acc = [array("d", bytes(8 * len(rows) * nc)) for _ in range(3)]
    red, green, blue = acc
    for crop, colour in zip(plan.crops(), crop_colours(plan)):
        b = crop.box
        wy = profile(crop.kind, b.height, crop.variance)
        wx = profile(crop.kind, b.width, crop.variance)
        ys = [(row_at[b.y + dy] * nc, fy) for dy, fy in enumerate(wy) if b.y + dy in row_at]
        xs = [(col_at[b.x + dx], fx * crop.weight) for dx, fx in enumerate(wx) if b.x + dx in col_at]
        cr, cg, cb = colour
        for base, fy in ys:
            for j, fx in xs:
                w = fy * fx
                i = base + j
                total[i] += w
                red[i] += w * cr
                green[i] += w * cg
                blue[i] += w * cb
    out = []
    for r in range(len(rows)):
        row = []
        for i in range(r * nc, (r + 1) * nc):
            t = total[i]
            row.append((int(red[i] / t), int(green[i] / t), int(blue[i] / t)) if t > 0 else (0, 0, 0))
        out.append(row)
    return out


def _positions(indices: Sequence[int]) -> dict[int, int]:
    return {v: i for i, v in enumerate(indices)}


def render_plan(plan: MixturePlan, max_side: int = 1024) -> tuple[int, int, bytearray]:
    """Rasterise the plan: returns (width, height, RGB bytes) at most ``max_side`` px on a side."""
    scale = min(1.0, max_side / max(plan.canvas_width, plan.canvas_height))
    width, height = max(1, round(plan.canvas_width * scale)), max(1, round(plan.canvas_height * scale))
    lh, lw = plan.latent_size
    col_of = [min(lw - 1, int(x / scale) // plan.factor) for x in range(width)]
    row_of = [min(lh - 1, int(y / scale) // plan.factor) for y in range(height)]
    rows, cols = sorted(set(row_of)), sorted(set(col_of))
    heat = weight_colour_map(plan, rows, cols)
    row_at, col_at = _positions(rows), _positions(cols)
    pick = [col_at[c] for c in col_of]
    pixels = bytearray()
    for y in range(height):
        row = heat[row_at[row_of[y]]]
        pixels += bytes(v for j in pick for v in row[j])
    canvas = _Raster(width, height, pixels)
    if plan.tiles is not None:
        for t in plan.tiles.tiles:
            canvas.rect(t.scaled(scale), (235, 235, 235), 1)
    for r, colour in zip(plan.regions, crop_colours(plan)[-len(plan.regions):] if plan.regions else []):
        box = r.box.scaled(scale)
        canvas.rect(box, colour, 3)
        canvas.text(box.x + 6, box.y + 6, f"R{r.index}", colour, size=3 if min(width, height) >= 300 else 2)
    return width, height, canvas.pixels


def write_plan_png(plan: MixturePlan, path: str | Path, max_side: int = 1024) -> Path:
    width, height, pixels = render_plan(plan, max_side)
    path = Path(path)
    path.write_bytes(encode_png(width, height, pixels))
    return path


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """A minimal 8-bit RGB PNG encoder (no filtering)."""
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(rgb[y * stride:(y + 1) * stride]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


class _Raster:
    def __init__(self, width: int, height: int, pixels: bytearray):
        self.width, self.height, self.pixels = width, height, pixels

    def set(self, x: int, y: int, colour: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i:i + 3] = bytes(colour)

    def rect(self, box, colour, thickness: int) -> None:
        for t in range(thickness):
            x0, y0, x1, y1 = box.x + t, box.y + t, box.right - 1 - t, box.bottom - 1 - t
            for x in range(x0, x1 + 1):
                self.set(x, y0, colour)
                self.set(x, y1, colour)
            for y in range(y0, y1 + 1):
                self.set(x0, y, colour)
                self.set(x1, y, colour)

    def text(self, x: int, y: int, text: str, colour, size: int = 2) -> None:
        # Dark backing box first, so the label reads on any colour.
        w = len(text) * 6 * size + size
        for yy in range(y - size, y + 8 * size):
            for xx in range(x - size, x + w):
                self.set(xx, yy, (20, 20, 20))
        for n, ch in enumerate(text):
            glyph = _GLYPHS.get(ch)
            if glyph is None:
                continue
            for gy, line in enumerate(glyph):
                for gx, bit in enumerate(line):
                    if bit == "1":
                        for sy in range(size):
                            for sx in range(size):
                                self.set(x + (n * 6 + gx) * size + sx, y + gy * size + sy, colour)
