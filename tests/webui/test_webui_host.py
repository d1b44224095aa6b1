"""Checks of the real-WebUI test harness (tiny checkpoint, server launcher, in-process boot).

All skipped unless ``MOD_WEBUI_DIR`` points at a WebUI v1.10.1 checkout with its venv.
The in-process tests also need ``MOD_WEBUI_INPROCESS=1`` and must run alone, with the WebUI's
python and cwd = the WebUI dir:

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_INPROCESS=1 venv/bin/python -m pytest -p no:cacheprovider \
        /path/to/repo/tests/webui/test_webui_host.py -k inprocess

``MOD_TINY_CKPT`` may name an already built tiny checkpoint to save the build.
"""

from __future__ import annotations

import io
import os
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import launcher  # noqa: E402

pytestmark = pytest.mark.skipif(not launcher.webui_available(),
                                reason="MOD_WEBUI_DIR does not point at a WebUI with a venv")

INPROCESS = os.environ.get("MOD_WEBUI_INPROCESS") == "1"


# ---- tiny checkpoint --------------------------------------------------------------------

@pytest.mark.skipif(INPROCESS, reason="server-side tests; run without MOD_WEBUI_INPROCESS")
def test_tiny_checkpoint_is_deterministic(tmp_path):
    pytest.importorskip("safetensors")
    import tiny_checkpoint
    from safetensors import safe_open

    a = tiny_checkpoint.build_tiny_checkpoint(tmp_path / "a")
    b = tiny_checkpoint.build_tiny_checkpoint(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    with safe_open(str(a), "pt") as f:
        assert list(f.metadata()) == ["tiny_checkpoint"]
        keys = set(f.keys())
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert (a.with_suffix(".yaml")).is_file()
    assert (a.parent / tiny_checkpoint.CLIP_DIR_NAME / "vocab.json").is_file()


# ---- server through the launcher --------------------------------------------------------

@pytest.mark.skipif(INPROCESS, reason="server-side tests; run without MOD_WEBUI_INPROCESS")
def test_server_txt2img_and_img2img(tiny_ckpt):
    with launcher.WebUI(tiny_ckpt) as ui:
        res = ui.txt2img(prompt="a cat", width=64, height=64, steps=4, seed=3)
        assert len(res["images"]) == 1
        assert launcher.WebUI.info(res)["seed"] == 3
        again = ui.txt2img(prompt="a cat", width=64, height=64, steps=4, seed=3)
        assert ui.image_bytes(again) == ui.image_bytes(res)
        res2 = ui.img2img([res["images"][0]], width=64, height=64, steps=4)
        assert len(res2["images"]) == 1
        try:
            from PIL import Image  # noqa: F401
        except ImportError:
            return
        assert ui.images(res2)[0].size == (64, 64)


PROBE_SCRIPT = textwrap.dedent('''
    import modules.scripts as scripts

    class Script(scripts.Script):
        def title(self):
            return "Harness Probe"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):  # without ui(), /sdapi/v1/script-info omits the script
            return []

        def process(self, p, *args):
            print("HARNESS-PROBE process", p.width, p.height, flush=True)
''')


@pytest.mark.skipif(INPROCESS, reason="server-side tests; run without MOD_WEBUI_INPROCESS")
@pytest.mark.parametrize("disabled", [False, True])
def test_server_symlinked_extension(tiny_ckpt, tmp_path, disabled):
    ext = tmp_path / "harness-probe"
    (ext / "scripts").mkdir(parents=True)
    (ext / "scripts" / "probe.py").write_text(PROBE_SCRIPT)
    with launcher.WebUI(tiny_ckpt, extensions={"harness-probe": ext},
                        disable_extra_extensions=disabled) as ui:
        link = ui.data_dir / "extensions" / "harness-probe"
        assert link.is_symlink()
        names = [s["name"] for s in ui.get("/sdapi/v1/script-info")]
        ui.txt2img(width=64, height=64, steps=2)
        assert ("harness probe" in names) is (not disabled)
        assert ("HARNESS-PROBE process 64 64" in ui.log_text()) is (not disabled)
    assert not link.exists()


def test_server_error_reaches_caller(tiny_ckpt):
    if INPROCESS:
        pytest.skip("server-side test")
    with launcher.WebUI(tiny_ckpt) as ui:
        with pytest.raises(launcher.WebUIError) as info:
            ui.post("/sdapi/v1/txt2img", {"width": "not a number"})
        assert info.value.status == 422


# ---- in-process -------------------------------------------------------------------------

needs_inprocess = pytest.mark.skipif(not INPROCESS, reason="set MOD_WEBUI_INPROCESS=1 and run "
                                     "with the WebUI's python, cwd = the WebUI dir")


@needs_inprocess
def test_inprocess_imports_cfg_denoiser(host):
    import modules.sd_samplers_cfg_denoiser as cfgd

    assert hasattr(cfgd, "CFGDenoiser")
    assert host.sd_model is not None
    assert str(host.device) == "cpu"


@needs_inprocess
def test_inprocess_txt2img_runs_alwayson_script_and_denoiser(host, monkeypatch):
    import inprocess
    import modules.scripts as scripts
    import modules.sd_samplers_cfg_denoiser as cfgd

    calls = []

    class Probe(scripts.Script):
        def title(self):
            return "In-process Probe"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, flag):
            calls.append(("process", flag))

        def process_before_every_sampling(self, p, flag, **kwargs):
            calls.append(("before_sampling", tuple(kwargs["x"].shape)))

    seen = []
    original = cfgd.CFGDenoiser.forward

    def spy(self, x, sigma, *args, **kwargs):
        seen.append(tuple(x.shape))
        return original(self, x, sigma, *args, **kwargs)

    monkeypatch.setattr(cfgd.CFGDenoiser, "forward", spy)
    res = inprocess.txt2img([(Probe(), [True])], prompt="a cat", steps=3, width=64, height=64)
    assert res.images[0].size == (64, 64)
    assert calls[0] == ("process", True)
    assert calls[1] == ("before_sampling", (1, 4, 8, 8))
    assert seen and seen[0] == (1, 4, 8, 8)

    buf = io.BytesIO()
    res.images[0].save(buf, format="PNG")
    res2 = inprocess.img2img([res.images[0]], steps=4, width=64, height=64)
    assert res2.images[0].size == (64, 64)
