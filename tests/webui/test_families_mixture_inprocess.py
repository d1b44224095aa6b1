"""Mixture of Diffusers with SDXL (base and refiner) and SD 2.x v-prediction in the real WebUI's process.

The tiny random checkpoints of `tiny_families`, loaded with the WebUI's own loader: tiles, regions
with their own prompts and CFG (SDXL's dict conds joined per batch), hires fix, img2img and
inpainting, the upscale workflow, the tiled VAE on sgm's Encoder/Decoder, region seeds and guides,
the infotext round trip, interrupt, settings that change the conds, SDXL's per-crop size
conditioning, and SD3 stopped before any step. Run like the other in-process tests:

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_INPROCESS=1 venv/bin/python -m pytest -p no:cacheprovider \\
        /path/to/repo/tests/webui/test_families_mixture_inprocess.py
"""

from __future__ import annotations

import base64
import io
import json
import math

import pytest

import launcher  # tests/webui is on sys.path (conftest.py)

pytestmark = launcher.inprocess_skips()

W, H = 192, 128  # latent 24 x 16; the tiny families' UNets take multiples of 32 px
TILES = {"width": 96, "height": 96, "overlap": 32, "batch_size": 2}  # 6 tiles of 12 x 12 latent cells
REGIONS = [
    {"x": 0, "y": 0, "width": 96, "height": 128, "prompt": "a red barn", "cfg_scale": 4},
    {"x": 96, "y": 0, "width": 96, "height": 128, "prompt": "a giant robot", "negative_prompt": "cars, trucks",
     "cfg_scale": 9, "prompt_mode": "append"},
]


def preset(**fields):
    return {"version": 1, **fields}


def run(script=None, config=None, enabled=True, kind="txt2img", init=None, **kw):
    import inprocess

    kw = {"width": W, "height": H, "steps": 3, "seed": 11, "prompt": "a landscape", **kw}
    args = [] if script is None else [(script, [enabled, json.dumps(config) if isinstance(config, dict) else config])]
    if kind == "img2img":
        kw.setdefault("denoising_strength", 0.6)
        return inprocess.img2img([init], args, **kw)
    return inprocess.txt2img(args, **kw)


def pixels(image):
    import numpy as np

    return np.asarray(image).astype("int16")


def source(width=W, height=H):
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x * y) % 256], axis=-1)
    return Image.fromarray(rgb.astype("uint8"), "RGB")


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module", params=["sdxl", "sd2-v"])
def family(request):
    return request.param


@pytest.fixture
def model(family, load_family):
    return load_family(family)


@pytest.fixture
def unet_inputs(host):
    """Every UNet call of the loaded model: (latent size, the vector ``y`` or None), in order."""
    from modules import shared

    seen = []

    def record(module, args, kwargs):
        y = kwargs.get("y")
        seen.append((tuple(args[0].shape[-2:]), None if y is None else y.detach().clone()))
    handle = shared.sd_model.model.diffusion_model.register_forward_pre_hook(record, with_kwargs=True)
    yield seen
    handle.remove()


def plan_for(config, width=W, height=H):
    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    return build_plan(parse_preset(config), width, height)


def finite_and_varied(image) -> bool:
    import numpy as np

    a = pixels(image)
    return bool(np.isfinite(a).all() and a.std() > 1.0)


# ---- each family -------------------------------------------------------------------------------

def test_one_region_covering_the_canvas_is_bit_identical_to_the_plain_webui(model, script):
    import numpy as np

    plain = run()
    mixed = run(script, preset(regions=[{"x": 0, "y": 0, "width": W, "height": H}]))
    assert np.array_equal(pixels(plain.images[0]), pixels(mixed.images[0]))
    assert "Mixture of Diffusers" in mixed.infotexts[0]
    off = run(script, preset(tiles=TILES), enabled=False)
    assert np.array_equal(pixels(plain.images[0]), pixels(off.images[0]))


def test_tiles_take_ceil_crops_over_batch_calls_of_tile_size(model, script, unet_inputs):
    config = preset(tiles=TILES)
    res = run(script, config)
    per_step = math.ceil(len(plan_for(config).tiles.tiles) / TILES["batch_size"])
    assert per_step == 3
    assert len(unet_inputs) == 3 * per_step  # 3 steps, cond and uncond in one call
    assert {size for size, _ in unet_inputs} == {(12, 12)}
    assert res.images[0].size == (W, H) and finite_and_varied(res.images[0])


def test_regions_with_their_own_prompts_and_scales_with_tiles(model, script, unet_inputs):
    import numpy as np

    config = preset(tiles=TILES, regions=REGIONS)
    plan = plan_for(config)
    mixed = run(script, config)
    assert len(unet_inputs) == 3 * plan.model_calls_per_step
    assert {size for size, _ in unet_inputs} == {(12, 12), (16, 12)}
    tiles_only = run(script, preset(tiles=TILES))
    assert finite_and_varied(mixed.images[0])
    assert np.abs(pixels(mixed.images[0]) - pixels(tiles_only.images[0])).mean() > 1.0  # the regions count
    if model.is_sdxl:  # dict conds: a vector row for every row of the call
        assert all(y is not None and y.shape[0] in (2, 4) for _, y in unet_inputs)


def test_hires_fix_tiles_the_hires_pass(model, script, unet_inputs):
    config = preset(tiles=TILES, regions=REGIONS[:1], canvas={"width": W, "height": H})
    res = run(script, config, enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
              hr_second_pass_steps=2)
    assert res.images[0].size == (2 * W, 2 * H) and finite_and_varied(res.images[0])
    sizes = {size for size, _ in unet_inputs}
    assert (32, 48) not in sizes and (16, 24) not in sizes  # never a whole canvas


def test_img2img_inpainting_and_the_upscale_workflow(model, script, unet_inputs):
    from PIL import Image

    init = source()
    mask = Image.new("L", (W, H), 0)
    mask.paste(255, (64, 32, 160, 96))
    res = run(script, preset(tiles=TILES, regions=REGIONS), kind="img2img", init=init, mask=mask,
              inpaint_full_res=False, denoising_strength=0.8)
    assert res.images[0].size == (W, H)
    assert abs(pixels(res.images[0])[:20, :40] - pixels(init)[:20, :40]).mean() < 3  # outside the mask: kept
    del unet_inputs[:]
    up = run(script, preset(tiles=TILES, upscale={"upscaler": "Lanczos", "width": W, "height": H}),
             kind="img2img", init=source(96, 64), width=64, height=64)
    assert up.images[0].size == (W, H) and finite_and_varied(up.images[0])
    assert {size for size, _ in unet_inputs} == {(12, 12)}


def test_tiled_vae_matches_the_plain_vae(model, script):
    import numpy as np
    import torch

    from lib_mixture_webui import patches

    init = source()
    torch.manual_seed(3)
    plain = run(script, preset(tiles=TILES, vae={"tiling": "off"}), kind="img2img", init=init)
    torch.manual_seed(3)
    tiled = run(script, preset(tiles=TILES, vae={"tiling": "on", "tile": 64}), kind="img2img", init=init)
    modes = {entry["mode"]: entry["tiles"] for entry in patches.installed().last_vae_log}
    assert modes.get("encode", 0) > 1 and modes.get("decode", 0) > 1
    diff = np.abs(pixels(tiled.images[0]) - pixels(plain.images[0]))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_region_seed_guide_and_the_infotext_round_trip(model, script):
    import numpy as np
    from modules import infotext_utils

    from lib_mixture.preset import parse_preset
    from lib_mixture_webui.args import pasted_config, read_args

    regions = [dict(REGIONS[0], seed=77, guide={"image": data_url(source(96, 128)), "strength": 0.5}), REGIONS[1]]
    config = preset(tiles=TILES, regions=regions, micro_conditioning="all")
    res = run(script, config)
    seedless = run(script, preset(tiles=TILES, regions=[dict(regions[0], seed=-1), REGIONS[1]],
                                  micro_conditioning="all"))
    a, b = pixels(res.images[0]), pixels(seedless.images[0])
    assert finite_and_varied(res.images[0]) and np.abs(a - b).mean() > 0.5
    params = infotext_utils.parse_generation_parameters(res.infotexts[0])
    _, restored = read_args([True, pasted_config(params)])
    expected = parse_preset(config)
    assert restored.tiles == expected.tiles and restored.micro_conditioning == "all"
    assert [r.seed for r in restored.regions] == [77, -1] and restored.regions[0].guide.image.startswith("sha256:")


def test_interrupt_mid_job_and_the_next_job_is_unaffected(model, script):
    import inprocess
    import numpy as np

    config = preset(tiles=TILES, regions=REGIONS)
    reference = run(script, config)
    with inprocess.cfg_calls(interrupt_at=2) as count:
        stopped = run(script, config)
    assert stopped.images[0].size == (W, H) and len(count) == 2
    assert np.array_equal(pixels(run(script, config).images[0]), pixels(reference.images[0]))


SETTINGS = {
    "CLIP skip 2": {"CLIP_stop_at_last_layers": 2},
    "pad prompt": {"pad_cond_uncond": True},
    "pad prompt v0": {"pad_cond_uncond_v0": True},
    "emphasis No norm": {"emphasis": "No norm"},
    "emphasis None": {"emphasis": "None"},
    "s_min_uncond": {"s_min_uncond": 100.0},
}
LONG = ", ".join(["a very detailed painting of a quiet harbour at dawn"] * 10)  # over 75 tokens


@pytest.mark.parametrize("name", SETTINGS)
def test_settings_that_change_the_conds(model, script, name):
    """Each setting with one full-canvas region is the plain WebUI's image with that setting, and
    tiles with regions whose prompts have other token lengths (their own batch keys) run."""
    import numpy as np

    from modules import shared

    override = dict(SETTINGS[name], **({"sdxl_clip_l_skip": True} if "CLIP" in name else {}))
    for key in override:  # the WebUI restores only options its config holds
        shared.opts.data.setdefault(key, shared.opts.get_default(key))
    kw = dict(override_settings=override, override_settings_restore_afterwards=True, prompt="a (landscape:1.3)")
    plain = run(**kw)
    one = run(script, preset(regions=[{"x": 0, "y": 0, "width": W, "height": H}]), **kw)
    assert np.array_equal(pixels(plain.images[0]), pixels(one.images[0]))
    regions = [dict(REGIONS[0], prompt=LONG), dict(REGIONS[1], negative_prompt=LONG)]
    res = run(script, preset(tiles=TILES, regions=regions), **kw)
    assert finite_and_varied(res.images[0])


# ---- SDXL's size conditioning per crop -----------------------------------------------------------

def size_embedding(model, key, pair):
    """The model's own embedding of one size pair (sgm's ConcatTimestepEmbedderND)."""
    import torch
    from modules import devices

    embedder = next(e for e in model.conditioner.embedders if getattr(e, "input_key", None) == key)
    with torch.no_grad():
        return embedder(torch.tensor([list(pair)], dtype=devices.dtype, device=devices.device))[0]


def crop_slice(model, width):
    """Where crop_coords_top_left lies in a vector ``width`` wide: counted back from the end over
    the trailing size embedders, as sgm's conditioner concatenates them."""
    stop = width
    for e in reversed(model.conditioner.embedders):
        key = getattr(e, "input_key", None)
        n = e.outdim * (1 if key == "aesthetic_score" else 2)
        if key == "crop_coords_top_left":
            return slice(stop - n, stop)
        stop -= n
    raise AssertionError("no crop_coords_top_left embedder")


@pytest.fixture
def sdxl(load_family):
    return load_family("sdxl")


def test_sdxl_each_tile_gets_its_own_crop_coords_and_off_gives_the_hosts_vector(sdxl, script, unet_inputs):
    import torch

    model = sdxl
    run()  # the plain WebUI: one call per step on the canvas; its vector rows are the host's
    host = unet_inputs[0][1]
    assert host.shape == (2, 1792)  # cond and uncond rows
    del unet_inputs[:]
    run(script, preset(tiles=dict(TILES, batch_size=1), micro_conditioning="off"))
    assert all(torch.equal(y, host) for _, y in unet_inputs)  # off: every crop has the host's vector
    del unet_inputs[:]
    config = preset(tiles=dict(TILES, batch_size=3))
    run(script, config)
    tiles = plan_for(config).tiles.tiles
    crop = crop_slice(model, host.shape[-1])
    outside = torch.ones(host.shape[-1], dtype=torch.bool)
    outside[crop] = False
    offsets = [(t.y, t.x) for t in tiles]  # px; tiles batch in plan order, crop-major rows
    rows = torch.cat([y for _, y in unet_inputs[:2]])  # the first step: 6 crops in 2 calls of 3
    assert rows.shape[0] == 2 * len(tiles)
    for j, offset in enumerate(offsets):
        block = rows[2 * j:2 * j + 2]
        assert torch.equal(block[:, outside], host[:, outside])  # text and sizes: the host's
        assert torch.equal(block[:, crop], size_embedding(model, "crop_coords_top_left", offset).expand(2, -1))
    assert len({tuple(rows[2 * j, crop].tolist()) for j in range(len(tiles))}) == len(set(offsets)) > 1


def test_sdxl_refiner_crops_get_their_crop_coords_with_its_aesthetic_vector(load_family, family_ckpts, script):
    """Tiles with a region (the per-batch path, conds rewritten per crop) across the switch to the
    refiner: its vector (pooled text, original size, crop coords, aesthetic score) per crop."""
    import inprocess
    import torch
    from modules import script_callbacks

    load_family("sdxl")
    refiner = inprocess.register_checkpoint(family_ckpts["sdxl-refiner"])
    seen, models, handles = [], [], []

    def hook(sd_model):  # the refiner is loaded mid-job: record its UNet's calls from then on
        models.append(sd_model)
        handles.append(sd_model.model.diffusion_model.register_forward_pre_hook(
            lambda m, a, k: seen.append((tuple(a[0].shape[-2:]), k["y"].detach().clone())), with_kwargs=True))
    script_callbacks.on_model_loaded(hook)
    config = preset(tiles=dict(TILES, batch_size=6), regions=REGIONS[:1])
    try:
        res = run(script, config, steps=4, refiner_checkpoint=refiner.title, refiner_switch_at=0.5)
    finally:
        script_callbacks.remove_callbacks_for_function(hook)
        for h in handles:
            h.remove()
        load_family("sdxl")
    assert finite_and_varied(res.images[0]) and "Refiner:" in res.infotexts[0]
    model = models[0]
    tile_calls = [y for size, y in seen if size == (12, 12)]
    assert tile_calls and all(y.shape == (12, 1536) for y in tile_calls)  # 6 tiles: cond rows, then uncond rows
    crop = crop_slice(model, 1536)
    first = tile_calls[0]
    for j, t in enumerate(plan_for(config).tiles.tiles):
        expected = size_embedding(model, "crop_coords_top_left", (t.y, t.x))
        assert torch.equal(first[j, crop], expected) and torch.equal(first[6 + j, crop], expected)
    aesthetic = slice(1536 - 256, 1536)
    assert not torch.equal(first[0, aesthetic], first[6, aesthetic])  # cond and uncond scores, the host's


def test_sd3_stops_before_any_step_with_one_message(load_family, script, monkeypatch):
    import inprocess
    from modules import sd_vae_approx, shared

    model = load_family("sdxl")
    # The host loads its live-preview network at the start of an SD3 job (downloaded once, online);
    # the SDXL one stands in for it here, offline. SD3 itself is this tiny SDXL model marked as SD3.
    monkeypatch.setitem(sd_vae_approx.sd_vae_approx_models, "vaeapprox-sd3.pt", sd_vae_approx.model())
    monkeypatch.setattr(model, "is_sd3", True)
    with inprocess.cfg_calls() as steps, pytest.raises(Exception, match="Mixture of Diffusers does not support SD3"):
        run(script, preset(tiles=TILES))
    assert steps == [] and shared.sd_model is model


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sdxl_tiled_vae_on_sgms_encoder_and_decoder_in_fp32_and_fp16(sdxl, dtype):
    """The tiled VAE on the loaded SDXL model's own sgm autoencoder (a copy cast to ``dtype``):
    decode and encode against the plain pass, PSNR over 35 dB (exact statistics: rounding only)."""
    import copy

    import torch

    from lib_mixture import tiled_vae

    dt = getattr(torch, dtype)
    vae = copy.deepcopy(sdxl.first_stage_model).to(dt)
    assert type(vae.decoder).__module__.startswith("sgm.")
    g = torch.Generator().manual_seed(5)
    z = torch.randn(1, 4, 24, 40, generator=g).to(dt)
    image = (torch.rand(1, 3, 192, 320, generator=g) * 2 - 1).to(dt)

    def psnr(a, b):
        mse = (a.float() - b.float()).pow(2).mean().item()
        return 10 * math.log10(4 / max(mse, 1e-12))  # values in [-1, 1]: peak-to-peak 2
    with torch.no_grad():
        plain_dec = vae.decode(z)
        tiled_dec = tiled_vae.tiled_decode(vae, z, tile_size=8)
        moments_plain = vae.quant_conv(vae.encoder(image))  # sgm's AutoencoderKL.encode before sampling
        moments_tiled = tiled_vae.tiled_encode(vae, image, tile_size=8)
    assert tiled_dec.dtype == dt and torch.isfinite(tiled_dec).all()
    assert psnr(tiled_dec, plain_dec) > 35
    assert moments_tiled.shape == moments_plain.shape and psnr(moments_tiled, moments_plain) > 35
