"""End to end through a real WebUI's HTTP API: the extension symlinked in, CPU, tiny model.

Two servers for the whole module, started side by side: one with this repository linked as
an extension, and a baseline started with ``--disable-extra-extensions`` (the extension is
linked there too, but the WebUI does not load it). Jobs are small (192x128, 96 px tiles,
3 steps) so the module runs in a few minutes on two CPU cores.

Skipped unless ``MOD_WEBUI_DIR`` names a WebUI v1.10.1 checkout with its venv. The test
process itself needs only Pillow and numpy (the WebUI runs in its own interpreter)::

    MOD_WEBUI_DIR=/path/to/webui MOD_TINY_CKPT=/path/to/tiny-sd15.safetensors \\
        .venv/bin/python -m pytest -q tests/webui/test_api_e2e.py

Every test also checks the server log written while it ran: no ``Traceback`` and no
``Error`` line, except the one request that is meant to fail on a bad preset.
"""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for _path in (HERE, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import launcher  # noqa: E402

pytestmark = pytest.mark.skipif(
    not launcher.webui_available(),
    reason="MOD_WEBUI_DIR is unset or does not point at a WebUI checkout with venv/bin/python "
           "(these tests start a real WebUI server)")

EXT_NAME = "sd-webui-mixture-of-diffusers"
SCRIPT = "Mixture of Diffusers"
KEY = "Mixture of Diffusers"

W, H = 192, 128  # latent 24 x 16
STEPS = 3
TILES = {"width": 96, "height": 96, "overlap": 32, "batch_size": 2}
THREE_REGIONS = [  # together they cover the canvas; each has its own prompt and guidance scale
    {"x": 0, "y": 0, "width": 80, "height": 128, "prompt": "a red barn", "cfg_scale": 4},
    {"x": 56, "y": 0, "width": 80, "height": 128, "prompt": "a dirt road", "negative_prompt": "cars, trucks",
     "cfg_scale": 9},
    {"x": 112, "y": 0, "width": 80, "height": 128, "prompt": "a giant robot", "prompt_mode": "append",
     "cfg_scale": 12.5, "weight": 2},
]
SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "Heun", "DDIM", "PLMS", "UniPC", "LCM"]
BASE_JOB = {"prompt": "a landscape", "negative_prompt": "", "width": W, "height": H, "steps": STEPS,
            "seed": 11, "sampler_name": "Euler", "cfg_scale": 7.0}

# The only start-up traceback tolerated: the WebUI reads the git remote of every extension,
# and a checkout without an "origin" remote (this repository under test) makes it log one.
STARTUP_ALLOWED = ("Failed reading extension data from Git repository", "Remote named 'origin' didn't exist")


def preset(**fields):
    return {"version": 1, **fields}


def mod(*args):
    return {"alwayson_scripts": {SCRIPT: {"args": list(args)}}}


# ---- servers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guide_files(tmp_path_factory):
    """An allowed guide folder (with an image, and a symlink pointing out of it) and a folder
    outside it with a secret image: what a caller of the API must never get read."""
    root = tmp_path_factory.mktemp("guides")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    pytest.importorskip("PIL")
    from PIL import Image

    Image.new("RGB", (64, 64), (250, 10, 10)).save(allowed / "red.png")
    Image.new("RGB", (64, 64), (10, 250, 10)).save(outside / "secret.png")
    (allowed / "escape.png").symlink_to(outside / "secret.png")
    return allowed, outside


@pytest.fixture(scope="module")
def servers(tiny_ckpt, guide_files, tmp_path_factory):
    pytest.importorskip("PIL")
    pytest.importorskip("numpy")
    data = tmp_path_factory.mktemp("ext-data")
    # the server owner's settings: one allowed guide folder (paths from the API stay off)
    (data / "config.json").write_text(json.dumps({"mod_guide_folders": str(guide_files[0])}))
    ext = launcher.WebUI(tiny_ckpt, extensions={EXT_NAME: ROOT}, data_dir=data)
    base = launcher.WebUI(tiny_ckpt, extensions={EXT_NAME: ROOT}, disable_extra_extensions=True)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ui.start) for ui in (ext, base)]
        errors = [f.exception() for f in futures]
    try:
        for e in errors:
            if e is not None:
                raise e
        yield ext, base
    finally:
        ext.stop()
        base.stop()


@pytest.fixture(scope="module")
def ui(servers):
    return servers[0]


@pytest.fixture(scope="module")
def baseline(servers):
    return servers[1]


class LogWatch:
    """The part of each server's log written since the test began."""

    def __init__(self, uis):
        self.uis = uis
        self.marks = [len(u.log_text()) for u in uis]

    def new(self, index: int = 0) -> str:
        return self.uis[index].log_text()[self.marks[index]:]

    def mark(self) -> None:
        self.marks = [len(u.log_text()) for u in self.uis]


def bad_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Traceback" in line or "Error" in line]


@pytest.fixture
def log(servers):
    """Fails the test if a server logged a traceback or an error line while it ran."""
    watch = LogWatch(servers)
    yield watch
    for i, server in enumerate(servers):
        chunk = watch.new(i)
        bad = bad_lines(chunk)
        assert not bad, f"server {i} logged errors during the test:\n" + chunk[-4000:]


# ---- helpers -------------------------------------------------------------------------------

def pixels(b64: str):
    import numpy as np

    return np.asarray(launcher.decode_image(b64).convert("RGB")).astype(np.int16)


def size_of(b64: str):
    return launcher.decode_image(b64).size


RE_PARAM = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext_params(infotext: str) -> dict:
    """The last line's ``Key: value`` pairs, JSON-quoted values unquoted (as the WebUI does)."""
    last = infotext.strip().splitlines()[-1]
    out = {}
    for key, value in RE_PARAM.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        out[key.strip()] = value
    return out


def infotext(result: dict) -> str:
    return launcher.WebUI.info(result)["infotexts"][0]


def restored_preset(params: dict):
    from lib_mixture_webui.args import pasted_config, read_args

    text = pasted_config(params)
    assert text is not None, f"no {KEY!r} in {sorted(params)}"
    enabled, restored = read_args([True, text])
    assert enabled
    return restored


def check_round_trip(result: dict, config: dict, size=(W, H)):
    """Infotext carries the configuration, and it parses back to the one sent."""
    from lib_mixture.preset import parse_preset

    text = infotext(result)
    params = parse_infotext_params(text)
    assert KEY in params, text
    json.loads(params[KEY])  # plain JSON once unquoted
    restored = restored_preset(params)
    expected = parse_preset(config)
    assert restored.tiles == expected.tiles
    assert restored.regions == expected.regions
    assert restored.passes == expected.passes
    assert (restored.canvas.width, restored.canvas.height) == size  # the canvas the boxes refer to
    return restored


def init_image():
    from PIL import Image

    import numpy as np

    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // W, y * 255 // H, (x + y) % 256], axis=-1).astype("uint8")
    return Image.fromarray(rgb, "RGB")


def expect_http_error(call, *args, **kwargs) -> launcher.WebUIError:
    with pytest.raises(launcher.WebUIError) as info:
        call(*args, **kwargs)
    assert info.value.status is not None and info.value.status >= 400, str(info.value)
    return info.value


def expect_one_logged_failure(chunk: str, field: str) -> None:
    """The log holds one API error report, for our PresetError naming the field, and nothing else.

    The host prints the report with the chained tracebacks of its HTTP middleware, so several
    "Traceback" lines may belong to this one report; none may come before it.
    """
    assert chunk.count("*** API error") == 1, chunk[-4000:]
    before, report = chunk.split("*** API error", 1)
    assert not bad_lines(before), before[-4000:]
    assert "PresetError" in report and field in report, report[-4000:]
    errors = [line.strip() for line in report.splitlines() if re.match(r"\s*[\w.]+(Error|Exception):", line)]
    assert errors and all("PresetError" in e for e in errors), errors


# ---- tests ---------------------------------------------------------------------------------

def test_servers_started_cleanly(servers):
    ext, base = servers
    for server in servers:
        text = server.log_text()
        start = text[:text.find(launcher.STARTUP_MARKER)]
        blocks = start.split("\n*** ")[1:]  # the WebUI's errors.report() blocks
        tolerated = [b for b in blocks if all(s in b for s in STARTUP_ALLOWED)]
        assert start.count("Traceback") == sum(b.count("Traceback") for b in tolerated), start[-4000:]
    assert "Mixture of Diffusers" not in base.log_text()


@pytest.mark.parametrize("is_img2img", [False, True])
def test_script_info_lists_the_extension(ui, baseline, log, is_img2img):
    info = ui.get("/sdapi/v1/script-info")
    ours = [s for s in info if s["name"] == SCRIPT.lower() and s["is_img2img"] is is_img2img]
    assert len(ours) == 1, [s["name"] for s in info]
    assert ours[0]["is_alwayson"] is True
    assert len(ours[0]["args"]) == 2  # [enabled, configuration JSON]
    assert ours[0]["args"][0]["value"] is False  # off by default
    assert SCRIPT.lower() not in {s["name"] for s in baseline.get("/sdapi/v1/script-info")}


def test_txt2img_tiles(ui, log):
    config = preset(tiles=TILES)
    res = ui.txt2img(BASE_JOB, **mod(True, config))
    assert size_of(res["images"][0]) == (W, H)
    check_round_trip(res, config)


def test_txt2img_tiles_differ_from_the_plain_image(ui, log):
    plain = ui.txt2img(BASE_JOB)
    tiled = ui.txt2img(BASE_JOB, **mod(True, preset(tiles=TILES)))
    assert (pixels(plain["images"][0]) != pixels(tiled["images"][0])).any()


def test_img2img_tiles(ui, log):
    config = preset(tiles=TILES)
    res = ui.img2img([init_image()], BASE_JOB, denoising_strength=0.6, **mod(True, json.dumps(config)))
    assert size_of(res["images"][0]) == (W, H)
    check_round_trip(res, config)


def test_three_regions_with_their_own_prompts_and_cfg(ui, log):
    config = preset(regions=THREE_REGIONS)
    res = ui.txt2img(BASE_JOB, **mod(True, config))
    assert size_of(res["images"][0]) == (W, H)
    restored = check_round_trip(res, config)
    assert [r.cfg_scale for r in restored.regions] == [4, 9, 12.5]
    assert [r.prompt for r in restored.regions] == ["a red barn", "a dirt road", "a giant robot"]
    # A region's own guidance scale is used: changing it changes the image, in its box.
    changed = [dict(r) for r in THREE_REGIONS]
    changed[0]["cfg_scale"] = 1
    other = ui.txt2img(BASE_JOB, **mod(True, preset(regions=changed)))
    diff = (pixels(res["images"][0]) != pixels(other["images"][0])).any(axis=-1)
    assert diff[:, :56].any()  # region 0's own box (the change spreads through later steps)


def test_img2img_tiles_and_three_regions(ui, log):
    config = preset(tiles=TILES, regions=THREE_REGIONS)
    res = ui.img2img([init_image()], BASE_JOB, denoising_strength=0.7, **mod(True, config))
    assert size_of(res["images"][0]) == (W, H)
    check_round_trip(res, config)


def test_hires_pass_tiled(ui, log):
    config = preset(tiles=TILES, regions=THREE_REGIONS[:1], passes="both")
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.5,
             "hr_second_pass_steps": 2}
    res = ui.txt2img(BASE_JOB, **hires, **mod(True, config))
    assert size_of(res["images"][0]) == (2 * W, 2 * H)
    params = parse_infotext_params(infotext(res))
    assert float(params["Hires upscale"]) == 2 and params.get("Hires upscaler") == "Latent"
    check_round_trip(res, config)  # boxes stay in first-pass pixels
    # The hires pass is mixed too: hires-only differs from no mixture at all.
    only_hires = ui.txt2img(BASE_JOB, **hires, **mod(True, preset(tiles=TILES, passes="hires")))
    plain = ui.txt2img(BASE_JOB, **hires)
    assert size_of(only_hires["images"][0]) == (2 * W, 2 * H)
    assert (pixels(only_hires["images"][0]) != pixels(plain["images"][0])).any()


def test_a_batch_of_two_images_with_a_seeded_region(ui, log):
    regions = [dict(THREE_REGIONS[0]), dict(THREE_REGIONS[1], seed=1234), dict(THREE_REGIONS[2])]
    config = preset(tiles=TILES, regions=regions)
    res = ui.txt2img(BASE_JOB, batch_size=2, **mod(True, config))
    assert len(res["images"]) == 2 and all(size_of(b) == (W, H) for b in res["images"])
    info = launcher.WebUI.info(res)
    assert len(info["infotexts"]) == 2 and all(KEY in t for t in info["infotexts"])
    first, second = (pixels(b) for b in res["images"])
    assert (first != second).any()  # seeds 11 and 12, region seeds 1234 and 1235
    restored = restored_preset(parse_infotext_params(info["infotexts"][1]))
    assert [r.seed for r in restored.regions] == [-1, 1235, -1]  # image 2 used the region seed + 1
    unseeded = ui.txt2img(BASE_JOB, batch_size=2, **mod(True, preset(tiles=TILES, regions=THREE_REGIONS)))
    assert (pixels(unseeded["images"][0]) != first).any()  # the region's own noise was used


def test_interrupt_mid_job_returns_a_full_size_image_and_the_next_job_is_unaffected(ui, log):
    import threading
    import time

    config = preset(tiles=TILES, regions=THREE_REGIONS)
    reference = ui.txt2img(BASE_JOB, **mod(True, config))
    steps = 60
    results, errors = [], []

    def long_job():
        try:
            results.append(ui.txt2img(BASE_JOB, steps=steps, **mod(True, config)))
        except Exception as e:  # reported below
            errors.append(e)

    log.mark()
    worker = threading.Thread(target=long_job)
    worker.start()
    started = re.compile(rf"\|\s*[1-9]\d*/{steps} \[")
    deadline = time.monotonic() + 300
    while not started.search(log.new()) and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    ui.post("/sdapi/v1/interrupt")
    worker.join(600)
    assert not errors, errors
    assert len(results) == 1 and size_of(results[0]["images"][0]) == (W, H)
    assert f"| {steps}/{steps} [" not in log.new(), "the job ran to the end: the interrupt came too late"
    again = ui.txt2img(BASE_JOB, **mod(True, config))
    assert (pixels(again["images"][0]) == pixels(reference["images"][0])).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_family(ui, log, sampler):
    import numpy as np

    config = preset(tiles=TILES, regions=THREE_REGIONS)
    job = dict(BASE_JOB, sampler_name=sampler)
    if sampler == "LCM":
        job["cfg_scale"] = 1.5
    res = ui.txt2img(job, **mod(True, config))
    assert launcher.WebUI.info(res)["sampler_name"] == sampler
    image = pixels(res["images"][0])
    assert image.shape == (H, W, 3) and image.std() > 0 and np.isfinite(image).all()
    check_round_trip(res, config)


def test_png_info_restores_the_configuration(ui, log):
    config = preset(tiles=TILES, regions=THREE_REGIONS, passes="first")
    res = ui.txt2img(BASE_JOB, **mod(True, config))
    # The API's PNG carries the infotext as its "parameters" text chunk, as a saved image does.
    image = launcher.decode_image(res["images"][0])
    assert image.info.get("parameters") == infotext(res)
    answer = ui.post("/sdapi/v1/png-info", {"image": res["images"][0]})
    assert KEY in answer["info"]
    params = answer.get("parameters") or parse_infotext_params(answer["info"])
    restored = restored_preset(params)
    assert restored.passes == "first" and restored.regions == check_round_trip(res, config).regions


def test_an_api_request_from_the_infotext_alone_reproduces_the_image(ui, log):
    """The API's ``infotext`` field goes through the host's paste machinery (our infotext_fields)."""
    config = preset(tiles=TILES, regions=THREE_REGIONS)
    original = ui.txt2img(BASE_JOB, **mod(True, config))
    again = ui.post("/sdapi/v1/txt2img", {"infotext": infotext(original), "send_images": True, "save_images": False})
    assert KEY in infotext(again)
    assert (pixels(again["images"][0]) == pixels(original["images"][0])).all()


def test_auto_tiles_are_chosen_for_the_server_and_reproduce_from_the_infotext(ui, log):
    """The default preset ("auto" tile size and batch) over HTTP: the choice for the server's free
    memory is in the infotext, with the chosen tile size in the preset, and the infotext alone
    gives the same image again."""
    job = dict(BASE_JOB, width=1024, height=640, steps=2)
    original = ui.txt2img(job, **mod(True, preset(tiles={})))
    params = parse_infotext_params(infotext(original))
    note = params["Mixture of Diffusers auto"]
    assert note.startswith("auto: ") and "sd15-fp32-sdpa-cpu-2core" in note and "GiB free on cpu" in note
    tiles = json.loads(params[KEY])["tiles"]
    assert 512 <= tiles["width"] == tiles["height"] <= 768 and tiles["batch_size"] == "auto"
    assert f"auto: {tiles['width']}x{tiles['height']} px tiles" in note
    again = ui.post("/sdapi/v1/txt2img", {"infotext": infotext(original), "send_images": True, "save_images": False})
    # the same crops; the batch is chosen again (the CPU UNet rounds batches within one 8-bit level)
    assert abs(pixels(again["images"][0]) - pixels(original["images"][0])).max() <= 1


def test_preset_as_the_sole_argument(ui, log):
    config = preset(tiles=TILES, regions=THREE_REGIONS[:2] + [dict(THREE_REGIONS[2], weight=1)])
    as_object = ui.txt2img(BASE_JOB, **mod(config))
    check_round_trip(as_object, config)
    as_text = ui.txt2img(BASE_JOB, **mod(json.dumps(config)))
    as_pair = ui.txt2img(BASE_JOB, **mod(True, config))
    assert (pixels(as_object["images"][0]) == pixels(as_text["images"][0])).all()
    assert (pixels(as_object["images"][0]) == pixels(as_pair["images"][0])).all()


def test_a_bad_preset_fails_the_request_naming_the_field(ui, log):
    bad = preset(tiles=TILES, regions=[dict(THREE_REGIONS[0], cfg_scale=-1)])
    err = expect_http_error(ui.txt2img, BASE_JOB, **mod(bad))
    assert "regions[0].cfg_scale" in err.body, err.body
    assert "-1 is out of range" in err.body
    expect_one_logged_failure(log.new(), "regions[0].cfg_scale")
    # Unknown keys too, and in img2img; each failure logged once, naming the field.
    log.mark()
    err = expect_http_error(ui.img2img, [init_image()], BASE_JOB, **mod(True, preset(tilez=TILES)))
    assert "tilez" in err.body, err.body
    expect_one_logged_failure(log.new(), "tilez")
    log.mark()
    # The server is fine afterwards.
    res = ui.txt2img(BASE_JOB, **mod(True, preset(tiles=TILES)))
    assert size_of(res["images"][0]) == (W, H)


@pytest.mark.parametrize("off", ["args_false", "no_alwayson_scripts", "enabled_false_no_config"])
def test_txt2img_with_the_extension_off_is_bit_identical_to_a_webui_without_it(ui, baseline, log, off):
    extra = {"args_false": mod(False, preset(tiles=TILES, regions=THREE_REGIONS)),
             "no_alwayson_scripts": {},
             "enabled_false_no_config": mod(False)}[off]
    ours = ui.txt2img(BASE_JOB, **extra)
    theirs = baseline.txt2img(BASE_JOB)
    assert (pixels(ours["images"][0]) == pixels(theirs["images"][0])).all()
    assert KEY not in infotext(ours)


def test_img2img_and_hires_with_the_extension_off_are_bit_identical(ui, baseline, log):
    job = dict(BASE_JOB, sampler_name="DPM++ 2M", denoising_strength=0.6)
    ours = ui.img2img([init_image()], job, **mod(False, preset(tiles=TILES)))
    theirs = baseline.img2img([init_image()], job)
    assert (pixels(ours["images"][0]) == pixels(theirs["images"][0])).all()
    hires = dict(BASE_JOB, enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
                 hr_second_pass_steps=2)
    ours = ui.txt2img(hires, **mod(False, preset(tiles=TILES)))
    theirs = baseline.txt2img(hires)
    assert (pixels(ours["images"][0]) == pixels(theirs["images"][0])).all()


def test_off_after_on_leaves_nothing_behind(ui, baseline, log):
    ui.txt2img(BASE_JOB, **mod(True, preset(tiles=TILES, regions=THREE_REGIONS)))
    ours = ui.txt2img(BASE_JOB)
    theirs = baseline.txt2img(BASE_JOB)
    assert (pixels(ours["images"][0]) == pixels(theirs["images"][0])).all()


# ---- upscale workflow ----------------------------------------------------------------------

UHD = {"width": 768, "height": 768, "overlap": 128, "batch_size": 4}


def source_image(w=512, h=288):
    from PIL import Image

    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, ((x // 32 + y // 32) % 2) * 200], axis=-1).astype("uint8")
    return Image.fromarray(rgb, "RGB")


def test_upscale_512x288_to_4k_uhd_with_tiled_mixture_and_tiled_vae(ui, log):
    from lib_mixture.preset import parse_preset

    # vae "auto": on this CPU the plain VAE fits, and the tiled one is tested in-process
    config = preset(tiles=UHD, upscale={"upscaler": "Lanczos", "width": 3840, "height": 2160, "fit": "crop"})
    job = dict(BASE_JOB, width=512, height=288, steps=4, denoising_strength=0.3)
    res = ui.img2img([source_image()], job, **mod(True, config))
    image = launcher.decode_image(res["images"][0])
    assert image.size == (3840, 2160)
    params = parse_infotext_params(infotext(res))
    assert params["Size"] == "3840x2160"
    restored = restored_preset(params)
    expected = parse_preset(config)
    assert (restored.upscale, restored.vae, restored.tiles) == (expected.upscale, expected.vae, expected.tiles)
    text = log.new()
    assert "upscaled 512x288 to 3840x2160 with Lanczos (crop)" in text


@pytest.mark.parametrize("upscale, field, words", [
    ({"upscaler": "R-ESRGAN 9x"}, "upscale.upscaler", "no upscaler named 'R-ESRGAN 9x'"),
    ({"scale": 16}, "upscale.scale", "takes this 1100x64 image to 17600x1024"),
    ({"scale": 0}, "upscale.scale", "0 is out of range"),
    ({"scale": -1}, "upscale.scale", "-1 is out of range"),
    ({"width": 3841, "height": 2160}, "upscale.width", "not a multiple of 8"),
])
def test_bad_upscale_input_fails_the_request_naming_the_field(ui, log, upscale, field, words):
    bad = preset(tiles=TILES, upscale=upscale)
    err = expect_http_error(ui.img2img, [source_image(1100, 64)], BASE_JOB, **mod(True, bad))
    assert field in err.body and words in err.body, err.body
    expect_one_logged_failure(log.new(), field)
    log.mark()


# ---- the WebUI's envelope: any size, per-image infotext (issue: sizes, batches) --------------

HIRES_13 = {"width": 256, "height": 384, "enable_hr": True, "hr_scale": 1.3, "hr_upscaler": "Lanczos",
            "hr_second_pass_steps": 2, "denoising_strength": 0.5, "steps": 2}
GRID_192 = {"width": 192, "height": 192, "overlap": 32, "batch_size": 4}


@pytest.mark.parametrize("vae", [None, {"tiling": "on", "tile": 64}, {"tiling": "off"}], ids=["auto", "on", "off"])
def test_hires_fix_at_1_3x_off_the_8px_grid(ui, baseline, log, vae):
    config = preset(tiles=GRID_192, **({"vae": vae} if vae else {}))
    ours = ui.txt2img(BASE_JOB, **HIRES_13, **mod(True, config))
    theirs = baseline.txt2img(BASE_JOB, **HIRES_13)
    assert size_of(ours["images"][0]) == size_of(theirs["images"][0])


def test_img2img_of_a_252x188_image(ui, baseline, log):
    job = dict(BASE_JOB, width=252, height=188, denoising_strength=0.6)
    source = init_image().resize((252, 188))
    ours = ui.img2img([source], job, **mod(True, preset(tiles=TILES, vae={"tiling": "on", "tile": 64})))
    theirs = baseline.img2img([source], job)
    assert size_of(ours["images"][0]) == size_of(theirs["images"][0])


def test_a_region_seed_on_a_256x196_canvas_is_used(ui, log):
    regions = [{"x": 0, "y": 0, "width": 128, "height": 196, "seed": 4321}]
    job = dict(BASE_JOB, width=256, height=196)
    seeded = ui.txt2img(job, **mod(True, preset(tiles=TILES, regions=regions)))
    unseeded = ui.txt2img(job, **mod(True, preset(tiles=TILES, regions=[dict(regions[0], seed=-1)])))
    a, b = pixels(seeded["images"][0]), pixels(unseeded["images"][0])
    assert (a[:, :100] != b[:, :100]).any()  # the region's own noise was used (the log stays clean)


def test_image_2_of_batch_count_2_reproduces_from_its_png_info(ui, log):
    regions = [dict(THREE_REGIONS[0], seed=4321), THREE_REGIONS[1], THREE_REGIONS[2]]
    res = ui.txt2img(dict(BASE_JOB, seed=777), n_iter=2, **mod(True, preset(tiles=TILES, regions=regions)))
    texts = launcher.WebUI.info(res)["infotexts"]
    assert len(res["images"]) == 2 and len(texts) == 2
    params = parse_infotext_params(texts[1])
    assert params["Seed"] == "778" and [r.seed for r in restored_preset(params).regions] == [4322, -1, -1]
    again = ui.post("/sdapi/v1/txt2img", {"infotext": texts[1], "send_images": True, "save_images": False})
    assert (pixels(again["images"][0]) == pixels(res["images"][1])).all()


# ---- what a caller may make the server read or do (issue: security) ---------------------------

def guide_region(image):
    return {"x": 0, "y": 0, "width": 96, "height": 128, "prompt": "x", "guide": {"image": image, "strength": 1.0}}


def data_url_of(path):
    import base64

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def test_guide_paths_from_the_api_are_refused_alike_and_nothing_is_read(ui, log, guide_files):
    allowed, outside = guide_files
    sources = [str(allowed / "red.png"), "red.png", str(outside / "secret.png"), "/etc/passwd",
               "/nonexistent/file.png", "../outside/secret.png", "escape.png", str(allowed / "escape.png"),
               "sha256:0123456789abcdef"]
    bodies = set()
    for image in sources:
        log.mark()
        job = dict(BASE_JOB, override_settings={"mod_guide_paths_from_api": True})  # restrict_api: ignored
        err = expect_http_error(ui.txt2img, job, **mod(True, preset(tiles=TILES, regions=[guide_region(image)])))
        expect_one_logged_failure(log.new(), "regions[0].guide.image")
        assert (image not in err.body or image.startswith("sha256:")) and "passwd" not in err.body
        bodies.add(err.json().get("errors", err.body) if not image.startswith("sha256:") else "hash")
    log.mark()
    assert len(bodies) == 2, bodies  # one refusal for every path; one message for an unknown hash


def test_a_guide_as_a_data_url_works_and_the_infotext_holds_only_its_hash(ui, log, guide_files):
    allowed, _ = guide_files
    url = data_url_of(allowed / "red.png")
    config = preset(tiles=TILES, regions=[guide_region(url)])
    res = ui.txt2img(BASE_JOB, **mod(True, config))
    text = infotext(res)
    assert "base64" not in text and str(allowed) not in text
    guide = json.loads(parse_infotext_params(text)[KEY])["regions"][0]["guide"]
    assert guide["image"].startswith("sha256:") and len(guide["image"]) == 23
    # held to the guide (the tiny model's VAE is random, so compare two guides, not colours)
    from PIL import Image

    import io, base64  # noqa: E401
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 10, 250)).save(buf, format="PNG")
    blue = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    other = ui.txt2img(BASE_JOB, **mod(True, preset(tiles=TILES, regions=[guide_region(blue)])))
    diff = (pixels(res["images"][0]) != pixels(other["images"][0])).any(axis=-1)
    assert diff[:, :64].mean() > 0.5
    # the infotext alone does not bring the image back: the request says to give it again
    log.mark()
    err = expect_http_error(ui.post, "/sdapi/v1/txt2img", {"infotext": text, "send_images": True})
    assert "give the image again" in err.body
    expect_one_logged_failure(log.new(), "regions[0].guide.image")
    log.mark()


@pytest.mark.parametrize("case", ["regions", "tiles", "depth", "text", "bomb"])
def test_limits_stop_a_request_before_any_work(ui, baseline, log, case):
    import base64
    import io
    import time

    from PIL import Image

    region = {"x": 0, "y": 0, "width": 8, "height": 8}
    nested: object = 1
    for _ in range(40):
        nested = [nested]
    buf = io.BytesIO()
    Image.new("RGB", (9000, 9000), "white").save(buf, format="PNG")  # 81 MP in a few hundred KiB
    bomb = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    config, field = {
        "regions": (preset(tiles=TILES, regions=[region] * 300), "regions"),
        "tiles": (preset(tiles={"width": 64, "height": 64, "overlap": 56}), "tiles"),
        "depth": (preset(tiles=TILES, name=nested), "preset"),
        "text": (preset(tiles=TILES, regions=[dict(region, prompt="x" * 20_000)]), "regions[0].prompt"),
        "bomb": (preset(tiles=TILES, regions=[guide_region(bomb)]), "regions[0].guide.image"),
    }[case]
    job = dict(BASE_JOB, width=4096, height=4096) if case == "tiles" else BASE_JOB
    started = time.monotonic()
    err = expect_http_error(ui.txt2img, job, **mod(True, config))
    assert time.monotonic() - started < 60 and field in err.body, err.body
    assert "allowed at most" in err.body
    expect_one_logged_failure(log.new(), field)
    log.mark()
    # the next plain job is the WebUI's own
    assert (pixels(ui.txt2img(BASE_JOB)["images"][0]) == pixels(baseline.txt2img(BASE_JOB)["images"][0])).all()


def test_a_sample_of_the_fuzzer_through_the_api(ui, baseline, log):
    """Hostile arguments from the fuzzer's alphabet: each fails the request naming a field, the
    log holds that one report, and the next plain job is the WebUI's own."""
    samples = [
        (["{", "x"], "preset"), ([True, 42], "args[1]"), ([[1, 2]], "args[0]"), ([3, {}], "args[0]"), ([True, {"version": "1"}], "version"),
        ([{"version": 1, "tiles": {"width": 1e999}}], "tiles.width"),
        ([{"version": 1, "regions": [{"x": 0, "y": 0, "width": 8, "height": 8, "guide": {"image": "sha256:zz"}}]}],
         "regions[0].guide.image"),
        ([{"version": 1, "tiles": {}, "__proto__": {"x": 1}}], "__proto__"),
        ([{"version": 1, "regions": [{"x": "NaN", "y": 0, "width": 8, "height": 8}]}], "regions[0].x"),
    ]
    for args, field in samples:
        log.mark()
        err = expect_http_error(ui.txt2img, BASE_JOB, alwayson_scripts={SCRIPT: {"args": args}})
        assert field in err.body, (args, err.body)
        expect_one_logged_failure(log.new(), field)
    log.mark()
    assert (pixels(ui.txt2img(BASE_JOB)["images"][0]) == pixels(baseline.txt2img(BASE_JOB)["images"][0])).all()
