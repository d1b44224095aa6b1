"""Command line: see a plan before spending GPU time on it.

    python -m lib_mixture plan [PRESET] [--width W --height H] [--tile-width TW --tile-height TH]
                               [--overlap O] [--batch-size N] [--png OUT.png] [--json]
    python -m lib_mixture presets

PRESET is a JSON file or the name of a bundled preset. Without one, the paper's three-region
composition is planned; with tile options but no preset, a plain tile grid over the canvas.
Bad input prints one line per problem and exits with status 2, never a traceback; so does a
plan that leaves latent cells uncovered (generation would fail there) or names a guide image
file that does not exist (relative paths are read from the preset file's folder).

Standard library only: run it from the checkout's root with any Python 3.9+.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Iterable

from . import cost
from .auto_plan import DEFAULT_BUDGET_GIB, Budget, Resolution, resolve_on
from .bundled import bundled_presets, load_bundled
from .geometry import Box
from .guide_source import LOCAL_USER, resolve_path
from .plan import MixturePlan, build_plan
from .fields import AUTO
from .preset import HASH_PREFIX, Canvas, Preset, PresetError, TileGrid, load_preset, parse_preset

DEFAULT_PRESET = "paper-fig4-composition"
MAX_BUDGET_GIB = 4096.0  # GiB: more than any device; a typo such as 1e9 or inf is refused


def resolve_preset_path(ref: str) -> Path:
    """The file a preset argument names: a path, else a bundled preset's name."""
    path = Path(ref)
    bundled = bundled_presets()
    if not path.exists() and ref in bundled:
        path = bundled[ref]
    if not path.exists():
        stem = path.stem if ref.endswith(".json") else ref
        # A name's start ("paper-fig9") says more than spelling distance, which prefers a sibling.
        guess = [n for n in bundled if n.startswith(stem)][:1] or difflib.get_close_matches(stem, list(bundled), n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        raise PresetError([f"no preset file '{ref}' and no bundled preset of that name{hint}; "
                           f"bundled: {', '.join(bundled)}"], "arguments")
    return path


def resolve_preset(ref: str) -> Preset:
    return load_preset(resolve_preset_path(ref))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_mixture",
                                     description="Mixture of Diffusers: plan tiles and regions, no WebUI needed.")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print (and draw) the tiles and regions of a preset on a canvas",
                          description="Print (and draw) the tiles and regions of a preset on a canvas. Exits with "
                                      "status 2 on bad input, on a plan that leaves latent cells uncovered, and on a "
                                      "guide image file that does not exist (a relative guide.image path is read from "
                                      "the preset file's folder; data: URLs and sha256: references are not files).")
    plan.add_argument("preset", nargs="?", help="preset JSON file or bundled preset name "
                                                f"(default: the paper's composition, {DEFAULT_PRESET})")
    plan.add_argument("--width", type=int, help="canvas width in px (default: the preset's)")
    plan.add_argument("--height", type=int, help="canvas height in px (default: the preset's)")
    plan.add_argument("--tile-width", type=int, help="tile width in px (adds a tile grid if the preset has none); "
                                                     "given alone, the tiles are square")
    plan.add_argument("--tile-height", type=int, help="tile height in px; given alone, the tiles are square")
    plan.add_argument("--overlap", type=int, help="minimum overlap between tiles in px")
    plan.add_argument("--batch-size", type=int, help="crops per model call (1-64)")
    plan.add_argument("--png", metavar="OUT.png", help="draw the plan over its weight map into this PNG "
                                                       "(the folder must exist; uncovered cells are black)")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    plan.add_argument("--cost", default=cost.DEFAULT, choices=cost.available(),
                      help="the cost model of the time and memory estimate (lib_mixture/costs; default %(default)s)")
    plan.add_argument("--budget", type=float, metavar="GIB",
                      help="device memory for the job in GiB: the estimate says whether the plan fits it, and "
                           f"\"auto\" tile and batch sizes are chosen for it (default for those: {DEFAULT_BUDGET_GIB:g})")
    plan.add_argument("--auto", action="store_true",
                      help="make the tile size and batch size \"auto\": the square tile (the cost model's band, "
                           "512-768 px for SD 1.5) and batch with the lowest predicted step time that fits the "
                           "budget, at the preset's (or --overlap) overlap")
    sub.add_parser("presets", help="list the bundled presets")
    return parser


def _with_overrides(preset: Preset, args: argparse.Namespace) -> Preset:
    if args.auto:
        if args.tile_width is not None or args.tile_height is not None or args.batch_size is not None:
            raise PresetError(["--auto chooses the tile size and the batch size: leave out --tile-width, "
                               "--tile-height and --batch-size"], "arguments")
        args.tile_width = args.tile_height = args.batch_size = AUTO
    tile_args = (args.tile_width, args.tile_height, args.overlap)
    if all(v is None for v in tile_args) and args.batch_size is None:
        return preset
    base = preset.tiles
    if base is None and all(v is None for v in tile_args):
        return preset  # only a batch size: it applies to the regions
    base = base or TileGrid()
    width, height = args.tile_width, args.tile_height
    if (width is None) != (height is None):  # one side given: square tiles of that side
        width = height = width if width is not None else height
    raw = {"width": width if width is not None else base.width,
           "height": height if height is not None else base.height,
           "overlap": args.overlap if args.overlap is not None else (
               base.overlap.x if base.overlap.x == base.overlap.y else dataclasses.asdict(base.overlap)),
           "batch_size": args.batch_size if args.batch_size is not None else base.batch_size}
    obj = preset.to_dict()
    obj["tiles"] = raw
    return parse_preset(obj, "arguments")


def run_plan(args: argparse.Namespace, model: cost.CostModel | None = None
             ) -> tuple[MixturePlan, Preset, Path | None, Resolution]:
    """The plan the arguments ask for, its preset, the preset's file (None: from the options) and
    how its "auto" values were chosen (with ``model`` within ``--budget``)."""
    tile_args = (args.tile_width, args.tile_height, args.overlap)
    path = None
    if args.preset:
        path = resolve_preset_path(args.preset)
    elif any(v is not None for v in tile_args):
        if args.width is None or args.height is None:
            raise PresetError(["--width and --height are needed for a tile grid without a preset"], "arguments")
    else:
        path = resolve_preset_path(DEFAULT_PRESET)
    if path is None:
        preset = Preset(name="tile grid", canvas=Canvas(args.width, args.height), tiles=TileGrid())
    else:
        preset = load_preset(path)
    preset = _with_overrides(preset, args)
    budget = Budget(model or cost.load(args.cost), (args.budget or DEFAULT_BUDGET_GIB) * cost.GIB,
                    f"--budget {args.budget:g} GiB" if args.budget else f"the default of --budget, {DEFAULT_BUDGET_GIB:g} GiB")
    resolution = resolve_on(preset, args.width, args.height, budget)
    # build_plan refuses a plan of too many crops before it places a single tile.
    plan = build_plan(resolution.preset, args.width, args.height,
                      args.batch_size if preset.tiles is None and args.batch_size != AUTO else None)
    return plan, resolution.preset, path, resolution


def check_guide_files(preset: Preset, path: Path | None) -> list[str]:
    """Notes on the guide images a file check cannot settle; PresetError for missing files.

    A path is the machine's own user's (this is the command line): ``~`` is expanded and a
    relative path is read from the folder of ``path``, the preset file. ``data:`` URLs carry the image
    and ``sha256:`` references name it by content (the WebUI looks them up): neither is a file.
    """
    problems, notes = [], []
    for i, region in enumerate(preset.regions):
        if region.guide is None:
            continue
        field, image = f"regions[{i}].guide.image", region.guide.image
        if image.startswith("data:"):
            continue
        if image.startswith(HASH_PREFIX):
            notes.append(f"{field}: {image} names the image by its content hash; the WebUI resolves it "
                         "from its allowed guide folders (not checked here)")
            continue
        policy = dataclasses.replace(LOCAL_USER, relative_to=str(path.parent) if path is not None else None)
        try:
            resolve_path(image, policy, field)
        except PresetError as e:
            problems += e.problems
    if problems:
        raise PresetError(problems, str(path) if path else "preset")
    return notes


def uncovered_boxes(boxes: Iterable[Box], width: int, height: int) -> list[Box]:
    """The cells of a ``width x height`` grid that no box covers, as disjoint boxes.

    A sweep over the rows where boxes start or end: within each band between two such rows
    the same boxes are present, so the band's gaps are those of one sorted list of column
    intervals. Gaps with the same columns in consecutive bands are merged into one box. The
    cost grows with the number of boxes and bands, never with the cells (a 16384 px canvas
    is 4 million latent cells).
    """
    starts: dict[int, list[tuple[int, int]]] = {}
    ends: dict[int, list[tuple[int, int]]] = {}
    for b in boxes:
        x0, x1 = max(0, b.x), min(width, b.right)
        y0, y1 = max(0, b.y), min(height, b.bottom)
        if x0 < x1 and y0 < y1:
            starts.setdefault(y0, []).append((x0, x1))
            ends.setdefault(y1, []).append((x0, x1))
    rows = sorted({0, height, *starts, *ends})
    active: dict[tuple[int, int], int] = {}  # column interval -> how many boxes span it here
    open_gaps: dict[tuple[int, int], int] = {}  # gap columns -> the row where the gap began
    out = []
    for y0, y1 in zip(rows, rows[1:]):
        for iv in ends.get(y0, ()):
            active[iv] -= 1
            if not active[iv]:
                del active[iv]
        for iv in starts.get(y0, ()):
            active[iv] = active.get(iv, 0) + 1
        gaps, reach = [], 0
        for x0, x1 in sorted(active):
            if x0 > reach:
                gaps.append((reach, x0))
            reach = max(reach, x1)
        if reach < width:
            gaps.append((reach, width))
        current = set(gaps)
        for gap in [g for g in open_gaps if g not in current]:
            out.append(Box(gap[0], open_gaps[gap], gap[1] - gap[0], y0 - open_gaps.pop(gap)))
        for gap in gaps:
            open_gaps.setdefault(gap, y0)
    out += [Box(g[0], top, g[1] - g[0], height - top) for g, top in open_gaps.items()]
    return sorted(out, key=lambda b: (b.y, b.x))


def plan_uncovered(plan: MixturePlan) -> list[Box]:
    """Pixel boxes of the latent cells no crop covers (empty when the plan is complete)."""
    lh, lw = plan.latent_size
    f = plan.factor
    return [Box(b.x * f, b.y * f, b.width * f, b.height * f)
            for b in uncovered_boxes((c.box for c in plan.crops()), lw, lh)]


def _uncovered_text(plan: MixturePlan, boxes: list[Box], shown: int = 5) -> str:
    f2 = plan.factor ** 2
    cells = sum(b.area for b in boxes) // f2
    share = 100 * cells * f2 / (plan.canvas_width * plan.canvas_height)
    listed = ", ".join(str(b.as_list()) for b in boxes[:shown])
    more = f" and {len(boxes) - shown} more" if len(boxes) > shown else ""
    return (f"{cells} latent cells ({plan.factor}x{plan.factor} px each, {share:.3g}% of the canvas) "
            f"are covered by no region and no tile: {listed}{more} px [x, y, width, height]")


def format_plan(plan: MixturePlan, name: str, uncovered: list[Box] | None = None) -> str:
    s = plan.summary()
    lines = [f"Mixture of Diffusers plan: {name or '(unnamed)'}",
             f"  canvas        {plan.canvas_width} x {plan.canvas_height} px "
             f"(latent {plan.latent_size[1]} x {plan.latent_size[0]})"]
    grid = s["tile_grid"]
    if grid:
        ox, oy = grid["overlaps_x"], grid["overlaps_y"]
        req = grid["requested_overlap"]
        lines += [f"  tile grid     {grid['columns']} x {grid['rows']} = {len(s['tiles'])} tiles of "
                  f"{grid['tile_width']} x {grid['tile_height']} px",
                  f"  overlaps      x {_span(ox)} px, y {_span(oy)} px (requested at least x {req['x']}, y {req['y']})"]
    else:
        lines.append("  tile grid     none")
    lines.append(f"  weights       {plan.weighting.kind}"
                 + (f", variance {plan.weighting.variance:g}" if plan.weighting.kind == "gaussian" else ""))
    lines.append(f"  regions       {len(plan.regions)}")
    for r in plan.regions:
        reg = r.region
        prompt = reg.prompt if len(reg.prompt) <= 60 else reg.prompt[:57] + "..."
        cfg = "main" if reg.cfg_scale is None else f"{reg.cfg_scale:g}"
        lines.append(f"    R{r.index:<3} [{r.box.x}, {r.box.y}, {r.box.width}, {r.box.height}] px  cfg {cfg}  "
                     f"weight {reg.weight:g}  {reg.prompt_mode}: \"{prompt}\""
                     + (f"  guide {reg.guide.strength:g}" if reg.guide else ""))
    lines += [f"  crops         {s['crops']} (batch size {plan.batch_size})",
              f"  model calls   {s['model_calls_per_step']} per sampling step",
              f"  redundancy    {s['redundancy']:.2f}x (crop area / canvas area)"]
    if uncovered:
        lines.append(f"  uncovered     {_uncovered_text(plan, uncovered)}")
    return "\n".join(lines)


def format_estimate(plan: MixturePlan, model: cost.CostModel, budget: float | None, auto: Resolution) -> str:
    """The plan's predicted step time and peak memory (one image), and how "auto" was chosen."""
    seconds, peak = cost.estimate(plan, model)
    fits = "" if budget is None else (f", within {budget:g} GiB" if peak <= budget * cost.GIB
                                      else f", OVER the {budget:g} GiB budget")
    lines = [f"  estimate      {seconds:.3f} s/step, peak {peak / cost.GIB:.2f} GiB{fits} "
             f"({model.name}; one image, sampling only)"]
    if auto.note:
        lines.append(f"  auto          {auto.note.removeprefix('auto: ')}")
    return "\n".join(lines)


def _span(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader went away (`... --json | head`): what it wanted it has. Point stdout at
        # devnull so the interpreter's final flush does not fail again, and exit quietly
        # (the Python docs' recipe for SIGPIPE, signal module).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            for name in bundled_presets():
                p = load_bundled(name)
                size = f"{p.canvas.width}x{p.canvas.height}" if p.canvas else "any size"
                print(f"{name:32} {size:>11}  {len(p.regions)} regions"
                      + (f", {p.tiles.width}x{p.tiles.height} tiles" if p.tiles else ""))
            return 0
        if args.png:
            folder = Path(args.png).parent
            if not folder.is_dir():
                raise PresetError([f"--png: there is no folder '{folder}' to write {Path(args.png).name} into; "
                                   "create it first"], "arguments")
        model = cost.load(args.cost)
        if args.budget is not None and not 0 < args.budget <= MAX_BUDGET_GIB:
            raise PresetError([f"--budget: {args.budget:g} GiB; give the device memory for the job, above 0 and at "
                               f"most {MAX_BUDGET_GIB:g}"],
                              "arguments")
        plan, preset, path, auto = run_plan(args, model)
        budget = args.budget or (DEFAULT_BUDGET_GIB if auto.choice is not None else None)  # what "auto" planned for
        for note in check_guide_files(preset, path):
            print(f"note: {note}", file=sys.stderr)
        uncovered = plan_uncovered(plan)
        if args.png:
            from .render import write_plan_png
            try:
                write_plan_png(plan, args.png)
            except OSError as e:
                raise PresetError([f"--png: cannot write '{args.png}': {e.strerror or e}"], "arguments") from None
        if args.json:
            f = plan.factor
            seconds, peak = cost.estimate(plan, model)
            print(json.dumps({"name": preset.name, **plan.summary(),
                              "estimate": {"cost_model": model.name, "seconds_per_step": round(seconds, 6),
                                           "peak_bytes": round(peak), "budget_bytes": None if budget is None
                                           else round(budget * cost.GIB)},
                              "auto": None if not auto.note else {
                                  "choice": None if auto.choice is None else dataclasses.asdict(auto.choice),
                                  "fits": auto.fits, "note": auto.note},
                              "uncovered": {"cells": sum(b.area for b in uncovered) // (f * f),
                                            "boxes": [b.as_list() for b in uncovered]}}, indent=2))
        else:
            print(format_plan(plan, preset.name, uncovered))
            print(format_estimate(plan, model, budget, auto))
            if args.png:
                print(f"  picture       {args.png}")
        if uncovered:
            sys.stdout.flush()
            print(f"error: incomplete plan: {_uncovered_text(plan, uncovered)}; every latent cell needs a region "
                  "or a tile, or generation fails: move or grow the regions, or add a tile grid (--tile-width)",
                  file=sys.stderr)
            return 2
        return 0
    except BrokenPipeError:
        raise
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
