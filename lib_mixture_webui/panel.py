"""The script's panel: the Mixture of Diffusers accordion of txt2img and img2img (gradio layout).

The whole configuration is one JSON text, ``config``. The other controls and the region editor
(javascript/mixture_of_diffusers.js, found by the elem_ids ``mod_<tab>_<name>``) only write it and
follow it, so the WebUI passes the script just ``[enabled, config]``. Building the panel has no
side effects: the API builds it again to learn the default values.
"""

from __future__ import annotations

import html
import json
from types import SimpleNamespace

import gradio as gr

from modules.ui_components import ToolButton

from lib_mixture.fields import FIELD
from lib_mixture.geometry import LATENT_FACTOR
from lib_mixture.preset import Preset, TileGrid
from lib_mixture_webui import controlnet_tile
from lib_mixture_webui.budget import panel_budget
from lib_mixture_webui import preset_handlers as handlers

try:
    from modules.ui_components import InputAccordion
except ImportError:  # WebUI before 1.7
    InputAccordion = None

DEFAULT_CONFIG = Preset(name="tile grid", tiles=TileGrid()).to_json()
MODES = ("tiles", "regions", "both")  # the panel's view of a preset: a tile grid, regions, or both
# Buttons the editor's script handles: the size and the tile grid of an upscale in one click.
TILE_PRESET_BUTTONS = (("up2x", "2x"), ("upqhd", "QHD 2560\u00d71440"), ("up4k", "4K UHD 3840\u00d72160"))
# img2img, when a ControlNet tile model is installed: 4K with upscale.controlnet_tile "auto".
CONTROLNET_TILE_BUTTON = ("up4kcn", "4K + ControlNet tile")
# img2img's Upscale target radio; javascript/mixture_of_diffusers_core.js (UPSCALE_CHOICES) maps it to the JSON:
# off = no "upscale" section, 2x = scale 2, QHD/4K = that width and height, scale / size = the number fields.
UPSCALE_TARGETS = ("off", "2x", "QHD 2560\u00d71440", "4K UHD 3840\u00d72160", "scale", "size")

# Each control's gradio arguments by its elem name: choices or range, default, label and help, in
# one place per control. Labels stay unique in a tab: the WebUI keeps ui-config.json defaults by
# tab/label (img2img has its own "Scale").
def _choice(path: str, label: str, info: str) -> dict:
    """A radio from a table row: its options and default."""
    f = FIELD[path]
    return dict(choices=list(f.options), value=f.default, label=label, info=info)


def _number(path: str, label: str, step: float, note: str = "", **override) -> dict:
    """A slider or number field from a table row: its range (an open minimum starts one step
    above it: gradio's bounds are inclusive), default and the allowed range in the help text."""
    f = FIELD[path]
    span = f"above {f.minimum:g}, up to" if f.exclusive_minimum else f"{f.minimum:g} to"
    out = dict(minimum=step if f.exclusive_minimum else f.minimum, maximum=f.maximum, value=f.default, step=step,
               label=label, info=f"{span} {f.maximum:g}{f.unit_text()}" + (f"; {note}" if note else ""))
    out.update(override)
    return out


CONTROLS = {
    "mode": dict(choices=list(MODES), value="tiles", label="Mode",
                 info="tiles: one grid, main prompt; regions: your boxes; both"),
    "passes": _choice("passes", "Hires fix passes", "which passes are mixed when hires fix is on"),
    "weighting": _choice("weights.kind", "Weighting", "how crops fade into each other"),
    "variance": _number("weights.variance", "Gaussian variance", 0.0001, "paper: 0.01; larger = softer"),
    # 0 stands for "auto" (chosen for the device's free memory when the job starts), as vae_tile's 0 for null.
    "tile_w": _number("tiles.width", "Tile width (px)", LATENT_FACTOR, "0: auto; snapped to 8", minimum=0, value=0),
    "tile_h": _number("tiles.height", "Tile height (px)", LATENT_FACTOR, "0: auto; snapped to 8", minimum=0, value=0),
    "overlap": _number("tiles.overlap", "Minimum tile overlap (px)", LATENT_FACTOR, "below the tile size, snapped to 8"),
    "batch": _number("tiles.batch_size", "Tile batch size", 1, "0: auto; crops per model call", minimum=0, value=0),
    "upscale_target": dict(choices=list(UPSCALE_TARGETS), value="off", label="Upscale target",
                           info="off; 2x; QHD / 4K: that size; scale / size: the fields below"),
    "upscale_fit": _choice("upscale.fit", "Upscale fit",
                           "another aspect ratio: crop fills and cuts, pad fits inside, stretch distorts"),
    "upscale_scale": _number("upscale.scale", "Upscale scale", 0.05, "sides snapped to 8 px"),
    "upscale_width": _number("upscale.width", "Upscale width (px)", LATENT_FACTOR, "target: size", value=3840,
                             precision=0),
    "upscale_height": _number("upscale.height", "Upscale height (px)", LATENT_FACTOR, "target: size", value=2160,
                              precision=0),
    "upscale_guide": _number("upscale.guide_strength", "Upscale guide strength", 0.05,
                             "the share of steps the upscaled image guides the canvas; 0 = off"),
    "vae_tiling": _choice("vae.tiling", "VAE tiling",
                          "auto: tiled when a plain VAE pass would not fit in free memory; on: always; off: never"),
    # 0 stands for null (chosen from the free memory): a slider has no empty value.
    "vae_tile": _number("vae.tile", "VAE tile size (px)", LATENT_FACTOR, "0: chosen from free memory", minimum=0,
                        value=0),
}


def build(is_img2img):
    """The panel's components; returns ``(enabled, config)``, the script's arguments in this order."""
    tab = "img2img" if is_img2img else "txt2img"

    def eid(name):
        return f"mod_{tab}_{name}"

    def control(kind, name, **extra):
        return kind(elem_id=eid(name), **CONTROLS[name], **extra)

    if InputAccordion is not None:
        enabled = InputAccordion(False, label="Mixture of Diffusers", elem_id=eid("enabled"))
        container = enabled
    else:
        container = gr.Accordion("Mixture of Diffusers", open=False)
    with container:
        if InputAccordion is None:
            enabled = gr.Checkbox(False, label="Enable", elem_id=eid("enabled"))
        with gr.Row(elem_classes=["mod-controls"]):
            control(gr.Radio, "mode")
            control(gr.Radio, "passes", visible=not is_img2img)  # img2img has no hires fix
            control(gr.Radio, "weighting")
            control(gr.Slider, "variance")
        with gr.Row(elem_classes=["mod-controls"]):
            for name in ("tile_w", "tile_h", "overlap", "batch"):
                control(gr.Slider, name)
        upscaler, upscalers = _upscale_controls(eid, control) if is_img2img else (None, [])
        with gr.Row(elem_classes=["mod-controls", "mod-vae"]):
            control(gr.Radio, "vae_tiling")
            control(gr.Slider, "vae_tile")
        with gr.Row(elem_classes=["mod-tile-presets"]):
            for key, label in TILE_PRESET_BUTTONS:
                gr.Button(label, size="sm", elem_id=eid(key), elem_classes=["mod-tile-preset"])
            if is_img2img:
                key, label = CONTROLNET_TILE_BUTTON
                gr.Button(label, size="sm", elem_id=eid(key), elem_classes=["mod-tile-preset"],
                          visible=bool(controlnet_tile.tile_models()))
        gr.HTML(_editor_html(tab), elem_id=eid("editor"))
        problems = gr.HTML("", elem_id=eid("problems"))
        presets = _preset_rows(eid)
        with gr.Accordion("Preset JSON (the whole configuration)", open=False, elem_id=eid("json")):
            config = gr.Textbox(DEFAULT_CONFIG, lines=10, max_lines=40, label="Configuration (preset JSON)",
                                elem_id=eid("config"), elem_classes=["mod-config"],
                                info="What the panel sends to the generation and writes into the infotext. "
                                     "The editor and the controls write it; edit it here and they follow.")
    _wire_presets(presets, config)
    _follow_config(tab, config, problems, upscaler, upscalers)
    return enabled, config


def upscaler_names():
    """The WebUI's upscalers; Lanczos alone when the list cannot be read (the host adapter checks the name)."""
    try:
        from modules import shared
        names = [x.name for x in shared.sd_upscalers]
    except (ImportError, AttributeError, TypeError):
        names = []
    return names or ["Lanczos"]


def _upscale_controls(eid, control):
    """img2img: the preset's "upscale" section (the editor's script keeps them and the JSON in step).
    Returns the Upscaler dropdown and its choices."""
    names = upscaler_names()
    with gr.Row(elem_classes=["mod-controls", "mod-upscale"]):
        upscaler = gr.Dropdown(names, value="Lanczos" if "Lanczos" in names else names[0], label="Upscale with",
                               elem_id=eid("upscaler"),
                               info="resizes the source image once, before the tiled refinement")
        control(gr.Radio, "upscale_target")
        control(gr.Radio, "upscale_fit")
    with gr.Row(elem_classes=["mod-controls", "mod-upscale"]):
        for name in ("upscale_scale", "upscale_width", "upscale_height"):
            control(gr.Number, name)
        control(gr.Slider, "upscale_guide")
    return upscaler, names


def _editor_html(tab):
    # What "auto" tile and batch sizes are chosen for on this server (the editor shows the choice;
    # the job chooses again from the memory free when it starts).
    budget = panel_budget()
    auto = "" if budget is None else (f' data-auto-model="{html.escape(budget.model.name if budget.model else "")}"'
                                      f' data-auto-budget="{int(budget.bytes)}"'
                                      f' data-auto-source="{html.escape(budget.source)} at start-up"')
    return (f'<div class="mod-editor" data-tab="{tab}"{auto}>'
            '<div class="mod-editor-placeholder">The region editor needs the page\'s JavaScript; the '
            'configuration below still works.</div></div>')


def _preset_rows(eid):
    """The preset dropdown and its buttons, the confirm row and the status line."""
    c = SimpleNamespace()
    with gr.Row(elem_classes=["mod-presets"], equal_height=False):
        c.name = gr.Dropdown(choices=handlers.choices(), value=None, label="Preset", scale=4, elem_id=eid("preset"))
        c.refresh = ToolButton("\U0001f504", elem_id=eid("refresh"))
        c.load = gr.Button("Load", elem_id=eid("load"), elem_classes=["mod-preset-button"])
        c.delete = gr.Button("Delete", elem_id=eid("delete"), elem_classes=["mod-preset-button"])
    with gr.Row(elem_classes=["mod-presets"], equal_height=False):
        c.save_name = gr.Textbox("", label="Save as", placeholder="name of your preset", max_lines=1, scale=4,
                                 elem_id=eid("save_name"))
        c.save = gr.Button("Save", elem_id=eid("save"), elem_classes=["mod-preset-button"])
        c.upload = gr.UploadButton("Import", file_types=[".json"], file_count="single", elem_id=eid("import"),
                                   elem_classes=["mod-preset-button"])
        gr.Button("Export", elem_id=eid("export"), elem_classes=["mod-preset-button"])  # the editor's script saves
    with gr.Row(visible=False, elem_id=eid("confirm"), elem_classes=["mod-confirm"]) as c.confirm_row:
        c.confirm_text = gr.HTML("", elem_id=eid("confirm_text"))
        c.confirm_yes = gr.Button("Yes", variant="stop", elem_id=eid("confirm_yes"))
        c.confirm_no = gr.Button("Cancel", elem_id=eid("confirm_no"))
    c.status = gr.HTML("", elem_id=eid("status"))
    c.pending = gr.State("")
    return c


def _wire_presets(c, config):
    confirm = [c.confirm_row, c.confirm_text, c.pending]
    c.refresh.click(fn=handlers.refresh, inputs=[c.name], outputs=[c.name])
    c.load.click(fn=handlers.load, inputs=[c.name], outputs=[config, c.status])
    c.save.click(fn=handlers.save, inputs=[config, c.save_name], outputs=[config, c.status, c.name, *confirm])
    c.delete.click(fn=handlers.ask_delete, inputs=[c.name], outputs=[c.status, *confirm])
    c.confirm_yes.click(fn=handlers.confirmed, inputs=[c.pending, config], outputs=[config, c.status, c.name, *confirm])
    c.confirm_no.click(fn=handlers.cancelled, inputs=[], outputs=[c.status, *confirm])
    c.upload.upload(fn=handlers.import_file, inputs=[c.upload], outputs=[config, c.status])


def _follow_config(tab, config, problems, upscaler, upscalers):
    config.change(fn=handlers.check, inputs=[config], outputs=[problems], show_progress=False)
    # The editor follows every change of the JSON (its own, a preset, a paste, a hand edit).
    config.change(fn=None, _js=f"function(text){{ if (window.MoD) MoD.configChanged('{tab}', text); }}",
                  inputs=[config])
    if upscaler is not None:
        # The dropdown writes the JSON through the editor's script; the JSON sets the dropdown
        # in the browser too (gradio drops a Python round trip's change while one is pending).
        upscaler.change(fn=None, _js=f"function(name){{ if (window.MoD) MoD.upscalerChanged('{tab}', name); }}",
                        inputs=[upscaler])
        config.change(fn=None, inputs=[config], outputs=[upscaler],
                      _js=f"function(text, name){{ return window.MoDCore ? MoDCore.upscalerOf(text, name, "
                          f"{json.dumps(upscalers)}) : name; }}")
