"""Mixture of Diffusers with a real-width ControlNet in the real WebUI's process.

The tiny checkpoint cannot carry a ControlNet (ControlNet's SD 1.x layout is fixed at 320 channels),
so this module builds a random-weight checkpoint with the full SD 1.5 architecture, a full-width
random ControlNet and, for its IP-Adapter test, a random IP-Adapter and CLIP-H image encoder
(`full_width`: about 8.1 GB written to a temporary folder, two minutes to build), loads them in the
booted WebUI and runs small canvases (256x192 px) on the CPU: about 15 minutes in all.

Opt-in (``MOD_FULL_WIDTH=1``), in its own process, with a ControlNet checkout (sd-webui-controlnet,
the 2024-07 HEAD, with ``controlnet_aux`` and ``matplotlib`` in the WebUI's venv):

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_DIR=$PWD MOD_WEBUI_INPROCESS=1 MOD_FULL_WIDTH=1 \\
        MOD_CONTROLNET_DIR=/path/to/sd-webui-controlnet \\
        venv/bin/python -m pytest -p no:cacheprovider /path/to/repo/tests/webui/test_controlnet_full_inprocess.py
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

import launcher  # tests/webui is on sys.path (conftest.py)

pytestmark = [
    *launcher.inprocess_skips(),
    *launcher.controlnet_skips(),
    pytest.mark.skipif(os.environ.get("MOD_FULL_WIDTH") != "1",
                       reason="slow: set MOD_FULL_WIDTH=1 to build and run the full-width SD 1.5 and ControlNet "
                              "(8.1 GB in a temporary folder, about 15 minutes on 2 cores)"),
]

W, H = 256, 192  # latent 32 x 24
TILES = {"width": 128, "height": 128, "overlap": 64, "batch_size": 2}  # 3 x 2 tiles, 3 calls a step
STEPS = 3


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The WebUI booted with ControlNet and this extension loaded as extensions, then switched to
    the full-width checkpoint, with the full-width ControlNet in its models folder."""
    import full_width
    import inprocess

    found = launcher.boot_with_controlnet(tmp_path_factory, ROOT)
    models = Path(sys.modules["modules.paths"].models_path) / "ControlNet"
    full_width.build_controlnet(models / f"{full_width.CONTROLNET_NAME}.safetensors")
    sys.modules["scripts.global_state"].update_cn_models()
    model = inprocess.load_checkpoint(full_width.build_sd15(tmp_path_factory.mktemp("cn-full-ckpt")))
    assert model.is_sd1 and model.model.diffusion_model.model_channels == 320
    return found["ControlNet"], found["Mixture of Diffusers"]


def control_image(w=W, h=H):
    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 255) // (w - 1), (y * 255) // (h - 1), ((x // 32 + y // 32) % 2) * 255], axis=-1)
    return rgb.astype("uint8")


def unit(**kw):
    import full_width
    from internal_controlnet.external_code import ControlNetUnit

    fields = dict(enabled=True, module="none", model=full_width.CONTROLNET_NAME, image=control_image(), weight=1.0,
                  resize_mode="Just Resize", pixel_perfect=False)
    fields.update(kw)
    return ControlNetUnit(**fields)


def run(host, units=(), config=None, enabled=True, **kw):
    import inprocess

    cn_script, our_script = host
    scripts_with_args = [(cn_script, list(units) or [unit(enabled=False)])]
    if config is not None:
        scripts_with_args.append((our_script, [enabled, json.dumps(config)]))
    kw = {"width": W, "height": H, "steps": STEPS, "seed": 5, "prompt": "a castle on a hill", **kw}
    return inprocess.txt2img(scripts_with_args, **kw)


def pixels(image):
    import numpy as np

    return np.asarray(image).astype("int16")


@pytest.fixture
def control_calls(host):
    """Every ControlNet forward: ``(model, x, hint, timesteps, context, residuals)``, and the units' full
    control images as ControlNet holds them at the first model call of the job (``full``)."""
    from modules import script_callbacks

    cldm = sys.modules["scripts.cldm"]
    real = cldm.ControlNet.forward
    calls = type("ControlCalls", (list,), {})()
    full = calls.full = []

    def record(self, x, hint, timesteps, context, *args, **kwargs):
        out = real(self, x, hint, timesteps, context, *args, **kwargs)
        calls.append((self, x.detach().clone(), hint.detach().clone(), timesteps.detach().clone(),
                      context.detach().clone(), [o.detach().clone() for o in out]))
        return out

    def first_call(params):
        network = host[0].latest_network
        if not full and network is not None:
            full.extend(p.hint_cond.detach().clone() for p in network.control_params)
    cldm.ControlNet.forward = record
    script_callbacks.on_cfg_denoiser(first_call)
    try:
        yield calls
    finally:
        cldm.ControlNet.forward = real
        script_callbacks.remove_callbacks_for_function(first_call)


def box_crops(full, tiles, rows):
    import torch

    return torch.cat([full[..., t.y:t.y + t.height, t.x:t.x + t.width].expand(rows, -1, -1, -1) for t in tiles])


def test_controlnet_acts_and_one_crop_covering_the_canvas_is_the_webui_bit_for_bit(host):
    import numpy as np

    bare = run(host)
    controlled = run(host, [unit(module="canny", threshold_a=100, threshold_b=200)])
    assert np.isfinite(pixels(controlled.images[0])).all()
    assert np.abs(pixels(bare.images[0]) - pixels(controlled.images[0])).mean() > 0.5  # the ControlNet acts
    off = run(host, [unit(module="canny", threshold_a=100, threshold_b=200)], {"version": 1, "tiles": TILES},
              enabled=False)
    assert np.array_equal(pixels(off.images[0]), pixels(controlled.images[0]))
    one = run(host, [unit(module="canny", threshold_a=100, threshold_b=200)],
              {"version": 1, "tiles": dict(TILES, width=W, height=H)})
    assert np.array_equal(pixels(one.images[0]), pixels(controlled.images[0]))


@pytest.mark.parametrize("case", ["one unit", "two units", "batch size 2"])
def test_each_crop_gets_the_residuals_of_its_own_hint_once_per_host_call(host, control_calls, case):
    """Each call's ControlNet input rows are the call's crops' boxes of the control image (crop-major,
    each crop's cond and uncond rows), and the residuals of a crop's rows equal those ControlNet
    computes from that crop's hint alone; ControlNet runs once per host call and unit."""
    import torch

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = {"version": 1, "tiles": TILES}
    tiles = build_plan(parse_preset(config), W, H).tiles.tiles
    second = control_image()[::-1].copy()
    units = [unit(), unit(image=second)] if case == "two units" else [unit()]
    res = run(host, units, config, **({"batch_size": 2} if case == "batch size 2" else {}))
    assert res.images[0].size == (W, H)
    n_units, rows = len(units), 4 if case == "batch size 2" else 2
    per_step = math.ceil(len(tiles) / TILES["batch_size"])
    assert len(control_calls) == STEPS * per_step * n_units
    assert len(control_calls.full) == n_units and all(f.shape[-2:] == (H, W) for f in control_calls.full)
    real = sys.modules["scripts.cldm"].ControlNet.forward
    for call in range(per_step):  # the first step's calls: unit after unit within a host call
        specs = tiles[call * 2:call * 2 + 2]
        for u in range(n_units):
            model, x, hint, t, ctx, out = control_calls[call * n_units + u]
            torch.testing.assert_close(hint, box_crops(control_calls.full[u], specs, rows), atol=0, rtol=0)
            for k, spec in enumerate(specs):  # the crop's rows alone, its own hint alone
                r = slice(k * rows, (k + 1) * rows)
                alone = real(model, x[r], box_crops(control_calls.full[u], [spec], rows), t[r], ctx[r])
                for got, want in zip(out, alone):
                    torch.testing.assert_close(got[r], want, atol=1e-4, rtol=1e-4)


def test_regions_with_a_canny_unit_each_crop_its_own_canny_map(host, control_calls):
    """Composition with a canny unit: two regions, each crop (one a host call) gets the canny map's
    crop; the regions change the image."""
    import numpy as np

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    regions = [{"x": 0, "y": 0, "width": 128, "height": 192, "prompt": "a red barn", "cfg_scale": 5},
               {"x": 128, "y": 0, "width": 128, "height": 192, "prompt": "a stone tower"}]
    config = {"version": 1, "regions": regions}
    canny = unit(module="canny", threshold_a=50, threshold_b=120)
    plain = run(host, [canny])
    full = control_calls.full[0]  # the whole canny map (with regions the host's callback sees a crop's)
    del control_calls[:]
    res = run(host, [canny], config)
    crops = build_plan(parse_preset(config), W, H).crops()
    assert len(control_calls) == STEPS * len(crops)
    assert set(np.unique(full.numpy())) <= {0.0, 1.0} and 0 < float(full.mean()) < 1  # an edge map
    for (_, x, hint, *_), crop in zip(control_calls, crops):
        b = crop.box
        assert tuple(hint.shape[-2:]) == (b.height * 8, b.width * 8) and hint.shape[0] == 1
        assert np.array_equal(hint[0].numpy(), full[0, :, b.y * 8:b.bottom * 8, b.x * 8:b.right * 8].numpy())
    assert np.abs(pixels(res.images[0]) - pixels(plain.images[0])).mean() > 0.5


def test_controlnet_tile_upscale_feeds_the_upscaled_image_to_every_tile(host, control_calls):
    """The upscale workflow: a 128x96 photo upscaled to 256x192 by the host's upscaler, a tile_resample
    unit without an image of its own: ControlNet's control image is the upscaled image, each tile
    gets its crop. ``upscale.controlnet_tile: auto`` adds that unit itself: the same image. An
    interrupt leaves the next job bit-identical."""
    import inprocess
    import numpy as np
    import torch
    from modules import images, infotext_utils
    from PIL import Image

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    cn_script, our_script = host
    source = Image.fromarray(control_image()).resize((W // 2, H // 2))
    section = {"upscaler": "Lanczos", "width": W, "height": H}
    from lib_mixture_webui import controlnet_tile

    # ControlNet's spelling "name [hash]" of the model, as the field's unit has it: one entry in its model cache
    tile_unit = unit(image=None, model=controlnet_tile.resolve("auto"), module="tile_resample", threshold_a=1.0,
                     pixel_perfect=True, resize_mode="Crop and Resize")

    def upscale(units, **field):
        config = {"version": 1, "tiles": TILES, "upscale": dict(section, **field)}
        return inprocess.img2img([source], [(cn_script, units), (our_script, [True, json.dumps(config)])],
                                 width=64, height=64, steps=STEPS, denoising_strength=0.5, prompt="a photo", seed=3)
    upscale([tile_unit])  # ControlNet's first job with a model differs from its later ones, also alone
    del control_calls[:], control_calls.full[:]
    res = upscale([tile_unit])
    assert res.images[0].size == (W, H)
    assert "Mixture of Diffusers: " in res.infotexts[0] and "upscale" in res.infotexts[0]
    upscaled = np.asarray(images.resize_image(0, source, W, H, upscaler_name="Lanczos").convert("RGB"))
    expected_full = torch.from_numpy(upscaled.copy()).float().div(255).permute(2, 0, 1)[None]
    torch.testing.assert_close(control_calls.full[0], expected_full, atol=1 / 255, rtol=0)
    tiles = build_plan(parse_preset({"version": 1, "tiles": TILES}), W, H).tiles.tiles
    torch.testing.assert_close(control_calls[0][2], box_crops(control_calls.full[0], tiles[:2], 2), atol=0, rtol=0)
    by_field = upscale([unit(enabled=False)], controlnet_tile="auto")
    assert np.array_equal(pixels(by_field.images[0]), pixels(res.images[0]))
    params = infotext_utils.parse_generation_parameters(by_field.infotexts[0])
    assert json.loads(params["Mixture of Diffusers"])["upscale"]["controlnet_tile"] == "auto"
    assert "Module: tile_resample" in params["ControlNet 0"]
    with inprocess.cfg_calls(interrupt_at=2) as count:
        stopped = upscale([tile_unit])
    assert stopped.images[0].size == (W, H) and len(count) == 2
    assert np.array_equal(pixels(upscale([tile_unit]).images[0]), pixels(res.images[0]))


@pytest.fixture(scope="module")
def ip_adapter(host, tmp_path_factory):
    """A random IP-Adapter for SD 1.5 in ControlNet's models folder and a random CLIP-H image encoder
    where its ip-adapter_clip_sd15 preprocessor looks (3 GB more; nothing downloaded)."""
    import full_width

    models = Path(sys.modules["modules.paths"].models_path) / "ControlNet"
    full_width.build_ip_adapter(models / f"{full_width.IP_ADAPTER_NAME}.safetensors")
    full_width.build_clip_vision_h(tmp_path_factory.mktemp("annotator-models"))
    sys.modules["scripts.global_state"].update_cn_models()
    return unit(module="ip-adapter_clip_sd15", model=full_width.IP_ADAPTER_NAME, image=control_image()[::-1].copy())


def test_an_ip_adapter_conditions_every_crop_alike_with_tiles_and_regions(host, ip_adapter):
    """IP-Adapter (an image prompt, nothing to crop) works: it changes the image; one tile covering
    the canvas is the WebUI with it bit for bit; with tiles, and with regions beside a canny unit
    (every call's rows marked cond / uncond, as its attention needs), it acts on every crop."""
    import numpy as np

    hook = sys.modules["scripts.hook"]
    bare = run(host)
    with_ip = run(host, [ip_adapter])
    assert np.abs(pixels(bare.images[0]) - pixels(with_ip.images[0])).mean() > 0.5
    one = run(host, [ip_adapter], {"version": 1, "tiles": dict(TILES, width=W, height=H)})
    assert np.array_equal(pixels(one.images[0]), pixels(with_ip.images[0]))
    tiles = run(host, [ip_adapter], {"version": 1, "tiles": TILES})
    plain_tiles = run(host, [], {"version": 1, "tiles": TILES})
    assert np.abs(pixels(tiles.images[0]) - pixels(plain_tiles.images[0])).mean() > 0.5
    marked, real_unmark = [], hook.unmark_prompt_context

    def unmark(x):
        marked.append(hook.prompt_context_is_marked(x))
        return real_unmark(x)
    regions = [{"x": 0, "y": 0, "width": 128, "height": 192, "prompt": "a red barn", "cfg_scale": 5},
               {"x": 128, "y": 0, "width": 128, "height": 192, "prompt": "a stone tower"}]
    hook.unmark_prompt_context = unmark
    try:
        res = run(host, [ip_adapter, unit(module="canny", threshold_a=50, threshold_b=120)],
                  {"version": 1, "regions": regions})
    finally:
        hook.unmark_prompt_context = real_unmark
    assert res.images[0].size == (W, H) and np.isfinite(pixels(res.images[0])).all()
    assert marked and all(marked)
