"""The preset format's one table: every field with its type, range, default, unit and meaning.

Everything that knows the format reads this table: the validator (`lib_mixture.checker`,
`lib_mixture.preset`), the JSON schema and the editor's generated limits module (both written
by `lib_mixture.generated`, which also writes the README's field table), the panel's gradio
controls (`lib_mixture_webui.panel`) and the editor's tooltips. Adding a field is one row here,
then ``python -m lib_mixture.generated --write``; ``tests/test_fields.py`` fails while a
generated file is stale.

A path names a field the way error messages do: ``tiles.width``, ``regions[].guide.strength``
(``[]``: every item of a list). An ``object`` row describes the object itself; its fields are
the rows whose path starts with its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .geometry import LATENT_FACTOR
from .weights import DEFAULT_VARIANCE, KINDS

VERSION = 1
MAX_SIDE = 16384  # px; the WebUI's own sliders stop well below this
MIN_SIDE = 64  # px; the smallest tile and the smallest canvas an upscale may produce
MAX_BATCH = 64
SEED_MAX = 2**32 - 1
MAX_SCALE = 16.0
MAX_NAME = 200
VAE_TILE_MAX = 4096
UNITS = ("px", "fraction")
PROMPT_MODES = ("replace", "append")
PASSES = ("first", "hires", "both")
FITS = ("crop", "pad", "stretch")
VAE_TILING = ("auto", "on", "off")
MICRO_CONDITIONING = ("tiles", "all", "off")

REQUIRED = "required"  # the ``default`` of a field that must be given
AUTO = "auto"  # a value chosen at generation from the device's free memory (`lib_mixture.auto_plan`)


@dataclass(frozen=True)
class Field:
    """One field of the preset format.

    ``kind``: ``integer``, ``number``, ``string``, ``enum`` (one of ``options``), ``const``,
    ``object`` or ``list`` (of objects). ``minimum``/``maximum`` bound numbers (inclusive
    unless ``exclusive_minimum``); for region boxes they are the px bounds and ``fraction``
    gives the bounds in ``units: "fraction"``. ``multiple_of``: numbers on a grid (px).
    ``nullable``: ``null`` is allowed and means the default. ``max_length``: characters of a
    string (None: the server's text limit). ``per_axis``: an integer or ``{"x", "y"}``.
    ``fraction``: the bounds in fractions of the canvas, open below when the px minimum is above 0
    (a box has a size). ``auto``: the string ``"auto"`` is allowed besides numbers in the range.
    """

    path: str
    kind: str
    doc: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    multiple_of: int | None = None
    unit: str = ""
    options: tuple = ()
    nullable: bool = False
    max_length: int | None = None
    per_axis: bool = False
    fraction: tuple[float, float] | None = None
    non_blank: bool = False  # a string with at least one non-space character
    allowed_note: str = ""  # a constraint the columns above cannot say (for the docs)
    auto: bool = False  # the string "auto" is allowed too: chosen at generation (`lib_mixture.auto_plan`)

    @property
    def key(self) -> str:
        """The field's own key in its parent object."""
        return self.path.rsplit(".", 1)[-1].removesuffix("[]")

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""

    @property
    def required(self) -> bool:
        return self.default == REQUIRED

    def unit_text(self) -> str:
        """The unit as messages append it: `` px``, or `` (times the source size)``."""
        if not self.unit:
            return ""
        return f" {self.unit}" if self.unit == "px" else f" ({self.unit})"

    def range_text(self, lo: float | None = None, hi: float | None = None, fraction: bool = False) -> str:
        """``[lo, hi] px`` or ``(lo, hi]``, as error messages and the docs say it; ``lo``/``hi``
        override the table's bounds where they depend on other fields (an overlap below the tile)."""
        if fraction:
            lo_f, hi_f = self.fraction
            return f"{'(' if self.minimum else '['}{lo_f}, {hi_f}]"
        lo = self.minimum if lo is None else lo
        hi = self.maximum if hi is None else hi
        return f"{'(' if self.exclusive_minimum else '['}{lo}, {hi}]{self.unit_text()}"


FIELDS: tuple[Field, ...] = (
    Field("version", "const", "Format version.", REQUIRED, VERSION, VERSION),
    Field("name", "string", "Shown in preset lists.", "", max_length=MAX_NAME),
    Field("units", "enum", "Units of region boxes: px, or fractions of the canvas.", "px", options=UNITS),
    Field("canvas", "object", "The canvas the region boxes were drawn on; boxes are scaled to the "
          "generation's size (and to the hires pass).", None),
    Field("canvas.width", "integer", "Canvas width.", REQUIRED, 8, MAX_SIDE, unit="px"),
    Field("canvas.height", "integer", "Canvas height.", REQUIRED, 8, MAX_SIDE, unit="px"),
    Field("tiles", "object", "A background grid of tiles driven by the main prompt. The planner "
          "places the fewest tiles with at least this overlap.", None, nullable=True),
    Field("tiles.width", "integer", "Tile width (clamped to the canvas); auto: with tiles.height, the square tile "
          "with the lowest predicted step time that fits the device's free memory (see Time and memory).", AUTO,
          MIN_SIDE, MAX_SIDE, unit="px", auto=True),
    Field("tiles.height", "integer", "Tile height (clamped to the canvas); left out beside a width in px: the same "
          "(a square tile); auto: see tiles.width.", AUTO, MIN_SIDE, MAX_SIDE, unit="px", auto=True),
    Field("tiles.overlap", "integer", "Minimum overlap of neighbouring tiles, one value or per axis "
          "{x, y}.", 64, 0, MAX_SIDE - LATENT_FACTOR, unit="px", per_axis=True,
          allowed_note="below the tile size"),
    Field("tiles.overlap.x", "integer", "Minimum overlap across columns.", REQUIRED, 0, MAX_SIDE - LATENT_FACTOR,
          unit="px", allowed_note="below the tile width"),
    Field("tiles.overlap.y", "integer", "Minimum overlap across rows.", REQUIRED, 0, MAX_SIDE - LATENT_FACTOR,
          unit="px", allowed_note="below the tile height"),
    Field("tiles.batch_size", "integer", "Crops per model call (speed only: results do not depend on it); auto: the "
          "batch with the lowest predicted step time that fits the device's free memory.", AUTO, 1, MAX_BATCH,
          auto=True),
    Field("weights", "object", "How every crop fades into its neighbours.", None),
    Field("weights.kind", "enum", "gaussian (the paper's) or constant.", "gaussian", options=KINDS),
    Field("weights.variance", "number", "Gaussian variance (paper: 0.01); larger is softer.",
          DEFAULT_VARIANCE, 0.0, 10.0, exclusive_minimum=True),
    Field("regions", "list", "Boxes with their own prompt.", ()),
    Field("regions[].x", "number", "Left edge of the box.", REQUIRED, 0, MAX_SIDE, unit="px", fraction=(0.0, 1.0)),
    Field("regions[].y", "number", "Top edge of the box.", REQUIRED, 0, MAX_SIDE, unit="px", fraction=(0.0, 1.0)),
    Field("regions[].width", "number", "Box width.", REQUIRED, LATENT_FACTOR, MAX_SIDE, unit="px",
          fraction=(0.0, 1.0), allowed_note="inside the canvas"),
    Field("regions[].height", "number", "Box height.", REQUIRED, LATENT_FACTOR, MAX_SIDE, unit="px",
          fraction=(0.0, 1.0), allowed_note="inside the canvas"),
    Field("regions[].prompt", "string", "The region's prompt; empty: the main prompt.", ""),
    Field("regions[].negative_prompt", "string", "The region's negative prompt; empty: the main one.", ""),
    Field("regions[].prompt_mode", "enum", "replace: the region prompt alone; append: the main prompt, "
          "then the region's.", "replace", options=PROMPT_MODES),
    Field("regions[].cfg_scale", "number", "The region's CFG scale; null: the main one.", None, 0.0, 100.0,
          nullable=True),
    Field("regions[].weight", "number", "Multiplies the region's weights: above 1 it dominates where it "
          "overlaps others.", 1.0, 0.0, 1000.0, exclusive_minimum=True),
    Field("regions[].seed", "integer", "Noise for the region's box; -1 keeps the canvas's noise. Image k + 1 "
          "of a job uses the seed plus k (wrapped into the range).", -1, -1, SEED_MAX),
    Field("regions[].guide", "object", "A guide image that holds the box to it for a fraction of the steps.",
          None, nullable=True),
    Field("regions[].guide.image", "string", "A data:image/...;base64 URL, a sha256: reference (what the "
          "infotext holds) or a file path inside the allowed guide folders (the API only where the server's "
          "owner allows it; the command line reads any path, relative to the preset file; see Security).", REQUIRED,
          non_blank=True),
    Field("regions[].guide.strength", "number", "Fraction of the steps during which the box is held to "
          "the guide.", 0.5, 0.0, 1.0),
    Field("passes", "enum", "txt2img with hires fix: mix the first pass, the hires pass, or both.", "both",
          options=PASSES),
    Field("micro_conditioning", "enum", "SDXL and its refiner: the size conditioning of each crop. tiles: a "
          "background tile is told it is the crop at its offset of a canvas-sized image (crop_coords_top_left = "
          "its offset in px, original_size and target_size = the canvas); all: region crops too; off: every crop "
          "gets the whole image's vector, as the WebUI gives it. Other models ignore it.", "tiles",
          options=MICRO_CONDITIONING),
    Field("upscale", "object", "img2img: resize the init image once with a WebUI upscaler, then refine it "
          "with the tiled mixture.", None, nullable=True),
    Field("upscale.upscaler", "string", "A name from the WebUI's upscaler list (Lanczos, R-ESRGAN 4x+, ...).",
          "Lanczos", max_length=MAX_NAME, non_blank=True),
    Field("upscale.scale", "number", "Times the source size, each side rounded to 8 px.", 2.0, 0.0,
          MAX_SCALE, exclusive_minimum=True, nullable=True, unit="times the source size", allowed_note="not with width and height"),
    Field("upscale.width", "integer", "Target width (with height).", None, MIN_SIDE, MAX_SIDE,
          multiple_of=LATENT_FACTOR, unit="px", nullable=True, allowed_note="with height"),
    Field("upscale.height", "integer", "Target height (with width).", None, MIN_SIDE, MAX_SIDE,
          multiple_of=LATENT_FACTOR, unit="px", nullable=True, allowed_note="with width"),
    Field("upscale.fit", "enum", "A source of another aspect ratio: crop (cover, centred), pad (contain, "
          "borders extended) or stretch.", "crop", options=FITS),
    Field("upscale.guide_strength", "number", "Fraction of the model calls during which the upscaled image "
          "guides the whole canvas (Algorithm 2); 0: off.", 0.0, 0.0, 1.0),
    Field("upscale.controlnet_tile", "string", "With sd-webui-controlnet: a ControlNet tile model that holds every "
          "tile to the upscaled image (one more unit: tile_resample, weight 1, no image of its own, so it takes the "
          "upscaled one). auto: the installed model with 'tile' in its name; or a model name as ControlNet lists it; "
          "'': none (units of your own without an image still get the upscaled image).", "",
          max_length=MAX_NAME),
    Field("vae", "object", "Tiled VAE encode and decode.", None, nullable=True),
    Field("vae.tiling", "enum", "auto: tiled when a plain pass would not fit in free memory; on: always; "
          "off: never.", "auto", options=VAE_TILING),
    Field("vae.tile", "integer", "Core tile edge; null: chosen from the free memory.", None, MIN_SIDE,
          VAE_TILE_MAX, multiple_of=LATENT_FACTOR, unit="px", nullable=True),
)

FIELD: dict[str, Field] = {f.path: f for f in FIELDS}


def children(parent: str) -> tuple[Field, ...]:
    """The rows directly inside ``parent`` ("" for the top level; ``regions[]`` for a region)."""
    return tuple(f for f in FIELDS if f.parent == parent)


def keys(parent: str) -> tuple[str, ...]:
    """The allowed keys of the object at ``parent``, in the table's order."""
    return tuple(f.key for f in children(parent))


def default(path: str) -> Any:
    return FIELD[path].default
