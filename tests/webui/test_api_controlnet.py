"""The ControlNet upscale through the real WebUI's HTTP API, with sd-webui-controlnet installed:
img2img of a 512x288 image to 3840x2160, a tile grid, and ``upscale.controlnet_tile: auto``, which
adds a ControlNet tile unit without an image of its own (it takes the upscaled image, as ControlNet
does in img2img); the caller sends no ControlNet arguments at all.

The unit is a tiny random T2I-Adapter (`tiny_t2i_adapter`); the checkpoint the tiny SD1 one.
Skipped unless MOD_WEBUI_DIR names a WebUI with its venv and MOD_CONTROLNET_DIR an
sd-webui-controlnet checkout (its imports, controlnet_aux and matplotlib, in the WebUI's venv):

    MOD_WEBUI_DIR=/path/to/webui MOD_CONTROLNET_DIR=/path/to/sd-webui-controlnet \\
        .venv/bin/python -m pytest -q tests/webui/test_api_controlnet.py
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
from test_api_e2e import (EXT_NAME, SCRIPT, LogWatch, bad_lines, infotext, parse_infotext_params,  # noqa: E402
                          restored_preset, source_image)

CN_DIR = os.environ.get("MOD_CONTROLNET_DIR")
pytestmark = [
    pytest.mark.skipif(not launcher.webui_available(), reason="MOD_WEBUI_DIR does not point at a WebUI with a venv"),
    pytest.mark.skipif(not CN_DIR or not (Path(CN_DIR) / "scripts" / "controlnet.py").is_file(),
                       reason="MOD_CONTROLNET_DIR does not name an sd-webui-controlnet checkout"),
]

ADAPTER = "tiny-t2i-tile-adapter"  # "tile" in its name: "auto" finds it
UHD_TILES = {"width": 768, "height": 768, "overlap": 128, "batch_size": 4}


@pytest.fixture(scope="module")
def server(tiny_ckpt, tmp_path_factory):
    pytest.importorskip("PIL")
    webui = launcher.default_webui_dir()
    data = tmp_path_factory.mktemp("cn-api-data")
    subprocess.run([str(launcher.default_webui_python(webui)), str(HERE / "tiny_t2i_adapter.py"),
                    str(data / "models" / "ControlNet" / f"{ADAPTER}.safetensors"), CN_DIR],
                   check=True, cwd=webui, stdout=subprocess.PIPE)
    ui = launcher.WebUI(tiny_ckpt, extensions={EXT_NAME: ROOT, "sd-webui-controlnet": Path(CN_DIR)}, data_dir=data)
    ui.start()
    try:
        yield ui
    finally:
        ui.stop()


def test_controlnet_upscale_512x288_to_4k_through_the_api(server):
    watch = LogWatch([server])
    config = {"version": 1, "tiles": UHD_TILES,
              "upscale": {"upscaler": "Lanczos", "width": 3840, "height": 2160, "fit": "crop", "controlnet_tile": "auto"}}
    job = {"prompt": "a harbour town at dawn", "negative_prompt": "", "seed": 5, "sampler_name": "Euler",
           "cfg_scale": 6.0, "steps": 3, "width": 512, "height": 288, "denoising_strength": 0.5,
           "alwayson_scripts": {SCRIPT: {"args": [True, config]}}}
    res = server.img2img([source_image()], job)
    assert launcher.decode_image(res["images"][0]).size == (3840, 2160)
    params = parse_infotext_params(infotext(res))
    assert params["Size"] == "3840x2160"
    assert "Module: tile_resample" in params["ControlNet 0"] and ADAPTER in params["ControlNet 0"]
    restored = restored_preset(params)
    assert restored.upscale.width == 3840 and restored.tiles.width == 768
    assert restored.upscale.controlnet_tile == "auto"
    text = watch.new()
    assert "upscaled 512x288 to 3840x2160 with Lanczos (crop); ControlNet unit 1: " + ADAPTER in text
    assert not bad_lines(text), text[-3000:]
