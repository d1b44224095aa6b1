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
