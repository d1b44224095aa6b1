import json
import os
import threading
from pathlib import Path

import pytest

from lib_mixture.auto_plan import plan_on
from lib_mixture.preset import (Preset, PresetError, Region, load_preset, loads_preset, parse_preset,
                                save_preset)

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted((ROOT / "presets").glob("*.json"))


def minimal(**extra):
    return {"version": 1, "regions": [{"x": 0, "y": 0, "width": 64, "height": 64}], **extra}


def problems(obj):
    with pytest.raises(PresetError) as e:
        parse_preset(obj)
    return e.value.problems


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_every_bundled_preset_validates_and_plans(path):
    preset = load_preset(path)
    assert preset.name == path.stem
    plan = plan_on(preset, *( (None, None) if preset.canvas else (1024, 768)))
    assert plan.model_calls_per_step >= 1


def test_the_paper_presets_are_all_shipped():
    names = {p.stem for p in BUNDLED}
    assert {"paper-fig4-composition", "paper-fig6-grid-2x3", "paper-fig8-4k-grid", "paper-fig9-style-transition",
            "upscale-2x", "upscale-qhd-2560x1440", "upscale-4k-uhd-3840x2160"} <= names


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_round_trip_through_json_is_lossless(path):
    preset = load_preset(path)
    again = loads_preset(preset.to_json())
    assert again == preset and again.to_dict() == preset.to_dict()


def test_round_trip_keeps_every_region_field():
    region = {"x": 0.1, "y": 0.2, "width": 0.5, "height": 0.25, "prompt": "a cat", "negative_prompt": "dog",
              "prompt_mode": "append", "cfg_scale": 4.5, "weight": 2.0, "seed": 1234,
              "guide": {"image": "guides/sketch.png", "strength": 0.25}}
    obj = {"version": 1, "name": "x", "units": "fraction", "canvas": {"width": 1024, "height": 512},
           "tiles": {"width": 512, "height": 512, "overlap": {"x": 64, "y": 32}, "batch_size": 2},
           "weights": {"kind": "constant", "variance": 0.01}, "regions": [region], "passes": "hires",
           "micro_conditioning": "all"}
    preset = parse_preset(obj)
    assert preset.to_dict() == obj
    assert preset.regions[0] == Region(**{**region, "guide": preset.regions[0].guide})


def test_defaults_are_filled_in():
    preset = parse_preset(minimal())
    r = preset.regions[0]
    assert (preset.units, preset.weights.kind, preset.weights.variance) == ("px", "gaussian", 0.01)
    assert (r.prompt_mode, r.cfg_scale, r.weight, r.seed, r.guide) == ("replace", None, 1.0, -1, None)


def test_unknown_keys_are_errors_with_a_suggestion():
    found = problems({**minimal(), "tiels": {}})
    assert found == ["tiels: unknown key (did you mean 'tiles'?); allowed keys: version, name, units, canvas, "
                     "tiles, weights, regions, passes, micro_conditioning, upscale, vae"]
    found = problems({"version": 1, "regions": [{"x": 0, "y": 0, "widht": 8, "height": 8}]})
    assert any(p.startswith("regions[0].widht: unknown key (did you mean 'width'?)") for p in found)
    assert "regions[0].width: is required" in found


def test_each_bad_field_is_named_with_value_and_range():
    obj = {"version": 1, "units": "inches",
           "tiles": {"width": 32, "height": 768, "overlap": 900, "batch_size": 0},
           "weights": {"kind": "cosine", "variance": -1},
           "regions": [{"x": 0, "y": 0, "width": 64, "height": 64},
                       {"x": 0, "y": 0, "width": 64, "height": 64},
                       {"x": -5, "y": "top", "width": 0, "height": 64, "cfg_scale": 500, "weight": 0,
                        "seed": -2, "prompt_mode": "merge", "prompt": 3, "guide": {"image": "", "strength": 2}}]}
    found = problems(obj)
    expected = [
        "units: \"inches\" is not allowed; allowed: 'px', 'fraction'",
        "tiles.width: 32 is out of range; allowed [64, 16384] px or \"auto\"",
        "tiles.batch_size: 0 is out of range; allowed [1, 64] or \"auto\"",
        "tiles.overlap: 900 is out of range; allowed [0, 760] px (below the tile size)",
        "weights.kind: \"cosine\" is not allowed; allowed: 'gaussian', 'constant'",
        "weights.variance: -1 is out of range; allowed (0.0, 10.0]",
        "regions[2].x: -5 is out of range; allowed [0, 16384] px",
        "regions[2].y: expected a number in [0, 16384] px, got \"top\"",
        "regions[2].width: 0 is out of range; allowed [8, 16384] px",
        "regions[2].prompt: expected a string, got 3",
        "regions[2].prompt_mode: \"merge\" is not allowed; allowed: 'replace', 'append'",
        "regions[2].cfg_scale: 500 is out of range; allowed [0.0, 100.0] or null",
        "regions[2].weight: 0 is out of range; allowed (0.0, 1000.0]",
        "regions[2].seed: -2 is out of range; allowed [-1, 4294967295]",
        "regions[2].guide.image: is empty; give the image as a data:image/...;base64 URL "
        "(or, where the server allows it, a file path)",
        "regions[2].guide.strength: 2 is out of range; allowed [0.0, 1.0]",
    ]
    assert found == expected
    message = str(PresetError(found))
    assert message.startswith("invalid preset (16 problems):\n  - units:")


def test_other_shapes_of_bad_input():
    assert problems([1, 2]) == ["preset: expected an object, got [1, 2]"]  # path "" for the top level
    assert problems({"version": 2}) == ["version: 2 is not supported; this extension reads version 1"]
    assert problems({"regions": []}) == ["version: is required"]
    assert problems({"version": 1}) == [
        "regions: the preset has neither a tile grid ('tiles') nor any region; give at least one"]
    assert problems({"version": 1, "regions": {"x": 1}}) == ['regions: expected a list of regions, got {"x": 1}']
    assert problems(minimal(canvas={"width": 64, "height": 64}, regions=[
        {"x": 32, "y": 0, "width": 64, "height": 8}])) == ["regions[0].width: x + width = 96 reaches past the canvas width 64"]
    assert problems(minimal(units="fraction", regions=[{"x": 0.5, "y": 0, "width": 1.5, "height": 1}])) == [
        "regions[0].width: 1.5 is out of range; allowed (0.0, 1.0]"]
    assert problems(minimal(tiles={"width": 512, "height": 512, "overlap": True})) == [
        "tiles.overlap: expected an integer in [0, 504] px (below the tile size), got true"]


def test_bad_json_text_names_line_and_column():
    with pytest.raises(PresetError, match=r"not valid JSON: .* at line 2 column"):
        loads_preset('{"version": 1,\n "regions": [,]}')


def test_save_is_atomic_and_never_overwrites_unless_asked(tmp_path):
    preset = parse_preset(minimal(name="mine"))
    target = save_preset(preset, tmp_path / "user" / "mine.json")
    assert load_preset(target) == preset
    other = parse_preset(minimal(name="other"))
    with pytest.raises(FileExistsError, match="already exists"):
        save_preset(other, target)
    assert load_preset(target) == preset  # untouched
    save_preset(other, target, overwrite=True)
    assert load_preset(target).name == "other"
    assert [p.name for p in target.parent.iterdir()] == ["mine.json"]  # no temp files left behind


def test_failed_write_leaves_the_existing_preset_and_no_temp_file(tmp_path, monkeypatch):
    target = save_preset(parse_preset(minimal(name="keep")), tmp_path / "p.json")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        save_preset(parse_preset(minimal(name="new")), target, overwrite=True)
    assert load_preset(target).name == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_concurrent_saves_to_one_name_keep_exactly_one(tmp_path):
    target = tmp_path / "race.json"
    results = []

    def save(i):
        try:
            save_preset(parse_preset(minimal(name=f"n{i}")), target)
            results.append(i)
        except FileExistsError:
            pass
    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1
    assert load_preset(target).name == f"n{results[0]}"


def test_unreadable_file_is_a_preset_error(tmp_path):
    with pytest.raises(PresetError, match="cannot read"):
        load_preset(tmp_path / "missing.json")


def test_plan_scales_px_regions_from_the_preset_canvas_and_rejects_regions_outside():
    preset = parse_preset(minimal(canvas={"width": 512, "height": 512},
                                  regions=[{"x": 256, "y": 0, "width": 256, "height": 128}]))
    plan = plan_on(preset, 1024, 1024)  # the hires pass at 2x
    assert plan.regions[0].box.as_list() == [512, 0, 512, 256]
    no_canvas = parse_preset(minimal(regions=[{"x": 600, "y": 0, "width": 64, "height": 64}]))
    with pytest.raises(PresetError, match=r"regions\[0\]: box starts at \(600, 0\) px, outside the 512x512 canvas"):
        plan_on(no_canvas, 512, 512)
    with pytest.raises(PresetError, match="canvas size is unknown"):
        plan_on(no_canvas)
    with pytest.raises(PresetError, match=r"canvas.width: 4 must be a whole number of px, at least 8"):
        plan_on(no_canvas, 4, 512)


def test_plan_off_the_8px_grid_covers_the_latent_the_model_samples():
    """A 665x998 canvas (512x768 at hires 1.3) is an 83x124 latent: the plan covers 664x992 px,
    and boxes drawn on the requested size are scaled onto it, so a full-height box stays full."""
    preset = parse_preset(minimal(tiles={"width": 256, "height": 256, "overlap": 32},
                                  regions=[{"x": 0, "y": 0, "width": 332, "height": 998, "seed": 5}]))
    plan = plan_on(preset, 665, 998)
    assert (plan.canvas_width, plan.canvas_height) == (664, 992) and plan.latent_size == (124, 83)
    assert all(t.right <= 664 and t.bottom <= 992 for t in plan.tiles.tiles)
    assert plan.regions[0].box.as_list() == [0, 0, 328, 992]  # 332 * 664 / 665 = 331.5, snapped
    seeded = parse_preset(minimal(canvas={"width": 256, "height": 196},
                                  regions=[{"x": 0, "y": 0, "width": 128, "height": 196, "seed": 4321},
                                           {"x": 128, "y": 0, "width": 128, "height": 196}]))
    plan = plan_on(seeded, 256, 196)
    assert [r.box.as_list() for r in plan.regions] == [[0, 0, 128, 192], [128, 0, 128, 192]]


def test_fraction_regions_follow_the_canvas():
    preset = parse_preset(minimal(units="fraction", regions=[{"x": 0.25, "y": 0.5, "width": 0.5, "height": 0.5}]))
    assert plan_on(preset, 800, 600).regions[0].box.as_list() == [200, 304, 400, 296]  # y 300 -> 304 (half up), bottom stays 600
