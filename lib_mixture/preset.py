"""Presets: one JSON object that is the preset file, the API argument and the infotext value.

`parse_preset` validates a decoded JSON object completely and reports *every* problem at
once, each naming the field path (``regions[2].width``), the value and what is allowed.
Unknown keys are errors, so a typo never silently does nothing. `save_preset` writes
atomically and refuses to replace an existing file unless asked to.

The format (version 1) is documented in the README and in ``schema/preset.schema.json``.
Tile sizes are always pixels; region boxes are pixels or fractions of the canvas (``units``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .checker import Checker, show
from .geometry import LATENT_FACTOR
from .limits import DEFAULT_LIMITS, Limits, json_shape_problem

from .fields import AUTO, MAX_SIDE, SEED_MAX, VERSION, default


class PresetError(ValueError):
    """A preset failed validation; ``problems`` lists one message per bad field."""

    def __init__(self, problems: list[str], source: str = "preset"):
        self.problems = problems
        super().__init__(f"invalid {source}: " + "; ".join(problems) if len(problems) == 1
                         else f"invalid {source} ({len(problems)} problems):\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Overlap:
    """Minimum overlap between neighbouring tiles, per axis, in pixels."""

    x: int
    y: int

    @classmethod
    def square(cls, value: int) -> "Overlap":
        """The same overlap across columns and rows (what a single number in a preset means)."""
        return cls(value, value)


@dataclass(frozen=True)
class TileGrid:
    """A background grid of tiles driven by the main prompt (high resolution, upscaling).

    ``width``/``height`` px, or both ``"auto"``; ``batch_size`` crops per model call, or
    ``"auto"``: chosen on the job's canvas from the device's memory (`lib_mixture.auto_plan`)."""

    width: int | str = default("tiles.width")
    height: int | str = default("tiles.height")
    overlap: Overlap = Overlap.square(default("tiles.overlap"))
    batch_size: int | str = default("tiles.batch_size")

    @property
    def auto_size(self) -> bool:
        return self.width == AUTO or self.height == AUTO

    @property
    def auto_batch(self) -> bool:
        return self.batch_size == AUTO


@dataclass(frozen=True)
class Weighting:
    kind: str = default("weights.kind")
    variance: float = default("weights.variance")


HASH_PREFIX = "sha256:"  # a guide image named by its content's hash (what the infotext holds)


def _is_hash_ref(text: str) -> bool:
    digits = text[len(HASH_PREFIX):]
    return text.startswith(HASH_PREFIX) and 12 <= len(digits) <= 64 and all(ch in "0123456789abcdef" for ch in digits)


@dataclass(frozen=True)
class Guide:
    """A guide image and its strength in [0, 1].

    ``image`` is a ``data:image/...;base64,`` URL, a ``sha256:<hex>`` reference to an image
    by its content (the infotext never carries the image or a path), or a file path. Where a
    reference or a path may be read is the caller's policy (`lib_mixture.guide_source`).
    """

    image: str
    strength: float = default("regions[].guide.strength")


@dataclass(frozen=True)
class Region:
    """A box with its own prompt. Empty prompts fall back to the main ones; ``cfg_scale``
    None uses the main guidance scale; ``seed`` -1 keeps the canvas's own noise."""

    x: float
    y: float
    width: float
    height: float
    prompt: str = default("regions[].prompt")
    negative_prompt: str = default("regions[].negative_prompt")
    prompt_mode: str = default("regions[].prompt_mode")
    cfg_scale: float | None = default("regions[].cfg_scale")
    weight: float = default("regions[].weight")
    seed: int = default("regions[].seed")
    guide: Guide | None = None


@dataclass(frozen=True)
class Upscale:
    """img2img: resize the init image once in pixel space before the tiled refinement.

    ``upscaler`` is a name from the WebUI's upscaler list (checked by the host adapter).
    The target is ``width`` x ``height`` (px, multiples of 8) when given, else the source
    size times ``scale`` snapped to 8 px. ``fit`` says how a source of another aspect ratio
    meets the target: ``crop`` (cover, centred), ``pad`` (contain, centred, the borders
    extended outwards) or ``stretch``. ``guide_strength`` > 0 makes the upscaled image a
    guide for the whole canvas during that fraction of the model calls (Algorithm 2).
    ``controlnet_tile``: a ControlNet tile model for one more unit fed the upscaled image
    (``auto``, a model name, or ``""`` for none; resolved by the host adapter)."""

    upscaler: str = default("upscale.upscaler")
    scale: float | None = default("upscale.scale")
    width: int | None = default("upscale.width")
    height: int | None = default("upscale.height")
    fit: str = default("upscale.fit")
    guide_strength: float = default("upscale.guide_strength")
    controlnet_tile: str = default("upscale.controlnet_tile")


@dataclass(frozen=True)
class VAETiling:
    """Tiled VAE encode/decode. ``auto``: tiled when the plain pass would not fit in free
    memory; ``on``: always; ``off``: never. ``tile``: core tile edge in image px (multiple of
    8), or None to choose it from the free device memory."""

    tiling: str = default("vae.tiling")
    tile: int | None = default("vae.tile")


@dataclass(frozen=True)
class Canvas:
    """The canvas the region boxes were drawn on, in px; boxes scale with the generation's size."""

    width: int
    height: int


@dataclass(frozen=True)
class Preset:
    version: int = VERSION
    name: str = default("name")
    units: str = default("units")
    canvas: Canvas | None = None
    tiles: TileGrid | None = None
    weights: Weighting = Weighting()
    regions: tuple[Region, ...] = field(default_factory=tuple)
    passes: str = default("passes")  # txt2img with hires fix: the first pass, the hires pass, or both
    micro_conditioning: str = default("micro_conditioning")  # SDXL: each crop's size conditioning
    upscale: Upscale | None = None
    vae: VAETiling = VAETiling()

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON object (what `parse_preset` reads back to an equal preset)."""
        out: dict[str, Any] = {"version": self.version, "name": self.name, "units": self.units}
        if self.canvas is not None:
            out["canvas"] = asdict(self.canvas)
        if self.tiles is not None:
            t = self.tiles
            overlap: Any = t.overlap.x if t.overlap.x == t.overlap.y else asdict(t.overlap)
            out["tiles"] = dict(asdict(t), overlap=overlap)
        out["weights"] = asdict(self.weights)
        out["regions"] = [_region_dict(r) for r in self.regions]
        out["passes"] = self.passes
        out["micro_conditioning"] = self.micro_conditioning
        if self.upscale is not None:
            u = asdict(self.upscale)
            if u["width"] is None:
                del u["width"], u["height"]
            else:
                del u["scale"]
            if not u["controlnet_tile"]:
                del u["controlnet_tile"]  # the default: older infotexts and presets read the same
            out["upscale"] = u
        if self.vae != VAETiling():
            out["vae"] = asdict(self.vae)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def image_seed(seed: int, offset: int) -> int:
    """A region's seed for one image: ``seed`` moved by the image's ``offset``, the amount its
    main seed lies past the job's first (the WebUI's rule for the main seed), wrapped into
    [0, 2**32 - 1] so that it stays a valid preset seed. -1 (no region seed) stays -1."""
    return seed if seed < 0 else (seed + offset) % (SEED_MAX + 1)


def _region_dict(region: Region) -> dict[str, Any]:
    out = {f.name: getattr(region, f.name) for f in fields(Region) if f.name != "guide"}
    if region.guide is not None:
        out["guide"] = asdict(region.guide)
    return out


# --------------------------------------------------------------------------- validation


def parse_preset(obj: Any, source: str = "preset", limits: Limits = DEFAULT_LIMITS) -> Preset:
    """Validate a decoded JSON object and build a `Preset`; raise `PresetError` listing every problem.

    Every field is read through its row in `lib_mixture.fields`. ``limits`` bounds the object's
    nesting and size, the number of regions and the length of texts (`lib_mixture.limits`);
    they are checked before anything else is read.
    """
    shape = json_shape_problem(obj, limits)
    if shape is not None:
        raise PresetError([f"preset: {shape}"], source)
    c = Checker()
    if not c.keys(obj, ""):
        raise PresetError(c.problems, source)
    version = obj.get("version")
    if "version" in obj and (version != VERSION or isinstance(version, bool)):
        c.fail("version", f"{show(version)} is not supported; this extension reads version {VERSION}")
    if version != VERSION or isinstance(version, bool):  # missing or unsupported: the rest cannot be read
        raise PresetError(c.problems, source)
    top = c.values(obj, "", "", version=VERSION)
    units = top["units"]

    canvas = None
    if "canvas" in obj and c.keys(obj["canvas"], "canvas"):
        size = c.values(obj["canvas"], "canvas", "canvas")
        if None not in size.values():
            canvas = Canvas(**size)

    tiles = None
    if obj.get("tiles") is not None and c.keys(obj["tiles"], "tiles"):
        t = obj["tiles"]
        grid = c.values(t, "tiles", "tiles", overlap=None)
        for side, other in (("width", "height"), ("height", "width")):
            if other not in t and isinstance(grid[side], int):  # one side given in px: a square tile
                grid[other] = grid[side]
        if all(k in t and t[k] == grid[k] for k in ("width", "height")) and (grid["width"] == AUTO) != (
                grid["height"] == AUTO):
            fixed = "width" if grid["height"] == AUTO else "height"
            c.fail(f"tiles.{fixed}", f"{show(grid[fixed])} beside \"{AUTO}\": auto chooses both sides of a square "
                                     f"tile; give both tiles.width and tiles.height as \"{AUTO}\" or both in px")
        tiles = TileGrid(**dict(grid, overlap=_overlap(c, t, grid["width"], grid["height"])))

    weights = Weighting()
    if "weights" in obj and c.keys(obj["weights"], "weights"):
        weights = Weighting(**c.values(obj["weights"], "weights", "weights"))

    regions: list[Region] = []
    raw_regions = obj.get("regions", [])
    if not isinstance(raw_regions, list):
        c.fail("regions", f"expected a list of regions, got {show(raw_regions)}")
        raw_regions = []
    if len(raw_regions) > limits.max_regions:
        c.fail("regions", f"{len(raw_regions)} regions; allowed at most {limits.max_regions} "
                          "(a limit set in the WebUI's Settings → Mixture of Diffusers)")
        raw_regions = []
    for i, raw in enumerate(raw_regions):
        region = _region(c, raw, f"regions[{i}]", units, canvas, limits)
        if region is not None:
            regions.append(region)

    upscale = _upscale(c, obj["upscale"]) if obj.get("upscale") is not None else None
    vae = VAETiling()
    if obj.get("vae") is not None and c.keys(obj["vae"], "vae"):
        vae = VAETiling(**c.values(obj["vae"], "vae", "vae"))

    if not c.problems and tiles is None and not regions:
        c.fail("regions", "the preset has neither a tile grid ('tiles') nor any region; give at least one")
    if c.problems:
        raise PresetError(c.problems, source)
    return Preset(**dict(top, canvas=canvas, tiles=tiles, weights=weights, regions=tuple(regions), upscale=upscale,
                         vae=vae))


def _upscale(c: Checker, raw: Any) -> Upscale | None:
    if not c.keys(raw, "upscale"):
        return None
    before = len(c.problems)
    values = c.values(raw, "upscale", "upscale", scale=None)
    if isinstance(raw.get("upscaler"), str) and not values["upscaler"].strip():
        c.fail("upscale.upscaler", "is empty; give an upscaler name from the WebUI (e.g. 'Lanczos', 'R-ESRGAN 4x+')")
    sized = raw.get("width") is not None or raw.get("height") is not None
    scale = None
    if raw.get("scale") is not None:
        scale = c.field(raw, "upscale.scale", "upscale")
        if sized:
            c.fail("upscale.scale", "give either scale or width and height, not both")
    elif not sized:
        scale = default("upscale.scale")
    if sized:
        for key in ("width", "height"):
            if raw.get(key) is None:
                other = "height" if key == "width" else "width"
                c.fail(f"upscale.{key}", f"is required with upscale.{other} (the target size is width x height)")
    if len(c.problems) > before:
        return None
    return Upscale(**dict(values, upscaler=values["upscaler"].strip(), scale=scale,
                          controlnet_tile=values["controlnet_tile"].strip()))


def _overlap(c: Checker, t: dict, tw: int | str | None, th: int | str | None) -> Overlap:
    """One overlap or ``{x, y}``, each below its tile side by at least one latent cell (auto
    sides: checked when the side is chosen, `lib_mixture.auto_plan`)."""
    fallback = Overlap.square(default("tiles.overlap"))
    tw = tw if isinstance(tw, int) else MAX_SIDE
    th = th if isinstance(th, int) else MAX_SIDE
    raw = t.get("overlap")
    if "overlap" not in t:  # the default, below small tiles too
        return Overlap(min(fallback.x, max(tw - LATENT_FACTOR, 0)), min(fallback.y, max(th - LATENT_FACTOR, 0)))
    if isinstance(raw, dict):
        if not c.keys(raw, "tiles.overlap"):
            return fallback
        ox = c.field(raw, "tiles.overlap.x", "tiles.overlap", hi=max(tw - LATENT_FACTOR, 0),
                     note=" (below the tile width)")
        oy = c.field(raw, "tiles.overlap.y", "tiles.overlap", hi=max(th - LATENT_FACTOR, 0),
                     note=" (below the tile height)")
        return Overlap(ox, oy)
    value = c.field(t, "tiles.overlap", "tiles", hi=max(min(tw, th) - LATENT_FACTOR, 0), note=" (below the tile size)")
    return fallback if value is None else Overlap.square(value)


def _region(c: Checker, raw: Any, path: str, units: str, canvas: Canvas | None,
            limits: Limits = DEFAULT_LIMITS) -> Region | None:
    if not c.keys(raw, path, table="regions[]"):
        return None
    before = len(c.problems)
    fraction = units == "fraction"
    x, y, w, h = (c.field(raw, f"regions[].{k}", path, fraction=fraction) for k in ("x", "y", "width", "height"))
    limit_w = 1.0 if fraction else canvas.width if canvas else None
    limit_h = 1.0 if fraction else canvas.height if canvas else None
    if None not in (x, w) and limit_w is not None and x + w > limit_w * (1 + 1e-9):
        c.fail(f"{path}.width", f"x + width = {x + w} reaches past the canvas width {limit_w}")
    if None not in (y, h) and limit_h is not None and y + h > limit_h * (1 + 1e-9):
        c.fail(f"{path}.height", f"y + height = {y + h} reaches past the canvas height {limit_h}")
    values = c.values(raw, "regions[]", path, text_limit=limits.max_text, x=x, y=y, width=w, height=h, guide=None)
    values["guide"] = _guide(c, raw.get("guide"), f"{path}.guide", limits)
    if len(c.problems) > before:
        return None
    return Region(**values)


def _guide(c: Checker, raw: Any, path: str, limits: Limits) -> Guide | None:
    if raw is None or not c.keys(raw, path, table="regions[].guide"):
        return None
    image = c.field(raw, "regions[].guide.image", path, max_length=limits.max_image_chars)
    if isinstance(raw.get("image"), str) and not raw["image"].strip():
        c.fail(f"{path}.image", "is empty; give the image as a data:image/...;base64 URL "
                                "(or, where the server allows it, a file path)")
    elif isinstance(image, str) and image.startswith(HASH_PREFIX) and not _is_hash_ref(image):
        c.fail(f"{path}.image", f"{show(image)} is not a guide image reference; expected "
                                f"'{HASH_PREFIX}' and 12 to 64 hexadecimal digits")
    values = c.values(raw, "regions[].guide", path, image=image)
    return Guide(**values) if isinstance(image, str) else None


# --------------------------------------------------------------------------- files


def loads_preset(text: str, source: str = "preset", limits: Limits = DEFAULT_LIMITS) -> Preset:
    """Parse and validate preset JSON text (`parse_preset`); its length is checked first."""
    if len(text) > limits.max_json_chars:
        raise PresetError([f"preset: its JSON text is {len(text)} characters long; allowed at most "
                           f"{limits.max_json_chars}"], source)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise PresetError([f"preset: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"], source) from None
    except RecursionError:
        raise PresetError([f"preset: is nested more than {limits.max_depth} levels deep; allowed at most "
                           f"{limits.max_depth}"], source) from None
    return parse_preset(obj, source, limits)


def load_preset(path: str | os.PathLike) -> Preset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PresetError([f"cannot read {path}: {e.strerror or e}"], str(path)) from None
    return loads_preset(text, str(path))


def save_preset(preset: Preset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``preset`` to ``path`` atomically.

    The JSON goes to a temporary file in the same folder first, so a crash never leaves a
    half-written preset. Without ``overwrite`` an existing file is never replaced
    (`FileExistsError`); the no-replace publish is a hard link, which fails atomically when
    the name is taken, even if another process writes it in between.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(preset.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"preset {path} already exists; choose another name or allow overwriting") from None
            except OSError:  # a filesystem without hard links: check, then rename
                if path.exists():
                    raise FileExistsError(f"preset {path} already exists; choose another name or allow overwriting") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
