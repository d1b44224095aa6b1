"""Mixture of Diffusers with sd-webui-controlnet in the real WebUI's process: each tile batch gets
its own crops of every unit's control image.

A tiny random T2I-Adapter (`tiny_t2i_adapter`: ControlNet's own ``Adapter`` class, its first two
feature maps with the tiny SD1 UNet's 32 and 64 channels, which ControlNet adds after input blocks 2
and 5) is spatial and caches its features, so it shows whether each crop gets its own hint and whether
the cache is dropped per crop. Needs its own process (the WebUI is booted with its extension
scripts loaded), a ControlNet checkout in ``MOD_CONTROLNET_DIR`` (Mikubill/sd-webui-controlnet,
the 2024-07 HEAD) and ``controlnet_aux`` and ``matplotlib`` in the WebUI's venv:

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_DIR=$PWD MOD_WEBUI_INPROCESS=1 MOD_CONTROLNET_DIR=/path/to/sd-webui-controlnet \\
        venv/bin/python -m pytest -p no:cacheprovider /path/to/repo/tests/webui/test_controlnet_inprocess.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

import launcher  # tests/webui is on sys.path (conftest.py)
from tiny_t2i_adapter import write_adapter  # noqa: E402

pytestmark = [*launcher.inprocess_skips(), *launcher.controlnet_skips()]

W, H = 192, 128  # latent 24 x 16
TILES = {"width": 96, "height": 96, "overlap": 32, "batch_size": 2}  # 6 tiles, 3 calls a step
ADAPTER = "tiny-t2i-adapter"
TILE_ADAPTER = "tiny-tile-adapter"
SDXL_TILE = "a-tile-adapter-sdxl"


@pytest.fixture(scope="module")
def cn_host(tmp_path_factory):
    """The WebUI booted with ControlNet and this extension loaded as extensions, and a tiny T2I-Adapter
    in its models folder."""
    found = launcher.boot_with_controlnet(tmp_path_factory, ROOT)
    shared = sys.modules["modules.shared"]
    models = Path(sys.modules["modules.paths"].models_path) / "ControlNet"
    write_adapter(models / f"{ADAPTER}.safetensors")
    write_adapter(models / f"{ADAPTER}-b.safetensors", seed=9)  # a second model
    write_adapter(models / f"{TILE_ADAPTER}.safetensors", seed=10)  # "auto" finds it
    # named for SDXL and sorted first: "auto" passes it over for the SD 1.x checkpoint
    write_adapter(models / f"{SDXL_TILE}.safetensors", seed=11)
    sys.modules["scripts.global_state"].update_cn_models()
    return shared, found["ControlNet"], found["Mixture of Diffusers"]


def control_image():
    import numpy as np

    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([(x * 255) // (W - 1), (y * 255) // (H - 1), ((x // 16 + y // 16) % 2) * 255], axis=-1)
    return rgb.astype("uint8")


def unit(**kw):
    from internal_controlnet.external_code import ControlNetUnit

    fields = dict(enabled=True, module="none", model=ADAPTER, image=control_image(), weight=1.0,
                  resize_mode="Just Resize", pixel_perfect=False)
    fields.update(kw)
    return ControlNetUnit(**fields)


def run(cn_host, units=(), config=None, enabled=True, **kw):
    import inprocess

    _, cn_script, our_script = cn_host
    scripts_with_args = [(cn_script, list(units) or [unit(enabled=False)])]
    if config is not None:
        scripts_with_args.append((our_script, [enabled, json.dumps(config)]))
    kw = {"width": W, "height": H, "steps": 3, "seed": 11, "prompt": "a landscape", **kw}
    return inprocess.txt2img(scripts_with_args, **kw)


def pixels(image):
    import numpy as np

    return np.asarray(image).astype("int16")


@pytest.fixture
def adapter_calls(cn_host):
    """Every hint the T2I-Adapter computes features from (its cache dropped or first use)."""
    adapter_module = sys.modules["scripts.adapter"]
    seen = []
    real = adapter_module.Adapter.forward

    def record(self, x):
        seen.append(x.detach().clone())
        return real(self, x)
    adapter_module.Adapter.forward = record
    yield seen
    adapter_module.Adapter.forward = real


def test_controlnet_alone_works_and_the_extension_off_changes_nothing(cn_host):
    import numpy as np

    plain = run(cn_host)
    controlled = run(cn_host, [unit()])
    assert np.abs(pixels(plain.images[0]) - pixels(controlled.images[0])).mean() > 0.5  # the adapter acts
    off = run(cn_host, [unit()], {"version": 1, "tiles": TILES}, enabled=False)
    assert np.array_equal(pixels(off.images[0]), pixels(controlled.images[0]))
    one_tile = run(cn_host, [unit()], {"version": 1, "tiles": dict(TILES, width=W, height=H)})
    assert np.array_equal(pixels(one_tile.images[0]), pixels(controlled.images[0]))  # one crop = the canvas


def test_each_tile_batch_gets_its_own_crops_of_the_control_image(cn_host, adapter_calls):
    import numpy as np
    import torch

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = {"version": 1, "tiles": TILES}
    tiles = build_plan(parse_preset(config), W, H).tiles.tiles
    res = run(cn_host, [unit()], config)
    assert res.images[0].size == (W, H)
    per_step = math.ceil(len(tiles) / TILES["batch_size"])
    assert len(adapter_calls) == 3 * per_step  # features recomputed for every call, never the canvas
    full = torch.from_numpy(control_image()).float().div(255).permute(2, 0, 1)[None]
    rows = 2  # cond and uncond of one image
    for call, hint in enumerate(adapter_calls[:per_step]):
        specs = tiles[call * 2:call * 2 + 2]
        expected = torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width].expand(rows, -1, -1, -1)
                              for t in specs])
        assert hint.shape == expected.shape
        torch.testing.assert_close(hint, expected, atol=1 / 255, rtol=0)
    tiles_alone = run(cn_host, [], config)
    assert np.abs(pixels(res.images[0]) - pixels(tiles_alone.images[0])).mean() > 0.5


def test_hints_are_the_units_own_again_after_the_job_and_an_interrupt(cn_host):
    import inprocess
    import numpy as np

    config = {"version": 1, "tiles": TILES}
    reference = run(cn_host, [unit()], config)
    with inprocess.cfg_calls(interrupt_at=2) as count:
        stopped = run(cn_host, [unit()], config)
    assert stopped.images[0].size == (W, H) and len(count) == 2
    network = cn_host[1].latest_network
    assert network is None or all(p.hint_cond.shape[-2:] == (H, W) for p in network.control_params)
    assert np.array_equal(pixels(run(cn_host, [unit()], config).images[0]), pixels(reference.images[0]))


def test_units_that_are_not_spatial_stop_before_any_step(cn_host):
    import inprocess
    import numpy as np

    with inprocess.cfg_calls() as steps:
        with pytest.raises(Exception, match=r"ControlNet unit 1 \(AttentionInjection, preprocessor reference_only\) "
                                            "is not supported: it runs a whole-canvas model pass"):
            run(cn_host, [unit(module="reference_only", model="None")], {"version": 1, "tiles": TILES})
        mask = np.zeros((H, W, 3), dtype="uint8")
        mask[:, : W // 2] = 255
        with pytest.raises(Exception, match=r"ControlNet unit 1 \(T2I_Adapter, preprocessor none\) has an effective "
                                            "region mask"):
            run(cn_host, [unit(effective_region_mask=mask)], {"version": 1, "tiles": TILES})
    assert steps == []


REGIONS = [{"x": 0, "y": 0, "width": 96, "height": 128, "prompt": "a red barn", "cfg_scale": 4},
           {"x": 96, "y": 0, "width": 96, "height": 128, "prompt": "a giant robot", "negative_prompt": "cars"}]


@pytest.mark.parametrize("mode", ["Balanced", "ControlNet is more important"])
def test_regions_get_their_crops_one_crop_per_call_with_marked_conds(cn_host, adapter_calls, mode):
    """Tiles and regions: one crop per host call, each with its one-row crop of the control image;
    every UNet call's context carries ControlNet's cond / uncond marks (region conds marked too)."""
    import numpy as np

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    hook = sys.modules["scripts.hook"]
    marked = []
    real_unmark = hook.unmark_prompt_context

    def unmark(x):
        marked.append(hook.prompt_context_is_marked(x))
        return real_unmark(x)
    hook.unmark_prompt_context = unmark
    config = {"version": 1, "tiles": TILES, "regions": REGIONS}
    try:
        res = run(cn_host, [unit(control_mode=mode)], config)
    finally:
        hook.unmark_prompt_context = real_unmark
    crops = build_plan(parse_preset(config), W, H).crops()
    assert len(adapter_calls) == 3 * len(crops)  # one crop per call: 6 tiles and 2 regions a step
    if parse_preset(config).tiles.batch_size > 1:  # said, not silent
        assert "ControlNet with regions takes one crop per model call: batch 1 instead of" in res.infotexts[0]
    boxes = [c.box for c in crops]
    for hint, box in zip(adapter_calls, boxes):  # the first step, crops in plan order
        assert tuple(hint.shape) == (1, 3, box.height * 8, box.width * 8)
        torch_close(hint, crops_of(control_image(), [pixel_box(box)], 1))
    assert marked and all(marked)
    tiles_only = run(cn_host, [unit(control_mode=mode)], {"version": 1, "tiles": TILES})
    assert np.abs(pixels(res.images[0]) - pixels(tiles_only.images[0])).mean() > 0.5


def pixel_box(box):
    from types import SimpleNamespace

    return SimpleNamespace(x=box.x * 8, y=box.y * 8, width=box.width * 8, height=box.height * 8)


def torch_close(a, b):
    import torch

    torch.testing.assert_close(a, b, atol=1 / 255, rtol=0)


def test_the_hires_pass_crops_the_units_hires_control_image(cn_host, adapter_calls):
    """txt2img hires fix: ControlNet keeps a second control image at the hires size; the hires pass's
    tiles are cut from it (and the first pass's from the first)."""
    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = {"version": 1, "tiles": TILES}
    res = run(cn_host, [unit()], config, enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
              hr_second_pass_steps=2)
    assert res.images[0].size == (2 * W, 2 * H)
    first = math.ceil(len(build_plan(parse_preset(config), W, H).tiles.tiles) / 2)
    hires = math.ceil(len(build_plan(parse_preset(config), 2 * W, 2 * H).tiles.tiles) / 2)
    assert len(adapter_calls) == 3 * first + 2 * hires
    assert {tuple(h.shape) for h in adapter_calls} == {(4, 3, 96, 96)}  # 2 tiles x (cond, uncond), never a canvas
    network = cn_host[1].latest_network
    assert network is None or all(p.hr_hint_cond is None or p.hr_hint_cond.shape[-2:] == (2 * H, 2 * W)
                                  for p in network.control_params)


def test_the_upscale_workflow_feeds_the_upscaled_image_to_a_unit_without_its_own(cn_host, adapter_calls):
    """img2img upscale with a unit that has no control image: ControlNet takes the img2img image, which
    is the upscaled one, at the target size; every tile gets its crop of it."""
    import inprocess
    from PIL import Image

    _, cn_script, our_script = cn_host
    source = Image.fromarray(control_image()).resize((96, 64))
    config = {"version": 1, "tiles": TILES, "upscale": {"upscaler": "Lanczos", "width": W, "height": H}}
    res = inprocess.img2img([source], [(cn_script, [unit(image=None)]), (our_script, [True, json.dumps(config)])],
                            width=64, height=64, steps=3, denoising_strength=0.5, prompt="a landscape")
    assert res.images[0].size == (W, H)
    assert adapter_calls and {tuple(h.shape) for h in adapter_calls} == {(4, 3, 96, 96)}
    import numpy as np
    import torch
    from modules import images

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    upscaled = np.asarray(images.resize_image(0, source, W, H, upscaler_name="Lanczos").convert("RGB"))
    full = torch.from_numpy(upscaled.copy()).float().div(255).permute(2, 0, 1)[None]
    first = build_plan(parse_preset(config), W, H).tiles.tiles[:2]
    expected = torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width].expand(2, -1, -1, -1) for t in first])
    torch.testing.assert_close(adapter_calls[0], expected, atol=1 / 255, rtol=0)  # the upscaled image's crops


def crops_of(image, tiles, rows):
    import torch

    full = torch.from_numpy(image.copy()).float().div(255).permute(2, 0, 1)[None]
    return torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width].expand(rows, -1, -1, -1) for t in tiles])


@pytest.mark.parametrize("case", ["two units", "batch size 2", "long negative prompt"])
def test_row_layouts_two_units_batches_and_split_cond_uncond_calls(cn_host, adapter_calls, case):
    """Two units (two adapters: units of one model share its cached features in ControlNet itself):
    each gets its own image's crops. Batch size 2: each crop's 4 rows (cond x 2, uncond x 2) share its
    hint. A negative prompt longer than the prompt: the host calls the model for the cond rows and the
    uncond rows apart, each call tiled on its own, and each gets its crops' hints."""
    import torch

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = {"version": 1, "tiles": TILES}
    tiles = build_plan(parse_preset(config), W, H).tiles.tiles
    second = control_image()[::-1, ::-1].copy()
    units = [unit(), unit(image=second, model=ADAPTER + "-b")] if case == "two units" else [unit()]
    kw = {"batch size 2": dict(batch_size=2),
          "long negative prompt": dict(negative_prompt=", ".join(["blurry, grainy, washed out colours"] * 20))}.get(case, {})
    run(cn_host, units, config, **kw)
    rows = {"batch size 2": 4, "long negative prompt": 1}.get(case, 2)
    per_call = {"two units": 2, "long negative prompt": 2}.get(case, 1)  # adapter runs per call
    assert len(adapter_calls) == 3 * 3 * per_call
    first = adapter_calls[:per_call]
    if case == "two units":
        torch.testing.assert_close(first[0], crops_of(control_image(), tiles[:2], rows), atol=1 / 255, rtol=0)
        torch.testing.assert_close(first[1], crops_of(second, tiles[:2], rows), atol=1 / 255, rtol=0)
    elif case == "batch size 2":
        torch.testing.assert_close(first[0], crops_of(control_image(), tiles[:2], rows), atol=1 / 255, rtol=0)
    else:  # cond rows: tiles (0, 1), (2, 3), (4, 5); then uncond rows: the same
        for call in (0, 3):
            torch.testing.assert_close(adapter_calls[call], crops_of(control_image(), tiles[:2], rows),
                                       atol=1 / 255, rtol=0)


def upscale_job(cn_host, units, upscale):
    import inprocess
    from PIL import Image

    _, cn_script, our_script = cn_host
    config = {"version": 1, "tiles": TILES, "upscale": dict({"upscaler": "Lanczos", "width": W, "height": H}, **upscale)}
    source = Image.fromarray(control_image()).resize((96, 64))
    return inprocess.img2img([source], [(cn_script, list(units)), (our_script, [True, json.dumps(config)])],
                             width=64, height=64, steps=3, denoising_strength=0.5, prompt="a landscape", seed=4)


def test_the_controlnet_tile_field_adds_one_tile_unit_fed_the_upscaled_image(cn_host, adapter_calls):
    """upscale.controlnet_tile "auto": the job gets one more unit (the installed tile model,
    tile_resample, weight 1, no image) through ControlNet's own API: the same image as that unit made
    by hand, recorded by ControlNet's infotext and ours; with such a unit already there, nothing is
    added (a pasted infotext has both)."""
    import numpy as np

    from modules import infotext_utils

    from lib_mixture_webui import controlnet_tile

    model = controlnet_tile.resolve("auto")  # ControlNet's spelling "name [hash]": one entry in its model cache
    assert model.startswith(TILE_ADAPTER + " [")
    hand = unit(image=None, model=model, module="tile_resample", threshold_a=1.0, pixel_perfect=True,
                resize_mode="Crop and Resize")
    # ControlNet's first job with a model differs from its later ones (seen without this extension too)
    upscale_job(cn_host, [hand], {})
    del adapter_calls[:]
    by_hand = upscale_job(cn_host, [hand], {})
    calls_by_hand = len(adapter_calls)
    by_field = upscale_job(cn_host, [unit(enabled=False)], {"controlnet_tile": "auto"})
    assert np.array_equal(pixels(by_field.images[0]), pixels(by_hand.images[0]))
    assert len(adapter_calls) == 2 * calls_by_hand > 0  # one unit: the adapter runs once per host call
    params = infotext_utils.parse_generation_parameters(by_field.infotexts[0])
    assert json.loads(params["Mixture of Diffusers"])["upscale"]["controlnet_tile"] == "auto"
    assert "Module: tile_resample" in params["ControlNet 0"] and TILE_ADAPTER in params["ControlNet 0"]
    both = upscale_job(cn_host, [hand], {"controlnet_tile": "auto"})
    assert len(adapter_calls) == 3 * calls_by_hand  # the unit of the same model stays the only one
    assert np.array_equal(pixels(both.images[0]), pixels(by_hand.images[0]))
    beside = upscale_job(cn_host, [unit(image=None)], {"controlnet_tile": TILE_ADAPTER})
    assert len(adapter_calls) == 3 * calls_by_hand + 2 * calls_by_hand  # the user's unit and the tile unit
    assert np.abs(pixels(beside.images[0]) - pixels(by_hand.images[0])).mean() > 0.5


@pytest.mark.parametrize("name, message", [
    ("no-such-model", r"upscale\.controlnet_tile: no ControlNet model named 'no-such-model'; installed: .*tiny-tile-adapter"),
    (SDXL_TILE, r"upscale\.controlnet_tile: a-tile-adapter-sdxl \[\w+\] is a ControlNet model for another model family "
                r"than the loaded checkpoint \(SD1x\)"),
])
def test_the_controlnet_tile_field_names_a_missing_or_unfit_model_before_any_step(cn_host, name, message):
    import inprocess

    with inprocess.cfg_calls() as steps:
        with pytest.raises(Exception, match=message):
            upscale_job(cn_host, [unit(enabled=False)], {"controlnet_tile": name})
    assert steps == []


def test_the_panel_shows_the_controlnet_tile_button_with_a_tile_model_installed(cn_host):
    import gradio as gr

    from lib_mixture_webui import panel

    with gr.Blocks() as demo:
        panel.build(True)
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert by_id["mod_img2img_up4kcn"].visible is True and by_id["mod_img2img_up4kcn"].value == "4K + ControlNet tile"
