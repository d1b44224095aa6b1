"""schema/preset.schema.json documents the format; it must agree with the validator."""

import json
from pathlib import Path

import jsonschema
import pytest

from lib_mixture.preset import PresetError, load_preset, parse_preset

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schema" / "preset.schema.json").read_text())
BUNDLED = sorted((ROOT / "presets").glob("*.json"))


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_presets_and_their_canonical_form_match_the_schema(path):
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)
    jsonschema.validate(load_preset(path).to_dict(), SCHEMA)


REGION = {"x": 0, "y": 0, "width": 64, "height": 64}
BAD = {
    "unknown top key": {"version": 1, "regions": [REGION], "tiels": {}},
    "unknown region key": {"version": 1, "regions": [{**REGION, "colour": "red"}]},
    "wrong version": {"version": 2, "regions": [REGION]},
    "bad units": {"version": 1, "units": "cm", "regions": [REGION]},
    "batch 0": {"version": 1, "tiles": {"batch_size": 0}},
    "bad kind": {"version": 1, "regions": [REGION], "weights": {"kind": "cosine"}},
    "zero variance": {"version": 1, "regions": [REGION], "weights": {"variance": 0}},
    "negative x": {"version": 1, "regions": [{**REGION, "x": -1}]},
    "weight 0": {"version": 1, "regions": [{**REGION, "weight": 0}]},
    "seed -2": {"version": 1, "regions": [{**REGION, "seed": -2}]},
    "strength 2": {"version": 1, "regions": [{**REGION, "guide": {"image": "a.png", "strength": 2}}]},
    "empty guide": {"version": 1, "regions": [{**REGION, "guide": {"image": ""}}]},
    "bad mode": {"version": 1, "regions": [{**REGION, "prompt_mode": "merge"}]},
    "upscale scale 0": {"version": 1, "tiles": {}, "upscale": {"scale": 0}},
    "upscale scale -2": {"version": 1, "tiles": {}, "upscale": {"scale": -2}},
    "upscale width off grid": {"version": 1, "tiles": {}, "upscale": {"width": 3841, "height": 2160}},
    "upscale width alone": {"version": 1, "tiles": {}, "upscale": {"width": 3840}},
    "upscale scale and size": {"version": 1, "tiles": {}, "upscale": {"scale": 2, "width": 64, "height": 64}},
    "upscale bad fit": {"version": 1, "tiles": {}, "upscale": {"fit": "zoom"}},
    "upscale empty upscaler": {"version": 1, "tiles": {}, "upscale": {"upscaler": " "}},
    "upscale guide 1.5": {"version": 1, "tiles": {}, "upscale": {"guide_strength": 1.5}},
    "vae tiling maybe": {"version": 1, "tiles": {}, "vae": {"tiling": "maybe"}},
    "vae tile 100": {"version": 1, "tiles": {}, "vae": {"tile": 100}},
}


@pytest.mark.parametrize("name", BAD)
def test_schema_and_validator_reject_the_same_bad_presets(name):
    obj = BAD[name]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, SCHEMA)
    with pytest.raises(PresetError):
        parse_preset(obj)
