"""From a validated preset and a canvas size to a plan: snapped pixel boxes and latent crops.

This is plain data (no torch): the command line prints and draws it, the host adapter turns
its crops into a compiled mixture. Region boxes given for another canvas size (the
preset's ``canvas``, or the first pass when the hires pass runs) are scaled to this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .geometry import LATENT_FACTOR, Box, snap_box, to_latent
from .limits import DEFAULT_LIMITS, Limits
from .planner import TilePlan, model_calls_per_step, plan_tiles, tile_count
from .preset import Canvas, Preset, PresetError, Region, Weighting
from .weights import DEFAULT_VARIANCE, GAUSSIAN

MAIN = "main"  # the cond handle of background tiles: the generation's own prompt
DEFAULT_BATCH_SIZE = 4


@dataclass(frozen=True)
class CropSpec:
    """One diffusion process of the mixture: a latent box with its own conditioning.

    ``cond`` is a handle the host's predict callback understands: `MAIN` for background
    tiles, the region index for regions. ``cfg_scale`` None means the host's own scale.
    ``weight`` multiplies the crop's weight map. Crops batch together only when their size,
    guidance scale and ``batch_key`` agree (the host uses the key for conditionings that cannot
    share a call, such as negative prompts of different token lengths).
    """

    box: Box
    cond: Any = MAIN
    cfg_scale: float | None = None
    weight: float = 1.0
    kind: str = GAUSSIAN
    variance: float = DEFAULT_VARIANCE
    batch_key: Any = None


@dataclass(frozen=True)
class PlannedRegion:
    index: int
    region: Region
    requested: tuple[float, float, float, float]  # pixels on this canvas, before snapping
    box: Box  # snapped pixel box


@dataclass(frozen=True)
class MixturePlan:
    canvas_width: int
    canvas_height: int
    tiles: TilePlan | None
    regions: tuple[PlannedRegion, ...]
    weighting: Weighting
    batch_size: int
    factor: int = LATENT_FACTOR

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the latent canvas."""
        return self.canvas_height // self.factor, self.canvas_width // self.factor

    def crops(self) -> list[CropSpec]:
        """Latent crops: background tiles first, then regions in z-order."""
        w = self.weighting
        out = []
        if self.tiles is not None:
            out += [CropSpec(to_latent(t, self.factor), MAIN, None, 1.0, w.kind, w.variance) for t in self.tiles.tiles]
        for r in self.regions:
            out.append(CropSpec(to_latent(r.box, self.factor), r.index, r.region.cfg_scale, r.region.weight,
                                w.kind, w.variance))
        return out

    def groups(self) -> list[tuple[int, int]]:
        """``(count, latent cells)`` of each group of crops that may share a model call (equal
        size and guidance scale), in crop order."""
        groups: dict[tuple, list[int]] = {}
        for c in self.crops():
            groups.setdefault((c.box.width, c.box.height, c.cfg_scale), [0, c.box.area])[0] += 1
        return [(count, cells) for count, cells in groups.values()]

    @property
    def model_calls_per_step(self) -> int:
        return model_calls_per_step([count for count, _ in self.groups()], self.batch_size)

    @property
    def redundancy(self) -> float:
        """Sum of crop areas over canvas area (1.0 = every pixel computed once per step)."""
        return sum(c.box.area for c in self.crops()) * self.factor ** 2 / (self.canvas_width * self.canvas_height)

    def summary(self) -> dict[str, Any]:
        """The plan as one JSON-able object (what ``plan --json`` prints)."""
        tiles = self.tiles
        return {
            "canvas": {"width": self.canvas_width, "height": self.canvas_height,
                       "latent_width": self.latent_size[1], "latent_height": self.latent_size[0]},
            "tile_grid": None if tiles is None else {
                "tile_width": tiles.tile_width, "tile_height": tiles.tile_height,
                "columns": len(tiles.columns.starts), "rows": len(tiles.rows.starts),
                "requested_overlap": {"x": tiles.requested_overlap[0], "y": tiles.requested_overlap[1]},
                "overlaps_x": list(tiles.overlaps_x), "overlaps_y": list(tiles.overlaps_y)},
            "tiles": [t.as_list() for t in tiles.tiles] if tiles else [],
            "regions": [{"index": r.index, "box": r.box.as_list(),
                         "requested": [round(v, 3) for v in r.requested],
                         "prompt": r.region.prompt, "prompt_mode": r.region.prompt_mode,
                         "cfg_scale": r.region.cfg_scale, "weight": r.region.weight, "seed": r.region.seed,
                         "guide_strength": r.region.guide.strength if r.region.guide else None}
                        for r in self.regions],
            "weights": {"kind": self.weighting.kind, "variance": self.weighting.variance},
            "crops": len(self.crops()),
            "batch_size": self.batch_size,
            "redundancy": round(self.redundancy, 4),
            "model_calls_per_step": self.model_calls_per_step,
        }


def build_plan(preset: Preset, width: int | None = None, height: int | None = None,
               batch_size: int | None = None, factor: int = LATENT_FACTOR,
               limits: Limits = DEFAULT_LIMITS) -> MixturePlan:
    """Resolve ``preset`` on a ``width x height`` pixel canvas (default: the preset's canvas).

    Any size of at least one latent cell is accepted: the model's latent is ``floor(px / 8)``
    cells (what the WebUI samples for a 665x998 image), so the plan covers
    ``8 * floor(px / 8)`` pixels and px region boxes are scaled from the canvas they were
    drawn on (the preset's ``canvas``, else ``width x height``) onto it.

    Raises `PresetError` naming the field when the preset cannot be placed on this canvas or
    the plan would pass ``limits.max_crops`` (checked before any tile is placed); ValueError for
    a preset whose ``"auto"`` values were not chosen yet (`lib_mixture.auto_plan.resolve`).
    """
    problems: list[str] = []
    if width is None or height is None:
        if preset.canvas is None:
            raise PresetError(["canvas: the canvas size is unknown; give width and height "
                               "(--width/--height) or a 'canvas' in the preset"])
        width = preset.canvas.width if width is None else width
        height = preset.canvas.height if height is None else height
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < factor:
            problems.append(f"canvas.{name}: {value} must be a whole number of px, at least {factor} (one latent cell)")
    if problems:
        raise PresetError(problems)
    if preset.tiles is not None and (preset.tiles.auto_size or (preset.tiles.auto_batch and batch_size is None)):
        raise ValueError("build_plan needs the tile size and batch chosen: lib_mixture.auto_plan.resolve first")
    drawn_on = preset.canvas or Canvas(width, height)
    width, height = width // factor * factor, height // factor * factor

    tiles = None
    if preset.tiles is not None:
        t = preset.tiles
        tw, th = min(_round_to(t.width, factor), width), min(_round_to(t.height, factor), height)
        overlap = (t.overlap.x, t.overlap.y)
        count = tile_count(width, height, tw, th, overlap, factor) + len(preset.regions)
        if count > limits.max_crops:
            raise PresetError([f"tiles: {tw}x{th} px tiles with at least {t.overlap.x}x{t.overlap.y} px overlap "
                               f"need {count - len(preset.regions)} tiles on this {width}x{height} canvas"
                               + (f" (plus {len(preset.regions)} regions)" if preset.regions else "")
                               + f"; allowed at most {limits.max_crops} crops per step (a limit set in the WebUI's Settings → Mixture of Diffusers): "
                               "use larger tiles or a smaller overlap"])
        try:
            tiles = plan_tiles(width, height, tw, th, overlap, factor)
        except ValueError as e:
            raise PresetError([f"tiles: {e}"]) from None
    elif len(preset.regions) > limits.max_crops:
        raise PresetError([f"regions: {len(preset.regions)} regions; allowed at most {limits.max_crops} "
                           "crops per step (a limit set in the WebUI's Settings → Mixture of Diffusers)"])

    regions = []
    sx, sy = _region_scale(preset, drawn_on, width, height)
    for i, r in enumerate(preset.regions):
        x, y, w, h = (r.x * sx, r.y * sy, r.width * sx, r.height * sy)
        if x >= width or y >= height:
            problems.append(f"regions[{i}]: box starts at ({x:g}, {y:g}) px, outside the {width}x{height} canvas")
            continue
        if x + w > width + factor / 2 or y + h > height + factor / 2:
            problems.append(f"regions[{i}]: box [{x:g}, {y:g}, {w:g}, {h:g}] px reaches past the "
                            f"{width}x{height} canvas")
            continue
        regions.append(PlannedRegion(i, r, (x, y, w, h), snap_box(x, y, w, h, width, height, factor)))
    if problems:
        raise PresetError(problems)
    if tiles is None and not regions:
        raise PresetError(["regions: the preset has neither a tile grid nor any region"])
    size = batch_size if batch_size is not None else (preset.tiles.batch_size if preset.tiles else DEFAULT_BATCH_SIZE)
    return MixturePlan(width, height, tiles, tuple(regions), preset.weights, size, factor)


def _region_scale(preset: Preset, drawn_on: Canvas, width: int, height: int) -> tuple[float, float]:
    if preset.units == "fraction":
        return float(width), float(height)
    return width / drawn_on.width, height / drawn_on.height


def _round_to(value: int, grid: int) -> int:
    return max(grid, int(math.floor(value / grid + 0.5)) * grid)
