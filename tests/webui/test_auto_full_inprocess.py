""""auto" on the full-width SD 1.5 architecture in the real WebUI on the CPU: the sampling of a
whole job stays within the memory the choice was made for.

The memory the cost model predicts for the chosen plan's largest call is checked against the
growth of the process's peak RSS while the job samples (the VAE decode is left out: it has its
own budget, `lib_mixture_webui.vae`). Opt-in like the other full-width modules (a 4.2 GB random
checkpoint, `full_width.build_sd15`; a few minutes on two cores):

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_INPROCESS=1 MOD_FULL_WIDTH=1 venv/bin/python -m pytest \\
        -p no:cacheprovider /path/to/repo/tests/webui/test_auto_full_inprocess.py
"""

from __future__ import annotations

import json
import os

import pytest

import launcher  # tests/webui is on sys.path (conftest.py)

pytestmark = launcher.inprocess_skips() + [
    pytest.mark.skipif(os.environ.get("MOD_FULL_WIDTH") != "1",
                       reason="the full-width SD 1.5 checkpoint is 4.2 GB and a job takes minutes on a CPU: "
                              "set MOD_FULL_WIDTH=1 to run")]

GIB = 2**30
W, H = 1024, 768


@pytest.fixture(scope="module")
def full(host, tmp_path_factory):
    import full_width
    import inprocess

    model = inprocess.load_checkpoint(full_width.build_sd15(tmp_path_factory.mktemp("auto-full-ckpt")))
    assert model.is_sd1 and model.model.diffusion_model.model_channels == 320
    yield model
    inprocess.load_checkpoint(inprocess.boot_checkpoint())


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def test_a_whole_job_samples_within_the_memory_it_was_planned_for(script, full, monkeypatch):
    from modules import processing, shared

    import inprocess
    from lib_mixture import cost
    from lib_mixture_webui.args import AUTO_KEY

    model = cost.for_host("sd1", "cpu", "fp32")
    activations = 2 * GIB  # what the job may add to the loaded model: a small card's worth
    shared.opts.mod_auto_memory_gib = (model.weights_bytes + activations) / GIB
    peaks = []
    decode = processing.decode_latent_batch

    def measured_decode(*args, **kwargs):  # sampling ends here: its peak, then the (tiled) decode
        peaks.append(_status_kib("VmHWM") * 1024)
        return decode(*args, **kwargs)
    monkeypatch.setattr(processing, "decode_latent_batch", measured_decode)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS starts again from the current RSS
    before = _status_kib("VmRSS") * 1024
    try:
        res = inprocess.txt2img([(script, [True, json.dumps({"version": 1, "tiles": {}})])],
                                width=W, height=H, steps=1, seed=3, prompt="a harbour at dusk")
    finally:
        shared.opts.mod_auto_memory_gib = 0
    from modules import infotext_utils

    from lib_mixture.auto_plan import Budget, resolve
    from lib_mixture.preset import parse_preset

    want = resolve(parse_preset({"version": 1, "tiles": {}}), [(W, H)],
                   Budget(model, model.weights_bytes + activations, "Settings → Mixture of Diffusers"))
    assert infotext_utils.parse_generation_parameters(res.infotexts[0])[AUTO_KEY] == want.note
    chosen = want.choice
    predicted = chosen.peak_bytes - model.weights_bytes
    grown = peaks[0] - before
    print(f"\nauto on full-width SD 1.5, {W}x{H}: {chosen.tile_width} px tiles, batch {chosen.batch_size}, "
          f"{chosen.calls} calls; predicted activations {predicted / GIB:.2f} GiB, peak RSS growth while sampling "
          f"{grown / GIB:.2f} GiB (budget {activations / GIB:.2f} GiB beyond the weights)")
    assert predicted <= activations
    assert grown <= activations, f"sampling grew the process by {grown / GIB:.2f} GiB; planned for {activations / GIB:.2f}"
    assert res.images[0].size == (W, H)
