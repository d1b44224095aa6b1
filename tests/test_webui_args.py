"""Script arguments from the UI, the API and pasted infotext (no WebUI needed)."""

import json

import pytest

from lib_mixture.preset import PresetError, parse_preset
from lib_mixture_webui.args import INFOTEXT_KEY, infotext_value, pasted_config, read_args

PRESET = {"version": 1, "tiles": {"width": 512, "height": 512, "overlap": 64, "batch_size": 2},
          "regions": [{"x": 0, "y": 0, "width": 256, "height": 256, "prompt": "a cat, sitting"}]}


def test_ui_values_api_object_and_json_string_all_read_the_same():
    expected = parse_preset(PRESET)
    assert read_args([True, json.dumps(PRESET)]) == (True, expected)
    assert read_args([PRESET]) == (True, expected)
    assert read_args([json.dumps(PRESET)]) == (True, expected)
    assert read_args([True, PRESET]) == (True, expected)
    assert read_args(["true", PRESET]) == (True, expected)


def test_disabled_or_missing_is_off():
    assert read_args([]) == (False, None)
    assert read_args([False, json.dumps(PRESET)]) == (False, None)
    assert read_args([False, "not even json"]) == (False, None)


def test_bad_objects_name_the_field():
    bad = {**PRESET, "regions": [{"x": 0, "y": 0, "width": 256, "height": 256, "cfg_scale": -1}]}
    with pytest.raises(PresetError, match=r"regions\[0\].cfg_scale: -1 is out of range"):
        read_args([bad])
    with pytest.raises(PresetError, match="no configuration"):
        read_args([True, ""])
    with pytest.raises(PresetError, match="not valid JSON"):
        read_args([True, "{oops"])
    with pytest.raises(PresetError, match="expected a preset object"):
        read_args([True, 42])


def test_infotext_value_round_trips_through_the_webui_quoting():
    preset = parse_preset(PRESET)
    value = infotext_value(preset)
    assert "\n" not in value
    # The WebUI JSON-quotes values with commas or colons and unquotes them on paste.
    quoted = json.dumps(value)
    assert read_args([True, pasted_config({INFOTEXT_KEY: json.loads(quoted)})]) == (True, preset)
    assert read_args([True, pasted_config({INFOTEXT_KEY: quoted})]) == (True, preset)
    assert pasted_config({"Steps": "20"}) is None


SEEDED = {"version": 1, "tiles": {"width": 512, "height": 512, "overlap": 64},
          "regions": [{"x": 0, "y": 0, "width": 256, "height": 256, "seed": 4321},
                      {"x": 0, "y": 0, "width": 256, "height": 256, "seed": 4294967295},
                      {"x": 0, "y": 0, "width": 256, "height": 256,
                       "guide": {"image": "/home/someone/private.png", "strength": 1}}]}


def test_each_image_infotext_carries_the_region_seeds_it_used():
    from types import SimpleNamespace

    from lib_mixture_webui.args import ImageInfotext

    value = ImageInfotext(parse_preset(SEEDED), {"/home/someone/private.png": "sha256:00112233445566ff"})
    p = SimpleNamespace(all_seeds=[777, 778, 779, 780])
    seeds = lambda text: [r["seed"] for r in json.loads(text)["regions"]]  # noqa: E731
    assert seeds(value) == [4321, 4294967295, -1]  # as a str: the first image's
    # the WebUI's create_infotext: image 2 of batch count 2 (batch of one: all_seeds = p.seeds)
    assert seeds(value(p=p, index=0, all_seeds=[778])) == [4322, 0, -1]  # wraps into [0, 2**32 - 1]
    assert seeds(value(p=p, index=1, all_seeds=[779, 780])) == [4324, 2, -1]  # batch size 2, second row
    assert seeds(value(p=p, index=0, all_seeds=[780], use_main_prompt=True)) == [4321, 4294967295, -1]
    for text in (value, value(p=p, index=0, all_seeds=[778])):
        assert "/home/someone" not in text and json.loads(text)["regions"][2]["guide"]["image"] == "sha256:00112233445566ff"
        assert read_args([True, pasted_config({INFOTEXT_KEY: text})])[0]  # still a valid preset
    assert json.loads(json.dumps({"info": value}))["info"] == str(value)  # the API's info serialises it


def test_pasted_infotext_never_names_a_file():
    hostile = json.dumps({**SEEDED, "regions": [{"x": 0, "y": 0, "width": 8, "height": 8,
                                                 "guide": {"image": "/etc/passwd"}},
                                                {"x": 0, "y": 0, "width": 8, "height": 8,
                                                 "guide": {"image": "sha256:0123456789abcdef"}}]})
    pasted = json.loads(pasted_config({INFOTEXT_KEY: hostile}))
    assert [r["guide"]["image"] for r in pasted["regions"]] == ["", "sha256:0123456789abcdef"]
    with pytest.raises(PresetError, match=r"regions\[0\].guide.image: is empty; give the image"):
        read_args([True, json.dumps(pasted)])


def test_settings_build_limits_and_the_guide_policy():
    from types import SimpleNamespace

    from lib_mixture_webui import settings

    opts = SimpleNamespace(mod_guide_folders="/srv/guides\n /srv/more , ", mod_guide_paths_from_api=False,
                           mod_max_regions=3, mod_max_crops="10", mod_max_guide_megapixels=0.5, mod_max_guide_mib=2)
    limits = settings.limits(opts)
    assert (limits.max_regions, limits.max_crops, limits.max_image_pixels, limits.max_image_chars) == (
        3, 10, 500_000, 2 * 2**20)
    panel = settings.guide_policy(False, "/data/presets", opts)
    api = settings.guide_policy(True, "/data/presets", opts)
    assert panel.folders == api.folders == ("/srv/guides", "/srv/more", "/data/presets")
    assert panel.allow_paths and not api.allow_paths and not api.any_path
    assert "API" in api.refusal_hint
    opts.mod_guide_paths_from_api = True
    assert settings.guide_policy(True, "/data/presets", opts).allow_paths
    with pytest.raises(PresetError, match="4 regions; allowed at most 3"):
        read_args([{"version": 1, "regions": [{"x": 0, "y": 0, "width": 8, "height": 8}] * 4}], limits)
    defaults = settings.limits(SimpleNamespace())
    assert defaults.max_regions == 256 and defaults.max_crops == 2048
