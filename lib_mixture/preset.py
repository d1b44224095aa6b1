"""Presets: one JSON object that is the preset file, the API argument and the infotext value.

`parse_preset` validates a decoded JSON object completely and reports *every* problem at
once, each naming the field path (``regions[2].width``), the value and what is allowed.
Unknown keys are errors, so a typo never silently does nothing. `save_preset` writes
atomically and refuses to replace an existing file unless asked to.

The format (version 1) is documented in the README and in ``schema/preset.schema.json``.
Tile sizes are always pixels; region boxes are pixels or fractions of the canvas (``units``).
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .limits import DEFAULT_LIMITS, Limits, json_shape_problem
from .weights import DEFAULT_VARIANCE, KINDS

VERSION = 1
MAX_SIDE = 16384  # px; the WebUI's own sliders stop well below this
MAX_BATCH = 64
UNITS = ("px", "fraction")
PROMPT_MODES = ("replace", "append")
PASSES = ("first", "hires", "both")
SEED_MAX = 2**32 - 1
FITS = ("crop", "pad", "stretch")
VAE_TILING = ("auto", "on", "off")
MAX_SCALE = 16.0
MIN_SIDE = 64  # px; the smallest canvas an upscale may produce


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


@dataclass(frozen=True)
class TileGrid:
    """A background grid of tiles driven by the main prompt (high resolution, upscaling)."""

    width: int = 768
    height: int = 768
    overlap: Overlap = Overlap(64, 64)
    batch_size: int = 4


@dataclass(frozen=True)
class Weighting:
    kind: str = "gaussian"
    variance: float = DEFAULT_VARIANCE


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
    strength: float = 0.5


@dataclass(frozen=True)
class Region:
    """A box with its own prompt. Empty prompts fall back to the main ones; ``cfg_scale``
    None uses the main guidance scale; ``seed`` -1 keeps the canvas's own noise."""

    x: float
    y: float
    width: float
    height: float
    prompt: str = ""
    negative_prompt: str = ""
    prompt_mode: str = "replace"
    cfg_scale: float | None = None
    weight: float = 1.0
    seed: int = -1
    guide: Guide | None = None


@dataclass(frozen=True)
class Upscale:
    """img2img: resize the init image once in pixel space before the tiled refinement.

    ``upscaler`` is a name from the WebUI's upscaler list (checked by the host adapter).
    The target is ``width`` x ``height`` (px, multiples of 8) when given, else the source
    size times ``scale`` snapped to 8 px. ``fit`` says how a source of another aspect ratio
    meets the target: ``crop`` (cover, centred), ``pad`` (contain, centred, the borders
    extended outwards) or ``stretch``. ``guide_strength`` > 0 makes the upscaled image a
    guide for the whole canvas during that fraction of the model calls (Algorithm 2)."""

    upscaler: str = "Lanczos"
    scale: float | None = 2.0
    width: int | None = None
    height: int | None = None
    fit: str = "crop"
    guide_strength: float = 0.0


@dataclass(frozen=True)
class VAETiling:
    """Tiled VAE encode/decode. ``auto``: tiled when the plain pass would not fit in free
    memory; ``on``: always; ``off``: never. ``tile``: core tile edge in image px (multiple of
    8), or None to choose it from the free device memory."""

    tiling: str = "auto"
    tile: int | None = None


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int


@dataclass(frozen=True)
class Preset:
    version: int = VERSION
    name: str = ""
    units: str = "px"
    canvas: Canvas | None = None
    tiles: TileGrid | None = None
    weights: Weighting = Weighting()
    regions: tuple[Region, ...] = field(default_factory=tuple)
    passes: str = "both"  # txt2img with hires fix: the first pass, the hires pass, or both
    upscale: Upscale | None = None
    vae: VAETiling = VAETiling()

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON object (what `parse_preset` reads back to an equal preset)."""
        out: dict[str, Any] = {"version": self.version, "name": self.name, "units": self.units}
        if self.canvas is not None:
            out["canvas"] = asdict(self.canvas)
        if self.tiles is not None:
            t = self.tiles
            overlap: Any = t.overlap.x if t.overlap.x == t.overlap.y else {"x": t.overlap.x, "y": t.overlap.y}
            out["tiles"] = {"width": t.width, "height": t.height, "overlap": overlap, "batch_size": t.batch_size}
        out["weights"] = asdict(self.weights)
        out["regions"] = [_region_dict(r) for r in self.regions]
        out["passes"] = self.passes
        if self.upscale is not None:
            u = asdict(self.upscale)
            if u["width"] is None:
                del u["width"], u["height"]
            else:
                del u["scale"]
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


class _Checker:
    """Collects problems while reading a JSON object field by field."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path or 'preset'}: {message}")

    def keys(self, obj: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        if not isinstance(obj, dict):
            self.fail(path, f"expected an object, got {_show(obj)}")
            return False
        for key in obj:
            if key not in allowed:
                name = str(key) if len(str(key)) <= 40 else str(key)[:37] + "..."  # a hostile key stays short
                hint = difflib.get_close_matches(name, allowed, n=1)
                did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.fail(f"{path}.{name}" if path else name,
                          f"unknown key{did_you_mean}; allowed keys: {', '.join(allowed)}")
        for key in required:
            if key not in obj:
                self.fail(f"{path}.{key}" if path else key, "is required")
        return True

    def integer(self, obj: dict, key: str, path: str, lo: int, hi: int, default: Any = None,
                unit: str = "") -> Any:
        if key not in obj:
            return default
        value = obj[key]
        where = f"{path}.{key}" if path else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            self.fail(where, f"expected an integer in [{lo}, {hi}]{unit}, got {_show(value)}")
            return default
        value = int(value)
        if not lo <= value <= hi:
            self.fail(where, f"{value} is out of range; allowed [{lo}, {hi}]{unit}")
            return default
        return value

    def number(self, obj: dict, key: str, path: str, lo: float, hi: float, default: Any = None,
               lo_open: bool = False, unit: str = "", nullable: bool = False) -> Any:
        if key not in obj:
            return default
        value = obj[key]
        where = f"{path}.{key}" if path else key
        lo_text = f"({lo}" if lo_open else f"[{lo}"
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
                float("inf"), float("-inf")):
            self.fail(where, f"expected a number in {lo_text}, {hi}]{unit}, got {_show(value)}")
            return default
        if value < lo or value > hi or (lo_open and value == lo):
            self.fail(where, f"{value} is out of range; allowed {lo_text}, {hi}]{unit}")
            return default
        return float(value) if isinstance(value, float) else value

    def choice(self, obj: dict, key: str, path: str, options: tuple[str, ...], default: str) -> str:
        if key not in obj:
            return default
        value = obj[key]
        if value not in options:
            self.fail(f"{path}.{key}" if path else key,
                      f"{_show(value)} is not allowed; allowed: {', '.join(repr(o) for o in options)}")
            return default
        return value

    def text(self, obj: dict, key: str, path: str, default: str = "", max_len: int = 10000) -> str:
        if key not in obj:
            return default
        value = obj[key]
        where = f"{path}.{key}" if path else key
        if not isinstance(value, str):
            self.fail(where, f"expected a string, got {_show(value)}")
            return default
        if len(value) > max_len:
            self.fail(where, f"is {len(value)} characters long; allowed at most {max_len}")
            return default
        return value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (set, tuple)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TOP_KEYS = ("version", "name", "units", "canvas", "tiles", "weights", "regions", "passes", "upscale", "vae")
_UPSCALE_KEYS = tuple(f.name for f in fields(Upscale))
_TILE_KEYS = ("width", "height", "overlap", "batch_size")
_REGION_KEYS = tuple(f.name for f in fields(Region))


def parse_preset(obj: Any, source: str = "preset", limits: Limits = DEFAULT_LIMITS) -> Preset:
    """Validate a decoded JSON object and build a `Preset`; raise `PresetError` listing every problem.

    ``limits`` bounds the object's nesting and size, the number of regions and the length of
    texts (`lib_mixture.limits`); they are checked before anything else is read.
    """
    shape = json_shape_problem(obj, limits)
    if shape is not None:
        raise PresetError([f"preset: {shape}"], source)
    c = _Checker()
    if not c.keys(obj, "", _TOP_KEYS, required=("version",)):
        raise PresetError(c.problems, source)
    version = obj.get("version")
    if "version" in obj and version != VERSION:
        c.fail("version", f"{_show(version)} is not supported; this extension reads version {VERSION}")
    if version != VERSION:  # missing or unsupported: the rest cannot be interpreted
        raise PresetError(c.problems, source)
    name = c.text(obj, "name", "", max_len=200)
    units = c.choice(obj, "units", "", UNITS, "px")
    passes = c.choice(obj, "passes", "", PASSES, "both")

    canvas = None
    if "canvas" in obj and c.keys(obj["canvas"], "canvas", ("width", "height"), required=("width", "height")):
        w = c.integer(obj["canvas"], "width", "canvas", 8, MAX_SIDE, unit=" px")
        h = c.integer(obj["canvas"], "height", "canvas", 8, MAX_SIDE, unit=" px")
        if w is not None and h is not None:
            canvas = Canvas(w, h)

    tiles = None
    if "tiles" in obj and obj["tiles"] is not None and c.keys(obj["tiles"], "tiles", _TILE_KEYS):
        t = obj["tiles"]
        default = TileGrid()
        tw = c.integer(t, "width", "tiles", 64, MAX_SIDE, default.width, unit=" px")
        th = c.integer(t, "height", "tiles", 64, MAX_SIDE, default.height, unit=" px")
        batch = c.integer(t, "batch_size", "tiles", 1, MAX_BATCH, default.batch_size)
        overlap = _overlap(c, t, tw, th, default.overlap)
        tiles = TileGrid(tw, th, overlap, batch)

    weights = Weighting()
    if "weights" in obj and c.keys(obj["weights"], "weights", ("kind", "variance")):
        kind = c.choice(obj["weights"], "kind", "weights", KINDS, "gaussian")
        variance = c.number(obj["weights"], "variance", "weights", 0.0, 10.0, DEFAULT_VARIANCE, lo_open=True)
        weights = Weighting(kind, variance)

    regions: list[Region] = []
    raw_regions = obj.get("regions", [])
    if not isinstance(raw_regions, list):
        c.fail("regions", f"expected a list of regions, got {_show(raw_regions)}")
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
    if obj.get("vae") is not None and c.keys(obj["vae"], "vae", ("tiling", "tile")):
        tiling = c.choice(obj["vae"], "tiling", "vae", VAE_TILING, "auto")
        tile = None
        if obj["vae"].get("tile") is not None:
            tile = _multiple_of_8(c, obj["vae"], "tile", "vae", 64, 4096)
        vae = VAETiling(tiling, tile)

    if not c.problems and tiles is None and not regions:
        c.fail("regions", "the preset has neither a tile grid ('tiles') nor any region; give at least one")
    if c.problems:
        raise PresetError(c.problems, source)
    return Preset(VERSION, name, units, canvas, tiles, weights, tuple(regions), passes, upscale, vae)


def _multiple_of_8(c: _Checker, obj: dict, key: str, path: str, lo: int, hi: int) -> int | None:
    value = c.integer(obj, key, path, lo, hi, unit=" px")
    if value is not None and value % 8:
        down, up = value // 8 * 8, value // 8 * 8 + 8
        c.fail(f"{path}.{key}", f"{value} is not a multiple of 8 px (one latent cell); nearest: {down} or {up}")
        return None
    return value


def _upscale(c: _Checker, raw: Any) -> Upscale | None:
    if not c.keys(raw, "upscale", _UPSCALE_KEYS):
        return None
    before = len(c.problems)
    default = Upscale()
    upscaler = c.text(raw, "upscaler", "upscale", default.upscaler, max_len=200)
    if isinstance(raw.get("upscaler"), str) and not upscaler.strip():
        c.fail("upscale.upscaler", "is empty; give an upscaler name from the WebUI (e.g. 'Lanczos', 'R-ESRGAN 4x+')")
    fit = c.choice(raw, "fit", "upscale", FITS, default.fit)
    guide = c.number(raw, "guide_strength", "upscale", 0.0, 1.0, default.guide_strength)
    width = _multiple_of_8(c, raw, "width", "upscale", MIN_SIDE, MAX_SIDE) if raw.get("width") is not None else None
    height = _multiple_of_8(c, raw, "height", "upscale", MIN_SIDE, MAX_SIDE) if raw.get("height") is not None else None
    sized = raw.get("width") is not None or raw.get("height") is not None
    scale = None
    if raw.get("scale") is not None:
        scale = c.number(raw, "scale", "upscale", 0.0, MAX_SCALE, lo_open=True, unit=" (times the source size)")
        if sized:
            c.fail("upscale.scale", "give either scale or width and height, not both")
    elif not sized:
        scale = default.scale
    if sized:
        for key in ("width", "height"):
            if raw.get(key) is None:
                other = "height" if key == "width" else "width"
                c.fail(f"upscale.{key}", f"is required with upscale.{other} (the target size is width x height)")
    if len(c.problems) > before:
        return None
    return Upscale(upscaler.strip(), scale, width, height, fit, guide)


def _overlap(c: _Checker, t: dict, tw: int, th: int, default: Overlap) -> Overlap:
    if "overlap" not in t:
        return default
    raw = t["overlap"]
    if isinstance(raw, dict):
        if not c.keys(raw, "tiles.overlap", ("x", "y"), required=("x", "y")):
            return default
        ox = c.integer(raw, "x", "tiles.overlap", 0, max(tw - 8, 0), default.x, unit=" px (below the tile width)")
        oy = c.integer(raw, "y", "tiles.overlap", 0, max(th - 8, 0), default.y, unit=" px (below the tile height)")
        return Overlap(ox, oy)
    value = c.integer(t, "overlap", "tiles", 0, max(min(tw, th) - 8, 0), None,
                      unit=" px (below the tile size)")
    return default if value is None else Overlap(value, value)


def _region(c: _Checker, raw: Any, path: str, units: str, canvas: Canvas | None,
            limits: Limits = DEFAULT_LIMITS) -> Region | None:
    if not c.keys(raw, path, _REGION_KEYS, required=("x", "y", "width", "height")):
        return None
    before = len(c.problems)
    if units == "fraction":
        x = c.number(raw, "x", path, 0.0, 1.0)
        y = c.number(raw, "y", path, 0.0, 1.0)
        w = c.number(raw, "width", path, 0.0, 1.0, lo_open=True)
        h = c.number(raw, "height", path, 0.0, 1.0, lo_open=True)
        limit_w = limit_h = 1.0
    else:
        x = c.number(raw, "x", path, 0, MAX_SIDE, unit=" px")
        y = c.number(raw, "y", path, 0, MAX_SIDE, unit=" px")
        w = c.number(raw, "width", path, 8, MAX_SIDE, unit=" px")
        h = c.number(raw, "height", path, 8, MAX_SIDE, unit=" px")
        limit_w = canvas.width if canvas else None
        limit_h = canvas.height if canvas else None
    if None not in (x, w) and limit_w is not None and x + w > limit_w * (1 + 1e-9):
        c.fail(f"{path}.width", f"x + width = {x + w} reaches past the canvas width {limit_w}")
    if None not in (y, h) and limit_h is not None and y + h > limit_h * (1 + 1e-9):
        c.fail(f"{path}.height", f"y + height = {y + h} reaches past the canvas height {limit_h}")
    prompt = c.text(raw, "prompt", path, max_len=limits.max_text)
    negative = c.text(raw, "negative_prompt", path, max_len=limits.max_text)
    mode = c.choice(raw, "prompt_mode", path, PROMPT_MODES, "replace")
    cfg = c.number(raw, "cfg_scale", path, 0.0, 100.0, None, nullable=True)
    weight = c.number(raw, "weight", path, 0.0, 1000.0, 1.0, lo_open=True)
    seed = c.integer(raw, "seed", path, -1, SEED_MAX, -1)
    guide = None
    if raw.get("guide") is not None and c.keys(raw["guide"], f"{path}.guide", ("image", "strength"),
                                               required=("image",)):
        image = c.text(raw["guide"], "image", f"{path}.guide", max_len=limits.max_image_chars)
        if "image" in raw["guide"] and isinstance(raw["guide"]["image"], str) and not image.strip():
            c.fail(f"{path}.guide.image", "is empty; give the image as a data:image/...;base64 URL "
                                          "(or, where the server allows it, a file path)")
        elif image.startswith(HASH_PREFIX) and not _is_hash_ref(image):
            c.fail(f"{path}.guide.image", f"{_show(image)} is not a guide image reference; expected "
                                          f"'{HASH_PREFIX}' and 12 to 64 hexadecimal digits")
        strength = c.number(raw["guide"], "strength", f"{path}.guide", 0.0, 1.0, 0.5)
        guide = Guide(image, strength)
    if len(c.problems) > before:
        return None
    return Region(x, y, w, h, prompt, negative, mode, cfg, weight, seed, guide)


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
