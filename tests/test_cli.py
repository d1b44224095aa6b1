import base64
import json
import os
import random
import shlex
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from lib_mixture.render import encode_png

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # -m lib_mixture from any folder
    return subprocess.run([sys.executable, "-m", "lib_mixture", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def read_png(path):
    """Decode our unfiltered RGB PNGs back to (width, height, rows of bytes)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    w, h = size
    rows = [raw[y * (3 * w + 1) + 1:(y + 1) * (3 * w + 1)] for y in range(h)]
    return w, h, rows


def test_default_plan_is_the_paper_composition():
    out = run("plan")
    assert out.returncode == 0, out.stderr
    assert "paper-fig4-composition" in out.stdout
    assert "1408 x 640 px" in out.stdout and "regions       3" in out.stdout
    assert "model calls   1 per sampling step" in out.stdout


def test_plan_runs_without_torch_or_numpy():
    code = ("import sys, lib_mixture.cli as c; rc = c.main(['plan', '--json']); "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_json_output_has_the_documented_fields():
    out = run("plan", "paper-fig8-4k-grid", "--json", "--batch-size", "8")
    plan = json.loads(out.stdout)
    assert {"canvas", "tiles", "regions", "redundancy", "model_calls_per_step"} <= plan.keys()
    assert plan["canvas"]["width"] == 3840 and len(plan["tiles"]) == 88
    assert all(len(t) == 4 for t in plan["tiles"]) and plan["tiles"][-1] == [3200, 1680, 640, 480]
    assert plan["model_calls_per_step"] == 11 and plan["redundancy"] > 3
    assert plan["auto"] is None  # the paper's grid in px, the batch given
    auto = json.loads(run("plan", "paper-fig8-4k-grid", "--json").stdout)  # its batch "auto": for 8 GiB
    assert auto["auto"]["choice"]["batch_size"] == auto["batch_size"] and auto["tiles"] == plan["tiles"]
    assert auto["estimate"]["peak_bytes"] <= 8 * 2**30 and auto["model_calls_per_step"] < 11


def test_tile_options_without_a_preset_plan_a_grid():
    out = run("plan", "--width", "3840", "--height", "2160", "--tile-width", "768", "--tile-height", "768",
              "--overlap", "256", "--batch-size", "8", "--json")
    plan = json.loads(out.stdout)
    assert len(plan["tiles"]) == 28 and plan["model_calls_per_step"] == 4
    assert min(plan["tile_grid"]["overlaps_x"]) >= 256 and min(plan["tile_grid"]["overlaps_y"]) >= 256


def test_png_shows_regions_and_blend(tmp_path):
    png = tmp_path / "plan.png"
    out = run("plan", "--png", str(png))
    assert out.returncode == 0, out.stderr
    w, h, rows = read_png(png)
    assert (w, h) == (1024, 465)
    mid = rows[h // 2]
    left, right = mid[3 * 100:3 * 100 + 3], mid[3 * 900:3 * 900 + 3]
    assert left != right  # different regions, different colours
    # Across the R0/R1 hand-over the colour changes gradually, not in one jump.
    greens = [mid[3 * x + 1] for x in range(330, 420)]  # R0 green 80 -> R1 green 190
    # The preview is drawn per latent cell: the hand-over takes about 10 cells, none jumping by much.
    assert len(set(greens)) >= 10 and max(abs(a - b) for a, b in zip(greens, greens[1:])) < 25


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "regions": [{"x": 0, "y": 0, "width": 4, "height": 8}]}))
    out = run("plan", str(bad), "--width", "512", "--height", "512")
    assert out.returncode == 2
    assert "regions[0].width: 4 is out of range; allowed [8, 16384] px" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("plan", "no-such-preset")
    assert out.returncode == 2 and "bundled: paper-fig4-composition" in out.stderr
    out = run("plan", "--tile-width", "512")
    assert out.returncode == 2 and "--width and --height" in out.stderr
    out = run("plan", "paper-fig8-4k-grid", "--overlap", "700")
    assert out.returncode == 2 and "tiles.overlap" in out.stderr and "Traceback" not in out.stderr


def test_presets_lists_the_bundled_ones():
    out = run("presets")
    assert out.returncode == 0 and "paper-fig8-4k-grid" in out.stdout and "upscale-2x" in out.stdout


# --------------------------------------------------------------------------- first-run defects


def write_preset(folder, regions, canvas=(512, 512), **extra):
    path = Path(folder) / "preset.json"
    path.write_text(json.dumps({"version": 1, "canvas": {"width": canvas[0], "height": canvas[1]},
                                "regions": regions, **extra}))
    return path


def test_uncovered_latent_cells_are_named_and_exit_2(tmp_path):
    # One region over the left half of a 512x512 canvas: the right half (32 x 64 cells) is bare.
    preset = write_preset(tmp_path, [{"x": 0, "y": 0, "width": 256, "height": 512, "prompt": "left"}])
    out = run("plan", str(preset))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "2048 latent cells" in out.stderr and "[256, 0, 256, 512]" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("plan", str(preset), "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["uncovered"] == {"cells": 2048, "boxes": [[256, 0, 256, 512]]}
    # A tile grid under the region covers everything: no complaint.
    out = run("plan", str(preset), "--tile-width", "256", "--overlap", "64")
    assert out.returncode == 0, out.stderr


def test_uncovered_check_is_fast_on_the_largest_canvas(tmp_path):
    # 16384 px square (2048 x 2048 latent cells): two regions with a one-cell gap between them.
    preset = write_preset(tmp_path, [{"x": 0, "y": 0, "width": 8184, "height": 16384},
                                     {"x": 8192, "y": 0, "width": 8192, "height": 16384}], canvas=(16384, 16384))
    start = time.perf_counter()
    out = run("plan", str(preset))
    assert time.perf_counter() - start < 10
    assert out.returncode == 2 and "2048 latent cells" in out.stderr and "[8184, 0, 8, 16384]" in out.stderr


def test_uncovered_boxes_match_a_cell_by_cell_count():
    from lib_mixture.cli import uncovered_boxes
    from lib_mixture.geometry import Box

    rng = random.Random(7)
    for _ in range(300):
        w, h = rng.randint(1, 24), rng.randint(1, 24)
        boxes = []
        for _ in range(rng.randint(0, 6)):
            x, y = rng.randrange(w), rng.randrange(h)
            boxes.append(Box(x, y, rng.randint(1, w - x), rng.randint(1, h - y)))
        bare = {(x, y) for y in range(h) for x in range(w)
                if not any(b.x <= x < b.right and b.y <= y < b.bottom for b in boxes)}
        found = uncovered_boxes(boxes, w, h)
        cells = [(x, y) for b in found for y in range(b.y, b.bottom) for x in range(b.x, b.right)]
        assert len(cells) == len(set(cells)) and set(cells) == bare, (w, h, boxes, found)


def test_json_into_a_closed_pipe_is_quiet(tmp_path):
    # 64 regions with long prompts: far more JSON than a pipe buffers, so the writer meets the closed pipe.
    preset = write_preset(tmp_path, [{"x": 0, "y": 0, "width": 512, "height": 512, "prompt": "a windmill " * 900}] * 64)
    cmd = (f"{shlex.quote(sys.executable)} -m lib_mixture plan {shlex.quote(str(preset))} --json | head -n 3; "
           "echo \"status ${PIPESTATUS[0]}\" >&2")
    out = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["{", '  "name": "",', '  "canvas": {']
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("status "), out.stderr  # nothing but our echo
    assert int(lines[0].split()[1]) != 2


def test_millions_of_tiles_are_refused_quickly():
    start = time.perf_counter()
    out = run("plan", "--width", "16384", "--height", "16384", "--tile-width", "64", "--tile-height", "64",
              "--overlap", "56")
    assert time.perf_counter() - start < 10
    assert out.returncode == 2 and "4165681 tiles" in out.stderr and "allowed at most 2048" in out.stderr


def test_png_into_a_missing_folder_names_the_option_and_the_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    out = run("plan", "--png", str(missing / "plan.png"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--png" in out.stderr and str(missing) in out.stderr and "Errno" not in out.stderr
    assert not missing.exists()


def test_one_tile_side_keeps_tiles_square():
    def tile(*args):
        out = run("plan", "--width", "2048", "--height", "2048", *args, "--json")
        assert out.returncode == 0, out.stderr
        grid = json.loads(out.stdout)["tile_grid"]
        return grid["tile_width"], grid["tile_height"]

    assert tile("--tile-width", "512") == (512, 512)
    assert tile("--tile-height", "384") == (384, 384)
    assert tile("--tile-width", "512", "--tile-height", "384") == (512, 384)
    out = run("plan", "paper-fig8-4k-grid", "--tile-width", "512", "--json")
    grid = json.loads(out.stdout)["tile_grid"]
    assert (grid["tile_width"], grid["tile_height"]) == (512, 512)


PNG_1X1 = base64.b64encode(encode_png(1, 1, b"\x80\x80\x80")).decode()


def test_missing_guide_image_is_reported_at_plan_time(tmp_path):
    region = {"x": 0, "y": 0, "width": 512, "height": 512, "prompt": "a windmill"}
    folder = tmp_path / "presets"
    folder.mkdir()
    guided = dict(region, guide={"image": "sketches/windmill.png", "strength": 0.4})
    preset = write_preset(folder, [region, guided])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = run("plan", str(preset), cwd=elsewhere)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "regions[1].guide.image" in out.stderr and str(folder / "sketches" / "windmill.png") in out.stderr
    # Relative to the preset's folder, not to the current one.
    (folder / "sketches").mkdir()
    (folder / "sketches" / "windmill.png").write_bytes(base64.b64decode(PNG_1X1))
    out = run("plan", str(preset), cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    # Data URLs and hash references are not files.
    data = dict(region, guide={"image": "data:image/png;base64," + PNG_1X1})
    hashed = dict(region, guide={"image": "sha256:0123456789abcdef"})
    out = run("plan", str(write_preset(folder, [data, hashed])))
    assert out.returncode == 0, out.stderr
    assert "regions[1].guide.image" in out.stderr and "WebUI" in out.stderr
    assert "regions[0]" not in out.stderr


def test_misspelt_bundled_preset_gets_a_suggestion():
    out = run("plan", "paper-fig4-compositon")
    assert out.returncode == 2
    line = [ln for ln in out.stderr.splitlines() if "paper-fig4-compositon" in ln]
    assert len(line) == 1 and "did you mean 'paper-fig4-composition'?" in line[0]
    out = run("plan", "paper-fig9")  # the start of a name: that name, not the nearest spelling
    assert out.returncode == 2 and "did you mean 'paper-fig9-style-transition'?" in out.stderr


def test_quick_start_picture_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "-q", "plan.png"], cwd=ROOT)
    assert out.returncode == 0
    out = subprocess.run(["git", "check-ignore", "-q", "docs/plan.png"], cwd=ROOT)
    assert out.returncode == 1  # anchored: only the quick start's file in the root
