"""The field table (lib_mixture/fields.py) is the one source of the preset format: the validator,
the dataclass defaults, the JSON schema, the editor's module and the README follow it."""

import copy
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_mixture import generated
from lib_mixture.fields import FIELD, FIELDS, REQUIRED, keys
from lib_mixture.preset import Preset, PresetError, Region, TileGrid, Upscale, VAETiling, parse_preset

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schema" / "preset.schema.json").read_text())

# A preset in which every field can be set on its own: the largest canvas and tiles, one region
# with a guide, an upscale. Box fields (x, y, width, height) depend on each other and are
# checked at their lower bounds only.
BASE = {"version": 1, "canvas": {"width": 16384, "height": 16384},
        "tiles": {"width": 16384, "height": 16384},
        "regions": [{"x": 0, "y": 0, "width": 64, "height": 64, "guide": {"image": "a.png"}}],
        "weights": {}, "upscale": {}, "vae": {}}
BOX = {"regions[].x", "regions[].y", "regions[].width", "regions[].height"}


def _with(path: str, value) -> dict:
    obj = copy.deepcopy(BASE)
    node = obj
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part.removesuffix("[]")]
        node = node[0] if part.endswith("[]") else node
    if path.startswith("upscale.") and parts[-1] in ("width", "height"):
        node.update(width=3840, height=2160)
    node[parts[-1]] = value
    if path in ("units", "canvas.width", "canvas.height"):  # the region's px box would not fit
        del obj["regions"]
    return obj


def _accepted(obj) -> tuple[bool, bool]:
    try:
        parse_preset(obj)
        ours = True
    except PresetError:
        ours = False
    return ours, jsonschema.Draft202012Validator(SCHEMA).is_valid(obj)


NUMBERS = [f for f in FIELDS if f.kind in ("integer", "number") and f.parent not in ("tiles.overlap",)
           and f.path != "version"]


def test_generated_files_are_current():
    assert generated.stale() == [], "run: python -m lib_mixture.generated --write"


def test_the_generator_command_reports_a_stale_file(tmp_path, monkeypatch):
    # Every output redirected: the test never writes the checked-in files.
    monkeypatch.setattr(generated, "JS_PATH", tmp_path / "fields.js")
    monkeypatch.setattr(generated, "SCHEMA_PATH", tmp_path / "schema.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{generated.BEGIN}\nold table\n{generated.END}\nrest\n")
    monkeypatch.setattr(generated, "README_PATH", readme)
    assert generated.main([]) == 1 and len(generated.stale()) == 3
    assert generated.main(["--write"]) == 0 and generated.main([]) == 0
    assert (tmp_path / "fields.js").read_text() == generated.js_module()
    assert "old table" not in readme.read_text() and readme.read_text().endswith("rest\n")


EDGE_CASES = [  # (preset, accepted): the validator and the schema agree on each
    ({"version": 1, "tiles": {}, "upscale": None}, True),
    ({"version": 1, "tiles": {}, "vae": None}, True),
    ({"version": True, "tiles": {}}, False),
    ({"version": 1.0, "tiles": {}}, True),
    ({"version": 1, "tiles": {}, "upscale": {"width": None, "height": 2160}}, False),
    ({"version": 1, "tiles": {}, "upscale": {"width": 3840, "height": 2160, "scale": None}}, True),
    ({"version": 1, "tiles": {}, "upscale": {"scale": 2, "width": 3840, "height": 2160}}, False),
    ({"version": 1, "tiles": {"width": 64, "height": 64}}, True),  # the default overlap fits small tiles
    ({"version": 1, "tiles": {"batch_size": True}}, False),
    ({"version": 1, "tiles": {"width": 1e400}}, False),
]


@pytest.mark.parametrize("obj,accepted", EDGE_CASES, ids=[json.dumps(o)[:60] for o, _ in EDGE_CASES])
def test_validator_and_schema_agree_on_edge_cases(obj, accepted):
    assert _accepted(obj) == (accepted, accepted)


def test_the_default_overlap_stays_below_small_tiles():
    from lib_mixture.auto_plan import plan_on

    preset = parse_preset({"version": 1, "tiles": {"width": 64, "height": 128}})
    assert (preset.tiles.overlap.x, preset.tiles.overlap.y) == (56, 64)
    assert plan_on(preset, 256, 256).tiles  # plans without a latent-cell error


def test_the_editor_module_holds_the_table():
    out = subprocess.run(["node", "-e", "process.stdout.write(JSON.stringify(require(process.argv[1])))",
                          str(generated.JS_PATH)], capture_output=True, text=True, check=False)
    if out.returncode:
        pytest.skip(f"node is not available: {out.stderr[:200]}")
    rows = json.loads(out.stdout)["fields"]
    assert list(rows) == [f.path for f in FIELDS]
    for f in FIELDS:
        assert rows[f.path].get("min") == f.minimum and rows[f.path].get("max") == f.maximum, f.path
        if not f.required:
            want = list(f.default) if isinstance(f.default, tuple) else f.default
            assert rows[f.path]["default"] == want, f.path


def test_dataclass_defaults_are_the_table_defaults():
    from dataclasses import MISSING, fields

    from lib_mixture.preset import Guide, Weighting

    tables = {Preset: "", TileGrid: "tiles", Weighting: "weights", Region: "regions[]", Guide: "regions[].guide",
              Upscale: "upscale", VAETiling: "vae"}
    checked = 0
    for cls, table in tables.items():
        for attribute in fields(cls):
            row = FIELD.get(f"{table}.{attribute.name}" if table else attribute.name)
            if row is None or row.kind in ("object", "list") or attribute.name in ("overlap", "version"):
                continue
            assert (attribute.default is MISSING) == row.required, row.path
            if not row.required:
                assert attribute.default == row.default, row.path
            checked += 1
    assert checked >= 25


def test_object_keys_are_the_table_rows():
    assert keys("") == tuple(SCHEMA["properties"])
    assert keys("regions[]") == tuple(SCHEMA["properties"]["regions"]["items"]["properties"])


@pytest.mark.parametrize("f", NUMBERS, ids=[f.path for f in NUMBERS])
def test_each_number_bound_is_where_the_table_says(f):
    lo, hi = f.minimum, f.maximum
    assert _accepted(_with(f.path, lo)) == ((not f.exclusive_minimum,) * 2), "at the minimum"
    below = lo - (1 if f.kind == "integer" else 1e-6)
    if f.path in BOX:  # the schema takes the union of the px and fraction ranges
        assert _accepted(_with(f.path, below))[0] is False, "below the minimum"
        return
    assert _accepted(_with(f.path, below)) == (False, False), "below the minimum"
    assert _accepted(_with(f.path, hi)) == (True, True), "at the maximum"
    above = hi + (f.multiple_of or 1 if f.kind == "integer" else 1e-6)
    assert _accepted(_with(f.path, above)) == (False, False), "above the maximum"
    with pytest.raises(PresetError) as e:
        parse_preset(_with(f.path, above))
    where = f.path.replace("[]", "[0]")
    assert any(p.startswith(f"{where}: ") and f"{hi}]" in p for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("f", [f for f in FIELDS if f.kind == "enum"], ids=lambda f: f.path)
def test_each_enum_takes_its_options_only(f):
    for option in f.options:
        assert _accepted(_with(f.path, option)) == (True, True), option
    assert _accepted(_with(f.path, "not-an-option")) == (False, False)


@pytest.mark.parametrize("f", [f for f in FIELDS if f.required and f.parent in ("", "canvas", "regions[]")],
                         ids=lambda f: f.path)
def test_a_missing_required_field_is_named(f):
    obj = copy.deepcopy(BASE)
    parent = obj["regions"][0] if f.parent == "regions[]" else obj[f.parent] if f.parent else obj
    del parent[f.key]
    with pytest.raises(PresetError) as e:
        parse_preset(obj)
    assert any(p.endswith("is required") or "version" in p for p in e.value.problems)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(obj)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_in_range_values_are_accepted_by_both(data):
    f = data.draw(st.sampled_from([f for f in NUMBERS if f.path not in BOX]))
    if f.kind == "integer":
        value = data.draw(st.integers(int(f.minimum) + bool(f.exclusive_minimum), int(f.maximum)))
        if f.multiple_of:
            value -= value % f.multiple_of
            value = max(value, int(f.minimum))
    else:
        value = data.draw(st.floats(f.minimum, f.maximum, exclude_min=f.exclusive_minimum, allow_nan=False))
    assert _accepted(_with(f.path, value)) == (True, True), (f.path, value)


def test_every_row_has_a_doc_and_a_known_kind():
    for f in FIELDS:
        assert f.doc.strip() and f.kind in ("integer", "number", "string", "enum", "const", "object", "list")
        assert f.default == REQUIRED or f.kind != "const"
    assert FIELD["tiles.width"].range_text() == "[64, 16384] px"
