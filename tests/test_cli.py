import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "lib_mixture", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


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
    out = run("plan", "paper-fig8-4k-grid", "--json")
    plan = json.loads(out.stdout)
    assert {"canvas", "tiles", "regions", "redundancy", "model_calls_per_step"} <= plan.keys()
    assert plan["canvas"]["width"] == 3840 and len(plan["tiles"]) == 88
    assert all(len(t) == 4 for t in plan["tiles"]) and plan["tiles"][-1] == [3200, 1680, 640, 480]
    assert plan["model_calls_per_step"] == 11 and plan["redundancy"] > 3


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
