"""Tiny SDXL base, SDXL refiner and SD 2.x v-prediction checkpoints inside the real WebUI's process.

Each family's random-weight checkpoint (built by `tiny_families`) loads with the WebUI's own
loader, generates finite images that depend on the prompt, does img2img, and SDXL base hands
over to the refiner.  Skipped unless MOD_WEBUI_DIR names a WebUI v1.10.1 checkout with its
venv and MOD_WEBUI_INPROCESS=1 (one boot per process; run with the WebUI's python):

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_INPROCESS=1 venv/bin/python -m pytest -p no:cacheprovider \\
        /path/to/repo/tests/webui/test_families_inprocess.py

The module's tests switch models; when the module ends the tiny SD1 checkpoint the host booted
with is loaded again (fixture ``restore_boot_checkpoint``), so other in-process modules can run
after this one in the same process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import launcher  # tests/webui is on sys.path (conftest.py)

pytestmark = launcher.inprocess_skips()

FAMILIES = ("sdxl", "sdxl-refiner", "sd2-v")  # = tiny_families.FAMILIES (not imported: it needs torch)
SIZE = 64  # every family's UNet has three levels: sides must be multiples of 32 px
STEPS = 4


# ---- helpers (also for the Mixture of Diffusers tests below) --------------------------------

def family_job(kind="txt2img", scripts_with_args=(), init_images=None, **kw):
    """Run a small job on the loaded model: txt2img (default) or img2img (``init_images``).
    Defaults: SIZE x SIZE, STEPS steps, Euler, seed 1; ``kw`` goes to the processing object."""
    import inprocess

    kw = {"width": SIZE, "height": SIZE, "steps": STEPS, "seed": 1, "prompt": "a photo of a cat", **kw}
    if kind == "txt2img":
        return inprocess.txt2img(scripts_with_args, **kw)
    if kind == "img2img":
        return inprocess.img2img(init_images, scripts_with_args, **kw)
    raise ValueError(kind)


def pixels(image):
    import numpy as np

    return np.asarray(image).astype("int16")


def gradient_image(width=SIZE, height=SIZE):
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype("uint8"), "RGB")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """The family under test (module scope, so pytest runs one family's tests together)."""
    return request.param


@pytest.fixture
def model(family, load_family):
    """The tiny checkpoint of ``family``, loaded (``shared.sd_model``)."""
    return load_family(family)


@pytest.fixture
def denoised(host):
    """Statistics of every CFG-combined denoiser output of the jobs run while it is active:
    a list of (all finite, std) per sampling step."""
    import torch
    from modules import script_callbacks

    seen = []

    def record(params):
        x = params.x.detach().float()
        seen.append((bool(torch.isfinite(x).all()), float(x.std())))
    script_callbacks.on_cfg_after_cfg(record)
    yield seen
    script_callbacks.remove_callbacks_for_function(record)


# ---- each family ------------------------------------------------------------------------------

def test_the_checkpoint_loads_as_its_family(family, model, family_ckpts):
    from modules import shared

    assert shared.sd_model is model
    assert Path(model.sd_checkpoint_info.filename).resolve() == family_ckpts[family].resolve()
    assert Path(model.used_config).resolve() == family_ckpts[family].with_suffix(".yaml").resolve()
    import torch
    from safetensors import safe_open

    params = dict(model.named_parameters())
    with safe_open(str(family_ckpts[family]), "pt") as f:
        for key in ("model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_out.weight"):
            assert torch.equal(params[key].detach().cpu(), f.get_tensor(key)), key
    if family == "sd2-v":
        assert model.is_sd2 and not model.is_sdxl
        assert model.parameterization == "v"
    else:
        assert model.is_sdxl and not model.is_sd2 and not model.is_ssd
        assert model.parameterization == "eps"
        text_embedders = ["FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder2"] if family == "sdxl" else ["FrozenOpenCLIPEmbedder2"]
        wrapped = [type(getattr(e, "wrapped", e)).__name__ for e in model.conditioner.embedders]
        assert wrapped == text_embedders + ["ConcatTimestepEmbedderND"] * 3


def test_txt2img_gives_a_finite_varied_image(model, denoised):
    import numpy as np

    res = family_job(prompt="a red barn in a field")
    assert len(res.images) == 1 and res.images[0].size == (SIZE, SIZE)
    assert len(denoised) == STEPS
    assert all(finite for finite, _ in denoised), denoised
    assert all(std > 0 for _, std in denoised), denoised
    px = pixels(res.images[0])
    assert px.std() > 2.0
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50
    if model.is_sdxl:  # the job loaded the random live-preview network that load_family wrote
        from modules import sd_vae_approx
        assert "vaeapprox-sdxl.pt" in sd_vae_approx.sd_vae_approx_models


def test_the_prompt_changes_the_image(model):
    import numpy as np

    a = pixels(family_job(prompt="a red barn in a field").images[0])
    b = pixels(family_job(prompt="a giant robot on the moon").images[0])
    again = pixels(family_job(prompt="a red barn in a field").images[0])
    assert np.array_equal(a, again)
    assert np.abs(a - b).mean() > 1.0


def test_img2img_gives_a_finite_image_that_follows_the_init_image(model, denoised):
    import numpy as np

    init = gradient_image()
    res = family_job("img2img", init_images=[init], denoising_strength=0.5)
    assert res.images[0].size == (SIZE, SIZE)
    assert denoised and all(finite for finite, _ in denoised), denoised
    out = pixels(res.images[0])
    assert out.std() > 2.0
    assert not np.array_equal(out, pixels(init))
    other = family_job("img2img", init_images=[init.transpose(0)], denoising_strength=0.5)  # mirrored
    assert np.abs(out - pixels(other.images[0])).mean() > 1.0


# ---- SDXL base -> refiner ----------------------------------------------------------------------

def test_sdxl_base_hands_over_to_the_tiny_refiner(load_family, family_ckpts, denoised):
    import inprocess
    from modules import script_callbacks, shared

    load_family("sdxl")
    refiner = inprocess.register_checkpoint(family_ckpts["sdxl-refiner"])
    loaded = []

    def on_loaded(sd_model):
        loaded.append(Path(sd_model.sd_checkpoint_info.filename).name)
    script_callbacks.on_model_loaded(on_loaded)
    steps = 6
    try:
        family_job(steps=steps)
        plain = list(denoised)
        denoised.clear()
        refined = family_job(steps=steps, refiner_checkpoint=refiner.title, refiner_switch_at=0.5)
    finally:
        script_callbacks.remove_callbacks_for_function(on_loaded)
    assert loaded == [family_ckpts["sdxl-refiner"].name]
    assert shared.sd_model.sd_checkpoint_info.filename == refiner.filename  # left loaded, as in the UI
    assert f"Refiner: {refiner.short_title}" in refined.infotexts[0]
    assert "Refiner switch at: 0.5" in refined.infotexts[0]
    assert len(denoised) == steps and all(finite for finite, _ in denoised), denoised
    # the base model makes the first half of the steps, the refiner the rest
    assert denoised[:steps // 2] == plain[:steps // 2]
    assert all(r != p for r, p in zip(denoised[steps // 2:], plain[steps // 2:])), (plain, denoised)
    # the next job loads the base model again (its option did not change), as in the WebUI
    assert shared.opts.sd_model_checkpoint == inprocess.register_checkpoint(family_ckpts["sdxl"]).title
    family_job()
    assert Path(shared.sd_model.sd_checkpoint_info.filename).name == family_ckpts["sdxl"].name


def test_use_checkpoint_loads_the_previous_model_again(host, family_ckpts, restore_boot_checkpoint):
    import inprocess
    from modules import shared

    inprocess.load_checkpoint(inprocess.boot_checkpoint())
    with inprocess.use_checkpoint(family_ckpts["sd2-v"]) as m:
        assert m.is_sd2 and shared.sd_model is m
    assert shared.sd_model.is_sd1
    assert Path(shared.sd_model.sd_checkpoint_info.filename).resolve() == inprocess.boot_checkpoint().resolve()


# ---- Mixture of Diffusers on the tiny families --------------------------------------------------
# (added by the lead developer; use the `family` / `model` fixtures and family_job(...))
