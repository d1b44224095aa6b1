"""Command line: see a plan before spending GPU time on it.

    python -m lib_mixture plan [PRESET] [--width W --height H] [--tile-width TW --tile-height TH]
                               [--overlap O] [--batch-size N] [--png OUT.png] [--json]
    python -m lib_mixture presets

PRESET is a JSON file or the name of a bundled preset. Without one, the paper's three-region
composition is planned; with tile options but no preset, a plain tile grid over the canvas.
Bad input prints one line per problem and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .plan import MixturePlan, build_plan
from .preset import Canvas, Overlap, Preset, PresetError, TileGrid, load_preset, parse_preset

BUNDLED = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_PRESET = "paper-fig4-composition"


def bundled_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUNDLED.glob("*.json"))}


def resolve_preset(ref: str) -> Preset:
    path = Path(ref)
    if not path.exists() and ref in bundled_presets():
        path = bundled_presets()[ref]
    if not path.exists():
        names = ", ".join(bundled_presets())
        raise PresetError([f"no preset file '{ref}' and no bundled preset of that name; bundled: {names}"], "arguments")
    return load_preset(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_mixture",
                                     description="Mixture of Diffusers: plan tiles and regions, no WebUI needed.")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print (and draw) the tiles and regions of a preset on a canvas")
    plan.add_argument("preset", nargs="?", help="preset JSON file or bundled preset name "
                                                f"(default: the paper's composition, {DEFAULT_PRESET})")
    plan.add_argument("--width", type=int, help="canvas width in px (default: the preset's)")
    plan.add_argument("--height", type=int, help="canvas height in px (default: the preset's)")
    plan.add_argument("--tile-width", type=int, help="tile width in px (adds a tile grid if the preset has none)")
    plan.add_argument("--tile-height", type=int, help="tile height in px")
    plan.add_argument("--overlap", type=int, help="minimum overlap between tiles in px")
    plan.add_argument("--batch-size", type=int, help="crops per model call (1-64)")
    plan.add_argument("--png", metavar="OUT.png", help="draw the plan over its weight map into this PNG")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    sub.add_parser("presets", help="list the bundled presets")
    return parser


def _with_overrides(preset: Preset, args: argparse.Namespace) -> Preset:
    tile_args = (args.tile_width, args.tile_height, args.overlap)
    if all(v is None for v in tile_args) and args.batch_size is None:
        return preset
    base = preset.tiles
    if base is None and all(v is None for v in tile_args):
        return preset  # only a batch size: it applies to the regions
    base = base or TileGrid()
    raw = {"width": args.tile_width if args.tile_width is not None else base.width,
           "height": args.tile_height if args.tile_height is not None else base.height,
           "overlap": args.overlap if args.overlap is not None else (
               base.overlap.x if base.overlap.x == base.overlap.y else dataclasses.asdict(base.overlap)),
           "batch_size": args.batch_size if args.batch_size is not None else base.batch_size}
    obj = preset.to_dict()
    obj["tiles"] = raw
    return parse_preset(obj, "arguments")


def run_plan(args: argparse.Namespace) -> MixturePlan:
    tile_args = (args.tile_width, args.tile_height, args.overlap)
    if args.preset:
        preset = resolve_preset(args.preset)
    elif any(v is not None for v in tile_args):
        if args.width is None or args.height is None:
            raise PresetError(["--width and --height are needed for a tile grid without a preset"], "arguments")
        preset = Preset(name="tile grid", canvas=Canvas(args.width, args.height), tiles=TileGrid())
    else:
        preset = resolve_preset(DEFAULT_PRESET)
    preset = _with_overrides(preset, args)
    return build_plan(preset, args.width, args.height, args.batch_size if preset.tiles is None else None), preset


def format_plan(plan: MixturePlan, name: str) -> str:
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
    return "\n".join(lines)


def _span(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            for name, path in bundled_presets().items():
                p = load_preset(path)
                size = f"{p.canvas.width}x{p.canvas.height}" if p.canvas else "any size"
                print(f"{name:32} {size:>11}  {len(p.regions)} regions"
                      + (f", {p.tiles.width}x{p.tiles.height} tiles" if p.tiles else ""))
            return 0
        plan, preset = run_plan(args)
        if args.png:
            from .render import write_plan_png
            write_plan_png(plan, args.png)
        if args.json:
            print(json.dumps({"name": preset.name, **plan.summary()}, indent=2))
        else:
            print(format_plan(plan, preset.name))
            if args.png:
                print(f"  picture       {args.png}")
        return 0
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
