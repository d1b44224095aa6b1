"""Expected values for the JavaScript port of the planner (tests/js/core.test.js).

Prints (or with --write FILE, stores in FILE) what lib_mixture computes for a fixed, seeded set of cases: snapped boxes, tile axes, whole plans
of presets on canvases, weight profiles, upscale targets, the "auto" tile and batch choice (auto_plan.resolve) and the tiles section's
validation messages. Standard library only, like the plan preview, except the upscale
cases: lib_mixture.upscale needs numpy and Pillow, and without them "upscales" is null (the JavaScript test skips).

    python3 tests/js/python_reference.py [--write FILE]
    python3 tests/js/python_reference.py --round-trip < texts.json   # validate JSON texts
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lib_mixture import cost  # noqa: E402
from lib_mixture.auto_plan import Budget, plan_on, resolve  # noqa: E402
from lib_mixture.bundled import bundled_presets  # noqa: E402
from lib_mixture.cost import estimate  # noqa: E402
from lib_mixture.geometry import snap_box  # noqa: E402
from lib_mixture.planner import plan_axis  # noqa: E402
from lib_mixture.preset import PresetError, load_preset, loads_preset, parse_preset  # noqa: E402
from lib_mixture.weights import profile  # noqa: E402

def plan_case(obj, width, height):
    try:
        preset = parse_preset(obj)
        plan = plan_on(preset, width, height)  # "auto": the fixed defaults (no budget)
    except PresetError as e:
        return {"preset": obj, "width": width, "height": height, "problems": e.problems}
    s = plan.summary()
    return {"preset": obj, "width": width, "height": height, "expect": {
        "canvas": s["canvas"], "tile_grid": s["tile_grid"], "tiles": s["tiles"],
        "regions": [{"index": r["index"], "box": r["box"]} for r in s["regions"]],
        "crops": s["crops"], "batch_size": s["batch_size"], "redundancy": plan.redundancy,
        "model_calls_per_step": s["model_calls_per_step"], "estimate": list(estimate(plan))}}


def random_preset(rng: random.Random, width: int, height: int) -> dict:
    obj = {"version": 1}
    units = rng.choice(["px", "px", "fraction"])
    mode = rng.choice(["tiles", "regions", "both"])
    if mode != "regions":
        tw = rng.randrange(64, 1025, 8) if rng.random() < 0.8 else rng.randrange(64, 1100)
        th = rng.randrange(64, 1025, 8) if rng.random() < 0.8 else rng.randrange(64, 1100)
        limit = max(min(tw, th) - 8, 0)
        if rng.random() < 0.3:
            overlap = {"x": rng.randrange(0, max(tw - 8, 0) + 1), "y": rng.randrange(0, max(th - 8, 0) + 1)}
        else:
            overlap = rng.randrange(0, limit + 1)
        obj["tiles"] = {"width": tw, "height": th, "overlap": overlap, "batch_size": rng.randrange(1, 9)}
        if rng.random() < 0.2:
            obj["tiles"]["batch_size"] = "auto"
        largest = max(overlap.values()) if isinstance(overlap, dict) else overlap
        if rng.random() < 0.15 and largest < 760:  # the fixed default's 768 px tiles take it
            obj["tiles"]["width"] = obj["tiles"]["height"] = "auto"
    if mode != "tiles":
        regions = []
        canvas = None
        if units == "px" and rng.random() < 0.5:
            canvas = {"width": rng.randrange(64, 2049, 8), "height": rng.randrange(64, 2049, 8)}
            obj["canvas"] = canvas
        cw, ch = (canvas["width"], canvas["height"]) if canvas else (width, height)
        for _ in range(rng.randrange(1, 6)):
            if units == "fraction":
                x, y = rng.random() * 0.9, rng.random() * 0.9
                w, h = rng.uniform(0.01, 1 - x), rng.uniform(0.01, 1 - y)
            else:
                x, y = rng.uniform(0, cw - 8), rng.uniform(0, ch - 8)
                w, h = rng.uniform(8, cw - x), rng.uniform(8, ch - y)
                if rng.random() < 0.5:
                    x, y, w, h = round(x), round(y), max(8, round(w)), max(8, round(h))
                    w, h = min(w, cw - x), min(h, ch - y)
            region = {"x": x, "y": y, "width": w, "height": h}
            if rng.random() < 0.5:
                region["cfg_scale"] = rng.choice([5, 7.5, 9, None])
            if rng.random() < 0.4:
                region["weight"] = rng.choice([0.5, 1, 2, 3.5])
            regions.append(region)
        obj["regions"] = regions
    if units == "fraction":
        obj["units"] = "fraction"
    if rng.random() < 0.3:
        obj["weights"] = {"kind": rng.choice(["gaussian", "constant"]), "variance": rng.choice([0.01, 0.02, 0.005])}
    return obj


def cases() -> dict:
    rng = random.Random(20240611)
    out = {"snap": [], "axes": [], "plans": [], "profiles": []}
    for _ in range(400):
        cw, ch = rng.randrange(8, 4097, 8), rng.randrange(8, 4097, 8)
        x, y = rng.uniform(-20, cw + 20), rng.uniform(-20, ch + 20)
        w, h = rng.uniform(0, cw), rng.uniform(0, ch)
        if rng.random() < 0.3:
            x, y, w, h = (rng.randrange(-8, cw + 8) for _ in range(4))
        out["snap"].append({"args": [x, y, w, h, cw, ch], "expect": snap_box(x, y, w, h, cw, ch).as_list()})
    for length in (1, 7, 8, 16, 63, 64, 65, 96, 100, 128, 135, 180, 270, 320, 480, 512, 999, 2048):
        for tile in (1, 8, 16, 48, 64, 80, 96, 128, 200, 600):
            for overlap in sorted({0, 1, 4, 8, 16, 31, 32, 63, tile // 2, tile - 1}):
                if overlap < 0 or (tile < length and overlap >= tile):
                    continue
                axis = plan_axis(length, tile, overlap)
                out["axes"].append({"args": [length, tile, overlap], "size": axis.size, "starts": list(axis.starts)})
    for name, path in bundled_presets().items():
        obj = load_preset(path).to_dict()
        for width, height in ((512, 512), (1408, 640), (1408, 896), (3840, 2160), (2560, 1440), (1024, 768), (768, 1344)):
            out["plans"].append(dict(plan_case(obj, width, height), name=name))
    sizes = [(64, 64), (192, 128), (512, 512), (512, 768), (1024, 1024), (1920, 1080), (2560, 1440), (3840, 2160),
             (665, 998), (252, 188), (256, 196)]  # off the 8 px grid: the WebUI samples floor(px / 8)
    for i in range(300):
        width, height = sizes[i % len(sizes)] if i < 200 else (rng.randrange(64, 4097, 8), rng.randrange(64, 4097, 8))
        out["plans"].append(dict(plan_case(random_preset(rng, width, height), width, height), name=f"random-{i}"))
    for obj, width, height in (  # boxes that do not fit the generation's canvas
            ({"version": 1, "regions": [{"x": 100, "y": 0, "width": 32, "height": 32}]}, 64, 64),
            ({"version": 1, "regions": [{"x": 0, "y": 0, "width": 80, "height": 64}]}, 64, 64),
            ({"version": 1, "regions": [{"x": 0, "y": 0, "width": 68, "height": 64}]}, 64, 64),
            ({"version": 1, "tiles": {"width": 64, "height": 64, "overlap": 0},
              "regions": [{"x": 0, "y": 60, "width": 8, "height": 8}]}, 64, 64)):
        out["plans"].append(dict(plan_case(obj, width, height), name="misfit"))
    for kind in ("gaussian", "constant"):
        for length in (1, 2, 3, 8, 64, 96, 135):
            for variance in (0.01, 0.02, 0.5):
                out["profiles"].append({"args": [kind, length, variance], "expect": profile(kind, length, variance)})
    out["upscales"] = upscale_cases()
    out["autos"] = auto_cases()
    out["tile_checks"] = tile_check_cases()
    return out


GIB = cost.GIB
SCALED = cost.for_host("sd1", "cuda", "fp32")  # the default model's memory x2: a name the editor must read too


def random_budget(rng: random.Random) -> Budget | None:
    pick = rng.random()
    if pick < 0.08:
        return None
    if pick < 0.16:
        return Budget(None, 0.0, "no cost model is measured for sdxl on mps in fp16; there are: " + ", ".join(cost.available()))
    model = rng.choice([cost.load(name) for name in cost.available()] + [SCALED])
    amount = rng.choice([
        rng.uniform(2.0, 4.5) * GIB,  # often over: the weights alone are 2 or 4 GiB
        rng.uniform(4, 80) * GIB,
        rng.randrange(16, 640) * GIB / 8,  # eighths of a GiB: halves at two decimals (Python rounds them to even)
        float(rng.randrange(1, 1 << 40)),
    ])
    return Budget(model, amount, rng.choice(["the weights and 90% of the 71.20 GiB free on cuda:0 at start-up", "--budget", "the editor's default, 8 GiB"]))


def budget_json(budget: Budget | None) -> dict | None:
    if budget is None:
        return None
    return {"model": budget.model.name if budget.model else None, "bytes": budget.bytes, "source": budget.source}


def random_auto_preset(rng: random.Random, first: tuple[int, int]) -> dict:
    """A preset with a tile grid whose size, batch or both are "auto" (now and then neither), sometimes with regions."""
    kind = rng.choice(["both", "both", "size", "batch", "none"])
    tiles = {}
    if kind in ("both", "size"):
        tiles["width"] = tiles["height"] = "auto"
        if rng.random() < 0.15:
            del tiles[rng.choice(["width", "height"])]  # the other defaults to "auto"
    else:
        tw = rng.randrange(64, 1025, 8) if rng.random() < 0.9 else rng.randrange(64, 1100)
        th = tw if rng.random() < 0.5 else rng.randrange(64, 1025, 8)
        tiles["width"], tiles["height"] = tw, th
        if rng.random() < 0.1:
            del tiles["height"]  # one side in px: a square tile
    if kind in ("both", "batch"):
        if rng.random() < 0.8:
            tiles["batch_size"] = "auto"
    else:
        tiles["batch_size"] = rng.randrange(1, 17)
    sized = isinstance(tiles.get("width", tiles.get("height")), int)
    limit = (min(tiles.get("width", 16384), tiles.get("height", tiles.get("width", 16384))) - 8) if sized else 800
    pick = rng.random()
    if pick < 0.1:
        pass  # the default overlap
    elif pick < 0.3:
        tiles["overlap"] = {"x": rng.randrange(0, max(limit, 0) + 1, 8), "y": rng.randrange(0, max(limit, 0) + 1)}
    elif pick < 0.4 and not sized:
        tiles["overlap"] = rng.choice([700, 760, 767, 768, 800, 511, 512, 576, 570])  # at and past the band's sides
    else:
        tiles["overlap"] = rng.randrange(0, min(max(limit, 0), 320) + 1, rng.choice([1, 8, 32]))
    obj = {"version": 1, "tiles": tiles}
    if rng.random() < 0.35:
        w, h = first
        regions = []
        for _ in range(rng.randrange(1, 5)):
            x, y = rng.randrange(0, max(w - 64, 1)), rng.randrange(0, max(h - 64, 1))
            region = {"x": x, "y": y, "width": rng.randrange(8, w - x + 1), "height": rng.randrange(8, h - y + 1)}
            if rng.random() < 0.4:
                region["cfg_scale"] = rng.choice([5, 7.5, None])
            regions.append(region)
        obj["regions"] = regions
        obj["canvas"] = {"width": w, "height": h}
    if rng.random() < 0.2:
        obj["passes"] = rng.choice(["first", "hires"])
    return obj


def auto_cases() -> list[dict]:
    """auto_plan.resolve on random presets, canvases (one pass, or a first pass and its hires pass) and budgets."""
    rng = random.Random(20240613)
    sizes = [(512, 512), (768, 512), (1024, 1024), (1920, 1080), (2560, 1440), (3840, 2160), (665, 998), (64, 64),
             (600, 4000), (16384, 16384), (12000, 9000)]
    out = []
    for i in range(400):
        first = rng.choice(sizes) if rng.random() < 0.5 else (rng.randrange(64, 4097, rng.choice([1, 8])),
                                                              rng.randrange(64, 4097, rng.choice([1, 8])))
        canvases = [first]
        if rng.random() < 0.4:
            scale = rng.choice([1.5, 2, 2.5])
            canvases.append((int(first[0] * scale) // 8 * 8, int(first[1] * scale) // 8 * 8))
            if rng.random() < 0.3:
                canvases.reverse()
        if rng.random() < 0.05:
            canvases = [(4096, 4096), (4096, 4096)]  # a tie: the first of the largest
        obj = random_auto_preset(rng, first)
        if i % 50 == 0:  # a small tile over a huge canvas: more crops than allowed
            obj = {"version": 1, "tiles": {"width": 64, "height": 64, "overlap": 56, "batch_size": "auto"}}
            canvases = [(16384, 16384)]
        budget = random_budget(rng)
        case = {"preset": obj, "canvases": [list(c) for c in canvases], "budget": budget_json(budget)}
        try:
            r = resolve(parse_preset(obj), canvases, budget)
        except PresetError as e:
            out.append(dict(case, problems=e.problems))
            continue
        c = r.choice
        out.append(dict(case, expect={
            "preset": r.preset.to_dict(), "shown": r.shown.to_dict(), "fits": r.fits, "note": r.note,
            "choice": None if c is None else {"tileWidth": c.tile_width, "tileHeight": c.tile_height, "tiles": c.tiles,
                                              "batchSize": c.batch_size, "calls": c.calls, "seconds": c.seconds,
                                              "peakBytes": c.peak_bytes}}))
    return out


def tile_check_cases() -> list[dict]:
    """parse_preset on tiles sections with "auto", numbers, mixes and bad values: its problems, or the tiles it reads."""
    rng = random.Random(20240614)
    good = {"side": [None, "auto", 512, 768, 515, 64, 1024], "batch_size": [None, "auto", 1, 4, 64],
            "overlap": [None, 0, 64, 56, 504, 600, 760, {"x": 64, "y": 32}]}
    bad = {"side": [0, 63, 16385, 512.5, True, None, "AUTO", "auto ", "512", [512], {}, 1e20, 100000000000000000000, 0.0001,
                    1.5e-07, "\u00e9t\u00e9", "a very long text that is cut to sixty characters by checker.show, as Python does"],
           "batch_size": [0, 65, 2.5, "4", False, "Auto", None],
           "overlap": [900, 16376, {"x": 900, "y": 8}, {"x": 8}, {"y": 0}, "64", -8, 12.5, None, [1, 2]]}
    out = []
    for _ in range(600):
        tiles = {}
        for key, kind in (("width", "side"), ("height", "side"), ("batch_size", "batch_size"), ("overlap", "overlap")):
            value = rng.choice(good[kind] if rng.random() < 0.85 else bad[kind])
            if value is not None or rng.random() < 0.1:  # None: absent, now and then null
                tiles[key] = value
        try:
            preset = parse_preset({"version": 1, "tiles": tiles})
        except PresetError as e:
            out.append({"tiles": tiles, "problems": [p for p in e.problems if p.startswith("tiles")]})
            continue
        out.append({"tiles": tiles, "problems": [], "expect": preset.to_dict()["tiles"]})
    return out


def upscale_cases() -> list[dict] | None:
    """upscale.target_size + fit_geometry on random and edge cases (halves of 8 px, extreme aspects, bad scales)."""
    try:
        from lib_mixture.preset import Upscale
        from lib_mixture.upscale import fit_geometry, target_size
    except ImportError:  # numpy or Pillow missing
        return None
    rng = random.Random(20240612)
    sizes = [(960, 540), (100, 100), (1012, 1004), (1020, 1028), (1, 1), (1, 4000), (7, 9), (333, 777), (4000, 16),
             (16384, 64), (8192, 8192), (64, 64), (1920, 1080), (1000, 700)]
    sizes += [(rng.randrange(1, 5000), rng.randrange(1, 5000)) for _ in range(60)]
    scales = [0.05, 0.1, 0.5, 1, 1.5, 2, 2.5, 3.3, 4, 7.77, 16, 0.01, 1e-05, 0.125, 1.0625]
    targets = [(3840, 2160), (2560, 1440), (64, 16384), (1024, 1024), (1080, 1920), (16384, 16384), (640, 480)]
    out = []
    for src_w, src_h in sizes:
        for fit in ("crop", "pad", "stretch"):
            picks = [Upscale(scale=rng.choice(scales), fit=fit) for _ in range(3)]
            picks.append(Upscale(scale=round(rng.uniform(0.05, 16), rng.choice([2, 3, 6])), fit=fit))
            picks += [Upscale(scale=None, width=w, height=h, fit=fit) for w, h in rng.sample(targets, 2)]
            for u in picks:
                case = {"upscale": {k: v for k, v in vars(u).items() if v is not None}, "src": [src_w, src_h]}
                try:
                    w, h = target_size(u, src_w, src_h)
                except PresetError as e:
                    out.append(dict(case, problems=e.problems))
                    continue
                g = fit_geometry(src_w, src_h, w, h, fit)
                out.append(dict(case, expect={"width": w, "height": h, "geometry": vars(g)}))
    return out


def round_trip(texts: list[str]) -> list[dict]:
    """Each text through loads_preset and back to its canonical dict (or its problems)."""
    out = []
    for text in texts:
        try:
            out.append({"dict": loads_preset(text).to_dict()})
        except PresetError as e:
            out.append({"problems": e.problems})
    return out


def main(argv: list[str]) -> int:
    if "--round-trip" in argv:  # stdin: a JSON list of preset texts
        sys.stdout.write(json.dumps(round_trip(json.load(sys.stdin))))
        return 0
    data = cases()
    text = json.dumps(data, separators=(",", ":"))
    if "--write" in argv:
        target = Path(argv[argv.index("--write") + 1])
        target.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {target} ({len(data['plans'])} plans, {len(data['axes'])} axes, {len(data['snap'])} boxes)")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
