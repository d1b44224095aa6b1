"""A fuzzer for everything a caller can send: malformed, huge, deeply nested and hostile presets
thrown at the validator, the API argument reader and the planner. Every input must end in a
valid preset (or plan) or in a `PresetError` naming a field, quickly; never another exception."""

from __future__ import annotations

import json
import string
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_mixture.limits import Limits
from lib_mixture.auto_plan import plan_on
from lib_mixture.preset import Preset, PresetError, loads_preset, parse_preset
from lib_mixture_webui.args import pasted_config, read_args

BOUND_S = 2.0  # per input, on a slow shared CPU
KEYS = ["version", "name", "units", "canvas", "tiles", "weights", "regions", "passes", "upscale", "vae", "width",
        "height", "overlap", "batch_size", "x", "y", "prompt", "negative_prompt", "prompt_mode", "cfg_scale",
        "weight", "seed", "guide", "image", "strength", "kind", "variance", "tiling", "tile", "scale", "fit",
        "upscaler", "guide_strength", "__proto__", "", "\u0000", "é"]
HOSTILE_TEXT = st.sampled_from(["", "../../etc/passwd", "/etc/passwd", "data:image/png;base64,", "sha256:", "sha256:zz",
                                "sha256:0123456789ab", "NaN", "1e999", "\u202e", "<script>", "{", "]", "x" * 5000])
NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 8, 64, 768, 16384, 16385, -1, 2**32, 0.5, 1e-9]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(string.printable, max_size=40), HOSTILE_TEXT)
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.sampled_from(KEYS), inner, max_size=8)), max_leaves=60)
PRESETISH = st.fixed_dictionaries({"version": st.one_of(st.just(1), SCALARS)}, optional={
    "tiles": st.one_of(JSONISH, st.fixed_dictionaries({}, optional={k: NUMBERS for k in ("width", "height", "overlap",
                                                                                            "batch_size")})),
    "regions": st.one_of(JSONISH, st.lists(st.fixed_dictionaries(
        {k: NUMBERS for k in ("x", "y", "width", "height")},
        optional={"prompt": st.one_of(SCALARS, HOSTILE_TEXT), "seed": NUMBERS, "cfg_scale": NUMBERS,
                  "guide": st.one_of(JSONISH, st.fixed_dictionaries({"image": HOSTILE_TEXT}))}), max_size=5)),
    "canvas": JSONISH, "weights": JSONISH, "units": SCALARS, "passes": SCALARS, "upscale": JSONISH, "vae": JSONISH,
    "name": SCALARS,
})


def _outcome(fn, *args, **kw):
    started = time.perf_counter()
    try:
        result = fn(*args, **kw)
    except PresetError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        assert all(":" in p for p in e.problems), e.problems  # each names a field (or the preset) first
        result = e
    assert time.perf_counter() - started < BOUND_S
    return result


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(PRESETISH)
def test_any_object_is_a_preset_or_a_named_error(obj):
    result = _outcome(parse_preset, obj, "preset", Limits(max_regions=4))
    if isinstance(result, Preset):
        assert parse_preset(result.to_dict()) == result  # what validates round-trips
        plan = _outcome(plan_on, result, 1024, 768, limits=Limits(max_crops=64))
        assert isinstance(plan, PresetError) or plan.crops()


@FUZZ
@given(JSONISH)
def test_any_json_value_through_the_api_argument_reader(value):
    for args in ([value], [True, value], [json.dumps(value)], [True, json.dumps(value)]):
        _outcome(read_args, args)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_preset_json_or_pasted_infotext(text):
    _outcome(loads_preset, text)
    pasted = pasted_config({"Mixture of Diffusers": text})
    assert pasted is None or isinstance(pasted, str)


def test_hostile_shapes_are_refused_quickly():
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, '{"version":1,"regions":' + deep + "}", '{"version":1,"name":"' + "x" * 200_000 + '"}'):
        result = _outcome(loads_preset, text)
        assert isinstance(result, PresetError)
    nested: object = 1
    for _ in range(50_000):  # a decoded object deeper than Python's recursion limit
        nested = [nested]
    result = _outcome(parse_preset, {"version": 1, "regions": nested})
    assert "nested more than" in str(result)
    wide = {"version": 1, "regions": [{"x": 0, "y": 0, "width": 8, "height": 8}] * 5000}
    assert "5000 regions; allowed at most 256" in str(_outcome(parse_preset, wide))
    many = {"version": 1, "tiles": {"width": 64, "height": 64, "overlap": 56}}
    result = _outcome(plan_on, parse_preset(many), 16384, 16384)
    assert "need 4165681 tiles" in str(result) and "allowed at most 2048" in str(result)
    flat = {"version": 1, "tiles": {}, "name": [0] * 200_000}  # shallow but huge
    assert "more than 100000 JSON values" in str(_outcome(parse_preset, flat))
    long_key = {"version": 1, "tiles": {}, "x" * 1_000_000: 1}
    assert len(str(_outcome(parse_preset, long_key))) < 400
    huge = '{"version":1,"regions":[],"name":"' + "x" * (97 * 2**20) + '"}'
    assert "characters long; allowed at most" in str(_outcome(loads_preset, huge))
