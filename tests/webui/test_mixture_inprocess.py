"""The extension inside the real WebUI's Python process: its CFGDenoiser, samplers and model.

Skipped unless MOD_WEBUI_DIR names a WebUI v1.10.1 checkout with its venv and
MOD_WEBUI_INPROCESS=1 (the WebUI patches torch at import: run these alone, with its python):

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_INPROCESS=1 venv/bin/python -m pytest -p no:cacheprovider \\
        /path/to/repo/tests/webui/test_mixture_inprocess.py
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

import launcher  # tests/webui is on sys.path (conftest.py)

pytestmark = launcher.inprocess_skips()

W, H = 192, 128  # latent 24 x 16
TILES = {"width": 96, "height": 96, "overlap": 32, "batch_size": 2}
THREE_REGIONS = [
    {"x": 0, "y": 0, "width": 80, "height": 128, "prompt": "a red barn", "cfg_scale": 4},
    {"x": 56, "y": 0, "width": 80, "height": 128, "prompt": "a dirt road", "negative_prompt": "cars, trucks",
     "cfg_scale": 9},
    {"x": 112, "y": 0, "width": 80, "height": 128, "prompt": "a giant robot", "prompt_mode": "append",
     "weight": 2},
]


@pytest.fixture
def unet_calls(host):
    """Counts the host's CFG forward calls (one on_cfg_denoiser callback each), with their latent sizes."""
    from modules import script_callbacks

    seen = []

    def count(params):
        seen.append(tuple(params.x.shape[-2:]))
    script_callbacks.on_cfg_denoiser(count)
    yield seen
    script_callbacks.remove_callbacks_for_function(count)


def run(script=None, config=None, enabled=True, **kw):
    import inprocess

    kw = {"width": W, "height": H, "steps": 3, "seed": 11, "prompt": "a landscape", **kw}
    args = [] if script is None else [(script, [enabled, json.dumps(config) if isinstance(config, dict) else config])]
    return inprocess.txt2img(args, **kw)


def pixels(image):
    import numpy as np

    return np.asarray(image).astype("int16")


def preset(**fields):
    return {"version": 1, **fields}


def test_one_region_covering_the_canvas_is_bit_identical_to_the_plain_webui(script):
    import numpy as np

    plain = run()
    mixed = run(script, preset(regions=[{"x": 0, "y": 0, "width": W, "height": H}]))
    assert np.array_equal(pixels(plain.images[0]), pixels(mixed.images[0]))
    assert "Mixture of Diffusers" in mixed.infotexts[0]


def test_disabled_costs_nothing_and_changes_nothing(script, unet_calls):
    import numpy as np

    plain = run()
    calls_plain = len(unet_calls)
    off = run(script, preset(tiles=TILES), enabled=False)
    assert np.array_equal(pixels(plain.images[0]), pixels(off.images[0]))
    assert len(unet_calls) == 2 * calls_plain
    assert "Mixture of Diffusers" not in off.infotexts[0]


@pytest.fixture
def model_calls(host):
    """The latent size of every UNet call."""
    from modules import shared

    seen = []
    handle = shared.sd_model.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    yield seen
    handle.remove()


def test_model_calls_per_step_are_ceil_crops_over_batch(script, unet_calls, model_calls):
    """A tile grid: the host's CFG forward runs once per step on the canvas, as without the
    extension; its UNet call is split into ceil(crops / batch) calls on tiles."""
    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = preset(tiles=TILES)
    plan = build_plan(parse_preset(config), W, H)
    res = run(script, config)
    assert res.images[0].size == (W, H)
    per_step = math.ceil(len(plan.tiles.tiles) / TILES["batch_size"])
    assert len(plan.tiles.tiles) == 6 and per_step == 3 == plan.model_calls_per_step
    assert unet_calls == [(H // 8, W // 8)] * 3  # one host forward per step, on the canvas
    assert model_calls == [(12, 12)] * (3 * per_step)  # every UNet call sees tiles, never the canvas


def test_regions_take_one_host_call_per_batch(script, unet_calls, model_calls):
    """Regions have their own conds and scales: each batch of crops goes through the host's forward."""
    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = preset(tiles=TILES, regions=THREE_REGIONS)
    calls = build_plan(parse_preset(config), W, H).model_calls_per_step
    run(script, config)
    assert len(unet_calls) == len(model_calls) == 3 * calls
    assert (H // 8, W // 8) not in set(model_calls)


SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "Heun", "DPM++ SDE", "DDIM", "PLMS", "UniPC", "LCM"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_family_with_tiles_and_three_regions(script, sampler):
    import numpy as np

    res = run(script, preset(tiles=TILES, regions=THREE_REGIONS), sampler_name=sampler)
    image = pixels(res.images[0])
    assert res.images[0].size == (W, H) and image.std() > 0
    assert np.isfinite(image).all()
    assert "Mixture of Diffusers" in res.infotexts[0]


def test_infotext_round_trip_restores_the_configuration(script):
    from modules import infotext_utils

    from lib_mixture.preset import parse_preset
    from lib_mixture_webui.args import pasted_config, read_args

    config = preset(tiles=TILES, regions=THREE_REGIONS, passes="first")
    res = run(script, config)
    params = infotext_utils.parse_generation_parameters(res.infotexts[0])
    enabled, restored = read_args([True, pasted_config(params)])
    expected = parse_preset(config)
    assert restored.regions == expected.regions and restored.tiles == expected.tiles
    assert restored.passes == "first" and restored.canvas.width == W  # the canvas the boxes refer to


def test_hires_pass_is_tiled_at_the_hires_size(script, unet_calls):
    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    config = preset(tiles=TILES, regions=THREE_REGIONS[:1], canvas={"width": W, "height": H})
    res = run(script, config, enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
              hr_second_pass_steps=4)
    assert res.images[0].size == (2 * W, 2 * H)
    first = build_plan(parse_preset(config), W, H)
    hires = build_plan(parse_preset(config), 2 * W, 2 * H)
    assert hires.regions[0].box.as_list() == [0, 0, 160, 256]  # the region scaled to the hires canvas
    first_calls, hires_calls = unet_calls[:3 * first.model_calls_per_step], unet_calls[3 * first.model_calls_per_step:]
    assert set(first_calls) == {(12, 12), (16, 10)}
    assert hires_calls and len(hires_calls) % hires.model_calls_per_step == 0
    assert set(hires_calls) == {(12, 12), (32, 20)}  # tiles and the region, never the 32x48 canvas


def test_img2img_with_an_inpainting_mask(script):
    import inprocess
    from PIL import Image

    init = run().images[0]
    mask = Image.new("L", (W, H), 0)
    mask.paste(255, (64, 32, 160, 96))
    res = inprocess.img2img([init], [(script, [True, json.dumps(preset(tiles=TILES, regions=THREE_REGIONS))])],
                            width=W, height=H, steps=3, mask=mask, denoising_strength=0.8, inpaint_full_res=False)
    out = pixels(res.images[0])
    assert res.images[0].size == (W, H)
    # Outside the mask the image is the original (the WebUI pastes it back).
    assert abs(out[:20, :40] - pixels(init)[:20, :40]).mean() < 3


def test_interrupt_mid_job_returns_a_full_size_image_and_the_next_job_is_unaffected(script):
    import numpy as np
    import inprocess

    config = preset(tiles=TILES)
    reference = run(script, config)
    with inprocess.cfg_calls(interrupt_at=3) as count:
        stopped = run(script, config)
    assert stopped.images[0].size == (W, H)
    assert len(count) == 3
    again = run(script, config)
    assert np.array_equal(pixels(again.images[0]), pixels(reference.images[0]))


def test_a_bad_configuration_stops_the_job_with_a_message_naming_the_field(script):
    bad = preset(regions=[{"x": 0, "y": 0, "width": 64, "height": 64, "cfg_scale": -3}])
    with pytest.raises(Exception, match=r"regions\[0\]\.cfg_scale: -3 is out of range"):
        run(script, bad)
    uncovered = preset(regions=[{"x": 0, "y": 0, "width": 64, "height": 64}])
    with pytest.raises(Exception, match="covered by no region"):
        run(script, uncovered)


def test_lora_tags_in_region_prompts_are_removed_with_a_warning(script):
    regions = [{**THREE_REGIONS[0], "prompt": "a red barn <lora:barnstyle:0.8>"}, *THREE_REGIONS[1:]]
    res = run(script, preset(tiles=TILES, regions=regions))
    assert "Mixture of Diffusers warnings" in res.infotexts[0]
    assert "lora:barnstyle" in res.infotexts[0]


def test_hypertile_splits_attention_with_each_crops_own_aspect_ratio(script, host):
    """The built-in Hypertile is configured with the canvas's aspect ratio; a crop has its own,
    and a wrong one makes Hypertile cut the crop's tokens into the wrong grid."""
    from modules import script_callbacks, shared

    sys.path.insert(0, str(Path(os.environ["MOD_WEBUI_DIR"]) / "extensions-builtin" / "hypertile"))
    import hypertile

    model = shared.sd_model.model
    hypertile.hypertile_hook_model(model, W, H, enable=True, swap_size=1, max_depth=3, tile_size_max=128)
    params = [getattr(m, "__webui_hypertile_params") for name, m in model.named_modules()
              if name in getattr(model, "__webui_hypertile_layers")]
    seen = []

    def record(p):
        seen.append((tuple(p.x.shape[-2:]), {round(q.aspect_ratio, 4) for q in params}))
    script_callbacks.on_cfg_denoiser(record)
    try:
        regions = [{"x": 0, "y": 0, "width": 64, "height": 128, "prompt": "a tall tower"}]
        res = run(script, preset(tiles={"width": 128, "height": 96, "overlap": 32, "batch_size": 4}, regions=regions))
    finally:
        script_callbacks.remove_callbacks_for_function(record)
        hypertile.hypertile_hook_model(model, W, H, enable=False)
    assert res.images[0].size == (W, H)
    for (h, w), aspects in seen:
        assert aspects == {round(w / h, 4)}  # the crop's own, not the canvas's 1.5
    assert {round(w / h, 4) for (h, w), _ in seen} == {round(16 / 12, 4), 0.5}
    assert {round(q.aspect_ratio, 4) for q in params} == {1.5}  # the canvas's again afterwards


def test_region_seed_replaces_the_initial_noise_inside_its_box_only(script):
    from modules import rng, script_callbacks

    captured = []

    def grab(params):
        if not captured:
            captured.append(params.denoiser.p._mod.noise.initial[False].clone())
    script_callbacks.on_cfg_denoiser(grab)
    try:
        regions = [{"x": 64, "y": 32, "width": 64, "height": 64, "prompt": "a lake", "seed": 1234}]
        run(script, preset(tiles=TILES, regions=regions), seed=11, batch_size=2)
    finally:
        script_callbacks.remove_callbacks_for_function(grab)
    noise = captured[0]
    main = rng.ImageRNG(noise.shape[1:], [11, 12]).next()
    own = rng.ImageRNG(noise.shape[1:], [1234, 1235]).next()  # region seed + image index
    inside = (slice(None), slice(None), slice(4, 12), slice(8, 16))
    assert torch_equal(noise[inside], own[inside])
    outside = noise.clone()
    outside[inside] = main[inside]
    assert torch_equal(outside, main)


def torch_equal(a, b):
    import torch

    return torch.equal(a.cpu(), b.cpu())


def test_refiner_switch_mid_job_reencodes_region_conds(script, tmp_path_factory):
    import shutil

    import tiny_checkpoint
    from modules import sd_models, shared

    from lib_mixture_webui import patches

    base_info = shared.sd_model.sd_checkpoint_info
    folder = Path(sd_models.model_path)
    folder.mkdir(parents=True, exist_ok=True)
    built = tiny_checkpoint.build_tiny_checkpoint(tmp_path_factory.mktemp("refiner"), seed=99, name="tiny-refiner")
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(built.with_suffix(suffix), folder / f"tiny-refiner{suffix}")
    sd_models.list_models()
    cache = patches.installed().conds
    cache.clear()
    try:
        res = run(script, preset(tiles=TILES, regions=THREE_REGIONS), steps=4, refiner_checkpoint="tiny-refiner",
                  refiner_switch_at=0.5)
        assert res.images[0].size == (W, H)
        assert "Refiner: tiny-refiner" in res.infotexts[0]
        checkpoints = {key[0][5] for key in cache.keys()}  # cached_params: the checkpoint info
        assert len(checkpoints) == 2  # region conds encoded by the base model, then by the refiner
    finally:
        sd_models.reload_model_weights(info=base_info)


# ------------------------------------------------------------------ upscale workflow and tiled VAE


def img2img(script, init, config, **kw):
    import inprocess

    kw = {"width": W, "height": H, "steps": 4, "seed": 5, "prompt": "a landscape", "denoising_strength": 0.4, **kw}
    return inprocess.img2img([init], [(script, [True, json.dumps(config)])], **kw)


def source(w, h):
    from PIL import Image

    return run(width=w, height=h).images[0]


def vae_active():
    from lib_mixture_webui import patches

    return patches.installed().vae_route()


def test_upscale_uses_the_host_upscaler_and_the_tile_grid(script, model_calls, monkeypatch):
    from modules import images, infotext_utils

    from lib_mixture_webui.args import pasted_config, read_args

    init = source(96, 64)
    seen = []
    real_resize = images.resize_image

    def spy(mode, im, width, height, upscaler_name=None):
        seen.append((im.size, (width, height), upscaler_name))
        return real_resize(mode, im, width, height, upscaler_name=upscaler_name)
    monkeypatch.setattr(images, "resize_image", spy)
    config = preset(tiles=TILES, upscale={"upscaler": "nearest", "width": W, "height": H, "fit": "pad"})
    del model_calls[:]
    res = img2img(script, init, config, width=64, height=64)  # the UI's size is replaced by the target
    assert res.images[0].size == (W, H)
    # 96x64 (3:2) padded into 192x128 (3:2) is exact; the host's upscaler by its own spelling
    assert seen[0] == ((96, 64), (W, H), "Nearest")
    assert model_calls and set(model_calls) == {(12, 12)}  # tiles only, never the 24x16 canvas
    params = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert params["Size-1"] == str(W) and params["Size-2"] == str(H)
    _, restored = read_args([True, pasted_config(params)])
    assert restored.upscale.upscaler == "nearest" and restored.upscale.fit == "pad"


def test_upscale_with_a_whole_canvas_guide_pins_the_image(script, monkeypatch):
    from modules import processing

    latents = {}
    real_encode, real_decode = processing.images_tensor_to_samples, processing.decode_latent_batch

    def encode(*args, **kw):
        latents["init"] = real_encode(*args, **kw)
        return latents["init"]

    def decode(model, batch, *args, **kw):
        latents["final"] = batch.clone()
        return real_decode(model, batch, *args, **kw)
    monkeypatch.setattr(processing, "images_tensor_to_samples", encode)
    monkeypatch.setattr(processing, "decode_latent_batch", decode)

    def distance(config):
        img2img(script, source(96, 64), config, denoising_strength=0.9)
        return (latents["final"] - latents["init"]).abs().mean().item()
    base = preset(tiles=TILES, upscale={"upscaler": "Lanczos", "scale": 2})
    free = distance(base)
    guided = distance({**base, "upscale": {**base["upscale"], "guide_strength": 1.0}})
    half = distance({**base, "upscale": {**base["upscale"], "guide_strength": 0.5}})
    # enforced at every call the result stays by the upscaled image; unguided it drifts away
    assert guided < 0.25 * free and guided < half < free


@pytest.mark.parametrize("upscale, message", [
    ({"upscaler": "R-ESRGAN 9x"}, r"upscale\.upscaler: no upscaler named 'R-ESRGAN 9x'.*available: .*Lanczos"),
    ({"scale": 16}, r"upscale\.scale: 16 takes this 1100x64 image to 17600x1024.*allows scales from 1 to 14\.89"),
    ({"scale": 0}, r"upscale\.scale: 0 is out of range; allowed \(0\.0, 16\.0\]"),
    ({"scale": -2}, r"upscale\.scale: -2 is out of range"),
    ({"controlnet_tile": "auto"}, r"upscale\.controlnet_tile: sd-webui-controlnet is not installed or not enabled"),
])
def test_bad_upscale_input_stops_the_job_naming_the_field(script, upscale, message):
    from PIL import Image

    with pytest.raises(Exception, match=message):
        img2img(script, Image.new("RGB", (1100, 64), "gray"), preset(tiles=TILES, upscale=upscale), width=64, height=64)
    assert vae_active() is None


def test_tiled_vae_matches_the_plain_vae_in_encode_and_decode(script):
    import numpy as np

    import torch

    init = source(W, H)
    torch.manual_seed(3)  # the host samples the encoder's posterior with torch's global generator
    plain = img2img(script, init, preset(tiles=TILES, vae={"tiling": "off"}))
    torch.manual_seed(3)
    tiled = img2img(script, init, preset(tiles=TILES, vae={"tiling": "on", "tile": 64}))
    log = script_log()
    modes = {entry["mode"]: entry["tiles"] for entry in log}
    assert modes.get("encode", 0) > 1 and modes.get("decode", 0) > 1  # 64 px tiles on 192x128
    diff = np.abs(pixels(tiled.images[0]) - pixels(plain.images[0]))
    assert diff.max() <= 2 and diff.mean() < 0.05  # exact GroupNorm statistics: rounding only
    assert vae_active() is None


def script_log():
    from lib_mixture_webui import patches

    return patches.installed().last_vae_log


def test_tiled_vae_auto_leaves_images_that_fit_bit_identical(script):
    import numpy as np

    off = run(script, preset(tiles=TILES, vae={"tiling": "off"}))
    auto = run(script, preset(tiles=TILES))
    assert np.array_equal(pixels(off.images[0]), pixels(auto.images[0]))
    assert script_log() == []


def test_the_tiled_vae_fits_its_tiles_and_stash_to_the_memory_budget(script, monkeypatch):
    """With half the memory the plain decode needs (the free memory faked) and the tile left to
    it: the job's decode is tiled, keeps activations on the device within the budget, and gives
    the plain VAE's image up to rounding."""
    import numpy as np
    from modules import shared

    from lib_mixture.tiled_vae import execute, plan_tiled_vae
    from lib_mixture_webui import vae as host_vae

    plain = run(script, preset(tiles=TILES, vae={"tiling": "off"}))
    decoder = shared.sd_model.first_stage_model.decoder
    shape = (1, 4, H // 8, W // 8)
    whole = plan_tiled_vae(decoder, shape, "decode", tile_size=max(shape[-2:]))
    need = max(s["tile_bytes"] + s["out_bytes"] for s in whole)
    monkeypatch.setattr(host_vae, "free_memory", lambda device: need / 2 / host_vae.runtime.HOST_MEMORY_FRACTION)
    runs = []
    real = execute.Run
    monkeypatch.setattr(execute, "Run", lambda *a: runs.append(real(*a)) or runs[-1])
    tiled = run(script, preset(tiles=TILES, vae={"tiling": "on"}))
    cfg = runs[0].cfg
    assert cfg.stash_on_device and cfg.tile_size is None and cfg.memory_mib == max(1, -(-int(need / 2) // 2**20))
    stages = plan_tiled_vae(decoder, shape, "decode", config=cfg)
    assert any(s["tiles"] > 1 for s in stages) and script_log()[0]["mode"] == "decode"
    assert 0 < runs[0].stash_peak <= max(s["stash_bytes"] for s in stages)
    diff = np.abs(pixels(tiled.images[0]) - pixels(plain.images[0]))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_a_memory_cap_below_what_the_attention_needs_gives_the_attention_its_memory(script, monkeypatch, capfd):
    """The owner's cap leaves the VAE nothing (SDXL's weights above a small cap, say): the tiles
    shrink, the exact attention gets the memory it needs with a note, and the job gives the plain
    VAE's image; before, every tiled VAE call failed."""
    import numpy as np

    from lib_mixture.tiled_vae import execute
    from lib_mixture_webui import vae as host_vae

    plain = run(script, preset(tiles=TILES, vae={"tiling": "off"}))
    free = host_vae.memory_budget
    monkeypatch.setattr(host_vae, "memory_budget",
                        lambda device, share=None, capped=True: 0.0 if capped else free(device, share, False))
    runs = []
    real = execute.Run
    monkeypatch.setattr(execute, "Run", lambda *a: runs.append(real(*a)) or runs[-1])
    tiled = run(script, preset(tiles=TILES, vae={"tiling": "on"}))
    assert "for its attention, more than the 0.00 GiB the memory cap" in capfd.readouterr().out
    assert runs and runs[0].cfg.memory_mib >= 1
    diff = np.abs(pixels(tiled.images[0]) - pixels(plain.images[0]))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_the_owners_memory_cap_bounds_the_tiled_vae_on_the_cpu_too(script, monkeypatch):
    """Settings → Mixture of Diffusers caps the whole job: the VAE gets the cap less the model's
    weights, here half of what the plain decode needs, and tiles within it."""
    import numpy as np
    from modules import shared

    from lib_mixture.tiled_vae import execute, plan_tiled_vae
    from lib_mixture_webui import vae as host_vae

    plain = run(script, preset(tiles=TILES, vae={"tiling": "off"}))
    decoder = shared.sd_model.first_stage_model.decoder
    shape = (1, 4, H // 8, W // 8)
    need = max(s["tile_bytes"] + s["out_bytes"] for s in plan_tiled_vae(decoder, shape, "decode", tile_size=max(shape[-2:])))
    weights = host_vae.held_memory(decoder.conv_in.weight.device)
    assert weights > 0
    monkeypatch.setitem(shared.opts.data, "mod_auto_memory_gib", (weights + need / 2) / 2**30)
    runs = []
    real = execute.Run
    monkeypatch.setattr(execute, "Run", lambda *a: runs.append(real(*a)) or runs[-1])
    capped = run(script, preset(tiles=TILES))  # tiling "auto": the plain decode no longer fits
    assert runs and abs(runs[0].cfg.memory_mib * 2**20 - need / 2) <= 2**20
    assert script_log()[0]["mode"] == "decode" and script_log()[0]["tiles"] > 1
    diff = np.abs(pixels(capped.images[0]) - pixels(plain.images[0]))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_a_vae_tile_below_the_floor_is_raised_with_a_note(script, monkeypatch, capfd):
    """A tile that would make more tiles a pass than the tiled VAE takes (here a floor of 128 px
    stands in for a huge image) is raised to the floor, with a note, instead of failing after
    sampling."""
    from lib_mixture.tiled_vae import execute
    from lib_mixture_webui import vae as host_vae

    monkeypatch.setattr(host_vae, "tile_floor", lambda *a, **k: 16)
    runs = []
    real = execute.Run
    monkeypatch.setattr(execute, "Run", lambda *a: runs.append(real(*a)) or runs[-1])
    res = run(script, preset(tiles=TILES, vae={"tiling": "on", "tile": 64}))
    assert res.images and runs[0].cfg.tile_size == 16 and runs[0].cfg.min_tile_size == 16
    assert "vae.tile 64 px makes more than 4096 tiles a pass" in capfd.readouterr().out


def test_taesd_decode_is_tiled_when_the_user_chose_it(script, monkeypatch):
    import numpy as np
    import types
    from modules import devices, sd_vae_taesd, shared

    import torch

    torch.manual_seed(0)
    fake = types.SimpleNamespace(decoder=sd_vae_taesd.decoder().eval().to(devices.device, devices.dtype))
    monkeypatch.setitem(sd_vae_taesd.sd_vae_taesd_models, "taesd_decoder.pth", fake)
    monkeypatch.setitem(shared.opts.data, "sd_vae_decode_method", "TAESD")
    plain = run(script, preset(tiles=TILES, vae={"tiling": "off"}))
    tiled = run(script, preset(tiles=TILES, vae={"tiling": "on", "tile": 64}))
    assert [e["mode"] for e in script_log()] == ["decode"] and script_log()[0]["tiles"] > 1
    assert np.abs(pixels(tiled.images[0]) - pixels(plain.images[0])).max() <= 1


def test_a_failure_or_interrupt_in_the_tiled_vae_leaves_no_patch_behind(script, monkeypatch):
    import numpy as np
    from modules import shared

    from lib_mixture_webui import vae

    reference = run()
    config = preset(tiles=TILES, vae={"tiling": "on", "tile": 64})
    finished = run(script, config)
    real = vae.tiled_decode

    def interrupt_at_second_tile(module, x, on_progress=None, **kw):
        def progress(done, total):
            on_progress(done, total)
            if done == 2:
                shared.state.interrupted = True
        return real(module, x, on_progress=progress, **kw)
    monkeypatch.setattr(vae, "tiled_decode", interrupt_at_second_tile)
    try:  # as in the plain WebUI, a decode runs to its end: the sampled image comes back
        interrupted = run(script, config)
    finally:
        shared.state.interrupted = False
    assert np.array_equal(pixels(interrupted.images[0]), pixels(finished.images[0]))
    assert vae_active() is None

    def explode(module, x, **kw):
        raise RuntimeError("boom in the middle of the decode")
    monkeypatch.setattr(vae, "tiled_decode", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run(script, config)
    assert vae_active() is None
    monkeypatch.setattr(vae, "tiled_decode", real)
    # the next plain job is the WebUI's own, bit for bit
    assert np.array_equal(pixels(run().images[0]), pixels(reference.images[0]))


def test_an_interrupted_sampling_still_gets_its_tiled_decode(script):
    from modules import script_callbacks, shared

    count = []

    def interrupt(params):
        count.append(1)
        if len(count) == 2:
            shared.state.interrupted = True
    script_callbacks.on_cfg_denoiser(interrupt)
    try:
        res = run(script, preset(tiles=TILES, vae={"tiling": "on", "tile": 64}))
    finally:
        script_callbacks.remove_callbacks_for_function(interrupt)
        shared.state.interrupted = False
    assert res.images[0].size == (W, H) and [e["mode"] for e in script_log()] == ["decode"]


# ---- any size, per-image infotext, interrupts anywhere (the WebUI's envelope) ----------------


def errors_logged(text):
    """Lines the WebUI logs for an exception it swallowed (script hooks, infotext fields)."""
    return [line for line in text.splitlines() if "Error running" in line or "Error creating infotext" in line
            or "Traceback" in line]


HIRES_13 = dict(width=256, height=384, enable_hr=True, hr_scale=1.3, hr_upscaler="Lanczos", hr_second_pass_steps=2,
                denoising_strength=0.5, steps=2)
GRID_192 = {"width": 192, "height": 192, "overlap": 32, "batch_size": 4}


def test_hires_fix_off_the_8px_grid_with_the_tiled_vae(script, capfd):
    """256x384 at hires 1.3 is 332x499 (the WebUI's own size): the tiled VAE encodes that image
    exactly and every VAE setting returns the plain WebUI's size."""
    plain = run(**HIRES_13)
    capfd.readouterr()
    auto = run(script, preset(tiles=GRID_192), **HIRES_13)
    off = run(script, preset(tiles=GRID_192, vae={"tiling": "off"}), **HIRES_13)
    on = run(script, preset(tiles=GRID_192, vae={"tiling": "on", "tile": 64}), **HIRES_13)
    assert [e["mode"] for e in script_log()] == ["decode", "encode", "decode"]
    assert script_log()[1]["shape"][-2:] == (499, 332)
    assert plain.images[0].size == auto.images[0].size == off.images[0].size == on.images[0].size
    assert errors_logged(capfd.readouterr().err) == []
    assert np_abs_diff(on.images[0], off.images[0]) <= 2  # exact tiles, float rounding through 2 steps


def np_abs_diff(a, b):
    import numpy as np

    return int(np.abs(pixels(a) - pixels(b)).max())


def test_img2img_of_an_image_off_the_grid(script, capfd):
    init = source(256, 192).resize((252, 188))  # an image off the grid, as a user may upload
    plain = inprocess_img2img_plain(init, width=252, height=188)
    capfd.readouterr()
    tiled = img2img(script, init, preset(tiles=TILES, vae={"tiling": "on", "tile": 64}), width=252, height=188)
    assert tiled.images[0].size == plain.images[0].size
    assert [e["mode"] for e in script_log()] == ["encode", "decode"]
    assert errors_logged(capfd.readouterr().err) == []


def inprocess_img2img_plain(init, **kw):
    import inprocess

    return inprocess.img2img([init], **kw)


def test_sizes_the_webui_accepts_work_with_the_extension(script, capfd):
    """Random sizes off the 8 and 64 px grids, with and without a hires scale: the extension's
    image has the plain WebUI's size, and nothing is logged."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(w=st.integers(64, 220), h=st.integers(64, 220), scale=st.sampled_from([1.0, 1.15, 1.3, 1.55]),
           tile=st.integers(64, 160), seeded=st.booleans())
    def check(w, h, scale, tile, seeded):
        kw = dict(width=w, height=h, steps=2)
        if scale != 1.0:
            kw.update(enable_hr=True, hr_scale=scale, hr_upscaler="Lanczos", hr_second_pass_steps=1,
                      denoising_strength=0.5)
        region = {"x": 0, "y": 0, "width": max(8, w // 2), "height": h, "seed": 99 if seeded else -1}
        config = preset(tiles={"width": tile, "height": tile, "overlap": 16, "batch_size": 4}, regions=[region],
                        vae={"tiling": "on", "tile": 64})
        plain = run(**kw)
        capfd.readouterr()
        mixed = run(script, config, **kw)
        assert mixed.images[0].size == plain.images[0].size
        assert errors_logged(capfd.readouterr().err) == []

    check()


def test_a_region_seed_on_a_canvas_off_the_grid_is_used(script, capfd):
    """256x196 (a 32x24 latent): the seeded region's box gets its own noise, nothing is logged."""
    from modules import rng, script_callbacks

    captured = []

    def grab(params):
        if not captured:
            captured.append(params.denoiser.p._mod.noise.initial[False].clone())
    region = {"x": 0, "y": 0, "width": 128, "height": 196, "seed": 4321}
    config = preset(tiles=TILES, regions=[region, {"x": 128, "y": 0, "width": 128, "height": 196}])
    script_callbacks.on_cfg_denoiser(grab)
    try:
        capfd.readouterr()
        run(script, config, width=256, height=196, seed=7)
    finally:
        script_callbacks.remove_callbacks_for_function(grab)
    assert errors_logged(capfd.readouterr().err) == []
    x = captured[0]
    own = rng.ImageRNG(x.shape[1:], [4321]).next()
    main = rng.ImageRNG(x.shape[1:], [7]).next()
    # the box (latent columns 0-15, all 24 rows) holds the region seed's noise, the rest the main seed's
    assert torch_equal(x[:, :, :, :16], own[:, :, :, :16]) and torch_equal(x[:, :, :, 16:], main[:, :, :, 16:])


@pytest.mark.parametrize("batch", [{"n_iter": 2}, {"batch_size": 2}], ids=["batch count 2", "batch size 2"])
def test_each_image_reproduces_from_its_own_infotext(script, batch):
    from modules import infotext_utils, script_callbacks

    from lib_mixture_webui.args import pasted_config

    noises = []

    def grab(params):
        initial = params.denoiser.p._mod.noise.initial
        if params.sampling_step == 0 and not any(n is initial[False] for n in noises):
            noises.append(initial[False])
    config = preset(tiles=TILES, regions=[{"x": 0, "y": 0, "width": 96, "height": 128, "seed": 4321,
                                           "prompt": "a red barn"}])
    script_callbacks.on_cfg_denoiser(grab)
    try:
        res = run(script, config, seed=777, **batch)
        assert len(res.images) == 2
        params = [infotext_utils.parse_generation_parameters(t) for t in res.infotexts]
        assert [str(p["Seed"]) for p in params] == ["777", "778"]
        assert [json.loads(pasted_config(p))["regions"][0]["seed"] for p in params] == [4321, 4322]
        # PNG Info -> Send to txt2img -> Generate, for image 2
        again = run(script, pasted_config(params[1]), seed=int(params[1]["Seed"]))
    finally:
        script_callbacks.remove_callbacks_for_function(grab)
    image2_noise = noises[1][0] if "n_iter" in batch else noises[0][1]
    assert torch_equal(noises[-1][0], image2_noise)  # the region's noise too, bit for bit
    if "n_iter" in batch:
        assert np_abs_diff(again.images[0], res.images[1]) == 0
    else:
        # The same model inputs, but the CPU UNet is not batch invariant: a call of 8 rows gives
        # outputs ~2e-6 away from the same 4 rows alone (measured), at most one level in 8 bits.
        assert np_abs_diff(again.images[0], res.images[1]) <= 1


def test_interrupt_in_the_tiled_decode_of_image_2_keeps_both_images(script, monkeypatch):
    from modules import shared

    from lib_mixture_webui import vae

    config = preset(tiles=TILES, vae={"tiling": "on", "tile": 64})
    finished = run(script, config, n_iter=2)
    real, decodes = vae.tiled_decode, []

    def interrupt_in_the_second_decode(module, x, on_progress=None, **kw):
        decodes.append(1)

        def progress(done, total):
            on_progress(done, total)
            if len(decodes) == 2 and done == 2:
                shared.state.interrupted = True
        return real(module, x, on_progress=progress, **kw)
    monkeypatch.setattr(vae, "tiled_decode", interrupt_in_the_second_decode)
    try:
        res = run(script, config, n_iter=2)
    finally:
        shared.state.interrupted = False
    assert len(decodes) == 2 and len(res.images) == 2
    assert all(np_abs_diff(a, b) == 0 for a, b in zip(res.images, finished.images))
    assert vae_active() is None


def test_interrupt_in_the_source_encode_ends_the_job_as_the_webui_does(script, monkeypatch):
    """The plain WebUI encodes img2img's source, then its loop sees the interrupt and returns
    no image; the tiled encode stops at once and the job ends the same way."""
    import numpy as np
    from modules import shared

    from lib_mixture_webui import vae

    reference = run()
    real, seen = vae.tiled_encode, []

    def interrupt_at_second_tile(module, x, on_progress=None, **kw):
        def progress(done, total):
            seen.append(done)
            on_progress(done, total)
            if done == 2:
                shared.state.interrupted = True
        return real(module, x, on_progress=progress, **kw)
    monkeypatch.setattr(vae, "tiled_encode", interrupt_at_second_tile)
    try:
        res = img2img(script, source(W, H), preset(tiles=TILES, vae={"tiling": "on", "tile": 64}))
    finally:
        shared.state.interrupted = False
    assert res.images == [] and max(seen) == 2
    assert vae_active() is None
    assert np.array_equal(pixels(run().images[0]), pixels(reference.images[0]))


# ---- host patches: per-job ones restored however a job ends, class-level ones given back -----


@pytest.mark.parametrize("ending", ["finished", "failed", "interrupted"])
def test_after_any_job_every_per_job_patch_is_the_hosts_own(script, ending, monkeypatch):
    import inprocess
    from modules import processing, script_callbacks, sd_samplers_common, shared

    from lib_mixture_webui import patches

    per_job = {(x.owner, x.attribute) for x in patches.REGISTRY if x.scope != patches.CLASS}
    assert per_job == {("p", "close"), ("p.rng", "next"), ("modules.sd_samplers_common", "store_latent"),
                       ("modules.shared.sd_model", "apply_model"), ("den", "mask"), ("den", "nmask"),
                       ("den", "init_latent"), ("den", "step"), ("den.sampler", "last_latent"),
                       ("hypertile layer params", "aspect_ratio"), ("hypertile layer params", "tile_size")}
    store_latent = sd_samplers_common.store_latent
    seen = []

    def during(params):
        p = params.denoiser.p
        seen.append((p.rng, patches.is_ours(p.close), patches.is_ours(p.rng.next)))
        if ending == "interrupted" and len(seen) == 2:
            shared.state.interrupted = True
    if ending == "failed":
        def explode(*args, **kw):
            raise RuntimeError("boom in the decode")
        monkeypatch.setattr(processing, "decode_latent_batch", explode)
    config = preset(tiles=TILES, regions=[{"x": 0, "y": 0, "width": 96, "height": 128, "seed": 5, "prompt": "a barn"}],
                    vae={"tiling": "on", "tile": 64})
    p = inprocess._processing("StableDiffusionProcessingTxt2Img", [(script, [True, json.dumps(config)])], False,
                              width=W, height=H, steps=3, seed=11, prompt="a landscape")
    script_callbacks.on_cfg_denoiser(during)
    try:
        if ending == "failed":
            with pytest.raises(RuntimeError, match="boom"):
                processing.process_images(p)
        else:
            processing.process_images(p)
            assert "close" not in vars(p)  # postprocess ended the job before the WebUI closes p
    finally:
        script_callbacks.remove_callbacks_for_function(during)
        shared.state.interrupted = False
        p.close()
    assert seen and all(close and rng_next for _, close, rng_next in seen)  # patched while the job ran
    assert "close" not in vars(p) and not patches.is_ours(p.close)
    assert all("next" not in vars(rng) for rng, _, _ in seen) and "next" not in vars(p.rng)
    assert sd_samplers_common.store_latent is store_latent
    assert "apply_model" not in vars(shared.sd_model)
    assert p._mod.ended and vae_active() is None


def test_uninstall_gives_back_every_class_level_attribute(script):
    """Extension off changes nothing: with every host attribute given back the WebUI's image is
    its own, and installing again (the script's next job does) wraps once."""
    import numpy as np

    from lib_mixture_webui import patches

    installation = patches.install()
    assert patches.install() is installation
    installed = patches.held()
    names = {owner.rsplit(".", 1)[-1] + "." + attribute for owner, attribute in installed}
    assert {"CFGDenoiser.forward", "Encoder.forward", "Decoder.forward", "sd_vae_taesd.decoder_model",
            "sd_vae_taesd.encoder_model"} <= names
    assert all(patches.is_ours(v) for v in installed.values())
    host_own = {(a.owner, a.attribute): a.original for a in installation.applied}
    with_patches = run()
    try:
        assert patches.uninstall() == []
        after = patches.held()
        assert all(not patches.is_ours(v) for v in after.values())
        assert all(vars(owner)[attribute] is original for (owner, attribute), original in host_own.items())
        assert np.array_equal(pixels(run().images[0]), pixels(with_patches.images[0]))
    finally:
        again = patches.install()
    assert again is not installation and set(patches.held()) == set(installed)
    assert run(script, preset(tiles=TILES)).images[0].size == (W, H)
