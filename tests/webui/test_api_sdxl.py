"""What a new user with an SDXL checkpoint does, through the real WebUI's HTTP API: compose regions,
generate a tiled 4K image, upscale an image to 4K.

A WebUI v1.10.1 server on the CPU with the tiny random SDXL checkpoint of `tiny_families` (built with
the WebUI's python; nothing is downloaded). Skipped unless MOD_WEBUI_DIR names a WebUI with its venv:

    MOD_WEBUI_DIR=/path/to/webui .venv/bin/python -m pytest -q tests/webui/test_api_sdxl.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import launcher  # noqa: E402
from test_api_e2e import (EXT_NAME, SCRIPT, STARTUP_ALLOWED, LogWatch, bad_lines, infotext,  # noqa: E402
                          parse_infotext_params, restored_preset, source_image)

pytestmark = pytest.mark.skipif(not launcher.webui_available(),
                                reason="MOD_WEBUI_DIR does not point at a WebUI with a venv")

UHD_TILES = {"width": 1024, "height": 1024, "overlap": 128, "batch_size": 4}  # 15 tiles on 3840x2160
JOB = {"prompt": "a harbour town at dawn", "negative_prompt": "", "seed": 5, "sampler_name": "Euler",
       "cfg_scale": 6.0, "steps": 2}


def mod(config):
    return {"alwayson_scripts": {SCRIPT: {"args": [True, config]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("PIL")
    pytest.importorskip("numpy")
    webui = launcher.default_webui_dir()
    data = tmp_path_factory.mktemp("sdxl-data")
    ckpts = tmp_path_factory.mktemp("sdxl-ckpt")
    env = dict(os.environ, MOD_WEBUI_DIR=str(webui))
    out = subprocess.run([str(launcher.default_webui_python(webui)), str(HERE / "tiny_families.py"), str(ckpts), "sdxl",
                          "--approx-models-dir", str(data / "models")],
                         check=True, stdout=subprocess.PIPE, text=True, env=env)
    ckpt = next(Path(line) for line in out.stdout.splitlines() if line.endswith(".safetensors"))
    ui = launcher.WebUI(ckpt, extensions={EXT_NAME: ROOT}, data_dir=data)
    ui.start()
    try:
        yield ui
    finally:
        ui.stop()


@pytest.fixture
def log(server):
    watch = LogWatch([server])
    yield watch
    text = watch.new()
    assert not bad_lines(text), text[-3000:]


def test_the_server_loaded_the_tiny_sdxl_checkpoint(server):
    text = server.log_text()
    start = text[:text.find(launcher.STARTUP_MARKER)]
    blocks = start.split("\n*** ")[1:]  # the WebUI's errors.report() blocks
    tolerated = [b for b in blocks if all(s in b for s in STARTUP_ALLOWED)]  # this checkout has no git remote
    assert start.count("Traceback") == sum(b.count("Traceback") for b in tolerated), start[-4000:]
    options = server.get("/sdapi/v1/options")
    assert "tiny-sdxl" in options["sd_model_checkpoint"]


def test_compose_three_regions_with_their_own_prompts_and_cfg(server, log):
    import numpy as np

    regions = [{"x": 0, "y": 0, "width": 0.4, "height": 1, "prompt": "a lighthouse", "cfg_scale": 4},
               {"x": 0.3, "y": 0, "width": 0.4, "height": 1, "prompt": "a fishing boat", "negative_prompt": "people"},
               {"x": 0.6, "y": 0, "width": 0.4, "height": 1, "prompt": "cliffs", "cfg_scale": 9, "weight": 2}]
    config = {"version": 1, "units": "fraction", "regions": regions}
    res = server.txt2img(dict(JOB, width=768, height=512, steps=4), **mod(config))
    image = launcher.decode_image(res["images"][0])
    assert image.size == (768, 512) and np.asarray(image).std() > 1
    restored = restored_preset(parse_infotext_params(infotext(res)))
    assert [r.prompt for r in restored.regions] == ["a lighthouse", "a fishing boat", "cliffs"]
    assert restored.micro_conditioning == "tiles"


def test_a_tiled_4k_txt2img(server, log):
    res = server.txt2img(dict(JOB, width=3840, height=2160), **mod({"version": 1, "tiles": UHD_TILES}))
    assert launcher.decode_image(res["images"][0]).size == (3840, 2160)
    assert parse_infotext_params(infotext(res))["Size"] == "3840x2160"


def test_upscale_512x288_to_4k(server, log):
    config = {"version": 1, "tiles": UHD_TILES,
              "upscale": {"upscaler": "Lanczos", "width": 3840, "height": 2160, "fit": "crop"}}
    res = server.img2img([source_image()], dict(JOB, width=512, height=288, denoising_strength=0.3), **mod(config))
    assert launcher.decode_image(res["images"][0]).size == (3840, 2160)
    assert "upscaled 512x288 to 3840x2160 with Lanczos (crop)" in log.new()
