""""auto" tile and batch sizes inside the real WebUI: chosen for the host's memory with the cost
model of its device, shown in the infotext, bounded by the owner's setting, reproducible from
PNG Info on any budget.

Skipped unless MOD_WEBUI_DIR names a WebUI v1.10.1 checkout with its venv and
MOD_WEBUI_INPROCESS=1 (run with the WebUI's python, like test_mixture_inprocess.py).
"""

from __future__ import annotations

import json
import math

import pytest

import launcher  # tests/webui is on sys.path (conftest.py)

pytestmark = launcher.inprocess_skips()

W, H = 1024, 640  # a canvas the 512 to 768 px automatic tiles split
GIB = 2**30
DEFAULT = {"version": 1, "tiles": {}}  # every tile field at its default: auto size, auto batch, overlap 64


def run(script, config, **kw):
    import inprocess

    kw = {"width": W, "height": H, "steps": 2, "seed": 5, "prompt": "a harbour at dusk", **kw}
    return inprocess.txt2img([(script, [True, json.dumps(config) if isinstance(config, dict) else config])], **kw)


@pytest.fixture
def model_calls(host):
    """The latent size of every UNet call."""
    from modules import shared

    seen = []
    handle = shared.sd_model.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape)))
    yield seen
    handle.remove()


@pytest.fixture
def free(monkeypatch):
    """Sets the device's free memory the budget reads (bytes)."""
    from lib_mixture_webui import budget

    def set_free(value):
        monkeypatch.setattr(budget, "free_memory", lambda device: float(value))
    return set_free


def params_of(res, index=0):
    from modules import infotext_utils

    return infotext_utils.parse_generation_parameters(res.infotexts[index])


def expected(config, budget_bytes, source):
    from lib_mixture import cost
    from lib_mixture.auto_plan import Budget, resolve
    from lib_mixture.preset import parse_preset

    model = cost.for_host("sd1", "cpu", "fp32")
    return resolve(parse_preset(config), [(W, H)], Budget(model, budget_bytes, source))


def test_auto_is_chosen_for_the_free_memory_with_the_cpu_model_and_shown(script, model_calls, free):
    from lib_mixture import cost
    from lib_mixture_webui.args import AUTO_KEY, pasted_config

    free(6 * GIB)
    res = run(script, DEFAULT)
    model = cost.for_host("sd1", "cpu", "fp32")
    assert model.name == "sd15-fp32-sdpa-cpu-2core"
    want = expected(DEFAULT, model.weights_bytes + 0.9 * 6 * GIB, "the weights and 90% of the 6.00 GiB free on cpu")
    params = params_of(res)
    assert params[AUTO_KEY] == want.note
    assert want.note.startswith(f"auto: {want.choice.tile_width}x{want.choice.tile_height} px tiles")
    assert "sd15-fp32-sdpa-cpu-2core" in want.note and "the weights and 90% of the 6.00 GiB free on cpu" in want.note
    shown = json.loads(pasted_config(params))["tiles"]
    # the tile size as chosen (it shapes the image), the batch as asked (it does not)
    assert shown["width"] == want.shown.tiles.width and isinstance(shown["width"], int)
    assert shown["batch_size"] == "auto"
    chosen = want.choice
    assert 512 <= want.shown.tiles.width <= 768 and chosen.tiles > 1
    calls = math.ceil(chosen.tiles / chosen.batch_size)
    assert len(model_calls) == 2 * calls  # 2 steps, each ceil(tiles / batch) UNet calls
    assert max(shape[0] for shape in model_calls) == 2 * chosen.batch_size  # cond and uncond rows per crop


def test_the_owners_setting_bounds_the_memory(script, model_calls, free):
    from modules import shared

    from lib_mixture import cost
    from lib_mixture_webui.args import AUTO_KEY

    free(64 * GIB)
    model = cost.for_host("sd1", "cpu", "fp32")
    # the weights and room for one call of two 512 px crops, about
    limit_gib = (model.weights_bytes + model.call_bytes(4, 64 * 64)) / GIB + 0.01
    shared.opts.mod_auto_memory_gib = limit_gib
    try:
        res = run(script, DEFAULT)
    finally:
        shared.opts.mod_auto_memory_gib = 0
    want = expected(DEFAULT, limit_gib * GIB, "Settings → Mixture of Diffusers")
    assert params_of(res)[AUTO_KEY] == want.note and "Settings → Mixture of Diffusers" in want.note
    assert want.choice.peak_bytes <= limit_gib * GIB and want.choice.batch_size <= 2
    assert max(shape[0] for shape in model_calls) <= 4


def test_an_auto_image_reproduces_from_png_info_on_another_budget(script, free):
    import numpy as np

    from lib_mixture_webui.args import pasted_config

    free(6 * GIB)
    first = run(script, DEFAULT)
    pasted = pasted_config(params_of(first))
    free(0.05 * GIB)  # a smaller card: another batch, the same tiles
    again = run(script, pasted)
    a, b = (np.asarray(r.images[0]).astype("int16") for r in (first, again))
    # The same crops; the CPU UNet rounds a batch of rows unlike the rows alone (<= one 8-bit level).
    assert np.abs(a - b).max() <= 1
    assert json.loads(pasted_config(params_of(again)))["tiles"] == json.loads(pasted)["tiles"]


def test_nothing_fits_runs_the_smallest_peak_and_says_so(script, model_calls, free):
    from lib_mixture_webui.args import AUTO_KEY, WARNINGS_KEY

    free(1024)  # nothing fits: the smallest predicted peak, said in the warnings
    res = run(script, DEFAULT)
    params = params_of(res)
    assert "OVER the budget: none of the" in params[AUTO_KEY] and "smallest predicted peak" in params[AUTO_KEY]
    assert WARNINGS_KEY not in params  # said once, in its own line
    assert max(shape[0] for shape in model_calls) == 2  # one crop a call
    assert res.images[0].size == (W, H)


def test_without_a_cost_model_auto_is_the_fixed_default(script, model_calls, monkeypatch):
    from lib_mixture import cost
    from lib_mixture_webui.args import AUTO_KEY, pasted_config

    monkeypatch.setattr(cost, "for_host", lambda family, device, dtype: None)
    res = run(script, DEFAULT)
    params = params_of(res)
    assert params[AUTO_KEY].startswith("auto: 768x768 px tiles, batch 4 (the fixed default: no cost model is "
                                       "measured for sd1 on cpu in fp32")
    assert json.loads(pasted_config(params))["tiles"]["width"] == 768
    assert max(shape[0] for shape in model_calls) == 2 * 2  # 2 tiles of 768 px across 1024 x 640: one call of 2


def test_fixed_sizes_are_left_alone(script):
    from lib_mixture_webui.args import AUTO_KEY

    res = run(script, {"version": 1, "tiles": {"width": 512, "height": 512, "batch_size": 2}})
    assert AUTO_KEY not in params_of(res)


def test_a_batch_of_images_is_chosen_for_their_rows(script, model_calls, free):
    from lib_mixture import cost
    from lib_mixture.auto_plan import Budget, resolve
    from lib_mixture.preset import parse_preset
    from lib_mixture_webui.args import AUTO_KEY

    free(6 * GIB)
    res = run(script, DEFAULT, batch_size=2)
    model = cost.for_host("sd1", "cpu", "fp32")
    want = resolve(parse_preset(DEFAULT), [(W, H)], Budget(model, model.weights_bytes + 0.9 * 6 * GIB,
                                                            "the weights and 90% of the 6.00 GiB free on cpu"), images=2)
    assert params_of(res)[AUTO_KEY] == want.note and "with 2 images a batch" in want.note
    assert len(res.images) == 2
    assert max(shape[0] for shape in model_calls) == 4 * want.choice.batch_size  # 2 images x cond, uncond
