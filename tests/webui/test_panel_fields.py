"""The panel's gradio controls take their ranges and defaults from the field table
(lib_mixture/fields.py): the panel accepts every value the preset accepts. In-process, like
test_mixture_inprocess.py (gradio and the WebUI's ``modules`` must import)."""


import launcher
import pytest

from lib_mixture.fields import FIELD

pytestmark = launcher.inprocess_skips("see test_mixture_inprocess.py")

# control -> the preset field it writes
NUMBERS = {"variance": "weights.variance", "tile_w": "tiles.width", "tile_h": "tiles.height",
           "overlap": "tiles.overlap", "batch": "tiles.batch_size", "upscale_scale": "upscale.scale",
           "upscale_width": "upscale.width", "upscale_height": "upscale.height",
           "upscale_guide": "upscale.guide_strength", "vae_tile": "vae.tile"}
CHOICES = {"passes": "passes", "weighting": "weights.kind", "upscale_fit": "upscale.fit", "vae_tiling": "vae.tiling"}


@pytest.fixture(scope="module")
def panel(host):
    from lib_mixture_webui import panel
    return panel


@pytest.mark.parametrize("name", NUMBERS)
def test_each_number_control_spans_its_field(panel, name):
    control, f = panel.CONTROLS[name], FIELD[NUMBERS[name]]
    assert control["maximum"] == f.maximum
    if f.exclusive_minimum:  # gradio bounds are inclusive: one step above the open minimum
        assert f.minimum < control["minimum"] <= control["step"]
    elif name == "vae_tile":  # 0 stands for null (chosen from free memory)
        assert control["minimum"] == 0 and f.nullable
    elif f.auto:  # 0 stands for "auto" (chosen for the device's free memory), the default
        assert control["minimum"] == 0 and control["value"] == 0 and f.default == "auto" and "0: auto" in control["info"]
    else:
        assert control["minimum"] == f.minimum
    if name not in ("upscale_width", "upscale_height", "vae_tile") and not f.auto:  # a target, or 0 for null/auto
        assert control["value"] == f.default
    assert f"{f.maximum:g}" in control["info"]


@pytest.mark.parametrize("name", CHOICES)
def test_each_choice_control_offers_its_field_options(panel, name):
    control, f = panel.CONTROLS[name], FIELD[CHOICES[name]]
    assert tuple(control["choices"]) == f.options and control["value"] == f.default


def test_the_built_panel_uses_the_table(panel):
    import gradio as gr
    with gr.Blocks() as demo:
        panel.build(False)
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    tile, variance = by_id["mod_txt2img_tile_w"], by_id["mod_txt2img_variance"]
    assert (tile.minimum, tile.maximum, tile.value) == (0, FIELD["tiles.width"].maximum, 0)  # 0: "auto", the default
    assert variance.maximum == FIELD["weights.variance"].maximum
    editor = by_id["mod_txt2img_editor"].value  # what "auto" is previewed for: this host's model and memory
    assert 'data-auto-model="sd15-fp32-sdpa-cpu-2core"' in editor and "GiB free on cpu at start-up" in editor


def test_the_controlnet_tile_button_is_img2img_only_and_hidden_without_a_tile_model(panel):
    import gradio as gr
    with gr.Blocks() as demo:
        panel.build(False)
        panel.build(True)
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert "mod_txt2img_up4kcn" not in by_id
    assert by_id["mod_img2img_up4kcn"].visible is False  # this host has no ControlNet
