"""Expected values for the JavaScript port of the planner (tests/js/core.test.js).

Prints (or with --write FILE, stores in FILE) what lib_mixture computes for a fixed, seeded set of cases: snapped boxes, tile axes, whole plans
of presets on canvases, weight profiles and upscale targets. Standard library only, like the plan preview, except the upscale
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

from lib_mixture.bundled import bundled_presets  # noqa: E402
from lib_mixture.cost import estimate  # noqa: E402
from lib_mixture.geometry import snap_box  # noqa: E402
from lib_mixture.plan import build_plan  # noqa: E402
from lib_mixture.planner import plan_axis  # noqa: E402
from lib_mixture.preset import PresetError, load_preset, loads_preset, parse_preset  # noqa: E402
from lib_mixture.weights import profile  # noqa: E402

def plan_case(obj, width, height):
    try:
        preset = parse_preset(obj)
        plan = build_plan(preset, width, height)
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
