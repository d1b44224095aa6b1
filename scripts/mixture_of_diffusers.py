"""Mixture of Diffusers: the WebUI script (panel, arguments, infotext). The work is in
``lib_mixture`` (the engine) and ``lib_mixture_webui`` (the host adapter)."""

from __future__ import annotations

import json

import gradio as gr

from modules import scripts

from lib_mixture.cli import bundled_presets
from lib_mixture.preset import Preset, PresetError, TileGrid, load_preset, loads_preset, parse_preset
from lib_mixture_webui import hook
from lib_mixture_webui.args import INFOTEXT_KEY, infotext_value, pasted_config, read_args
from lib_mixture_webui.job import Job

try:
    from modules.ui_components import InputAccordion
except ImportError:  # WebUI before 1.7
    InputAccordion = None

hook.install()

DEFAULT_CONFIG = Preset(name="tile grid", tiles=TileGrid()).to_json()


class MixtureOfDiffusersScript(scripts.Script):
    def title(self):
        return "Mixture of Diffusers"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        # Side-effect free: the API builds this UI again to learn the default values.
        tab = "img2img" if is_img2img else "txt2img"
        if InputAccordion is not None:
            enabled = InputAccordion(False, label="Mixture of Diffusers", elem_id=f"mod_{tab}_enabled")
            container = enabled
        else:
            container = gr.Accordion("Mixture of Diffusers", open=False)
        with container:
            if InputAccordion is None:
                enabled = gr.Checkbox(False, label="Enable", elem_id=f"mod_{tab}_enabled")
            with gr.Row():
                preset_name = gr.Dropdown(choices=list(bundled_presets()), value=None, label="Preset",
                                          elem_id=f"mod_{tab}_preset",
                                          info="Bundled layouts: the paper's compositions and tile grids")
                load = gr.Button("Load preset", elem_id=f"mod_{tab}_load")
            with gr.Row():
                tile_w = gr.Slider(64, 2048, 768, step=8, label="Tile width (px)", elem_id=f"mod_{tab}_tile_w")
                tile_h = gr.Slider(64, 2048, 768, step=8, label="Tile height (px)", elem_id=f"mod_{tab}_tile_h")
                overlap = gr.Slider(0, 1024, 64, step=8, label="Minimum tile overlap (px)",
                                    elem_id=f"mod_{tab}_overlap")
                batch = gr.Slider(1, 16, 4, step=1, label="Tile batch size", elem_id=f"mod_{tab}_batch",
                                  info="Crops per model call: speed and memory only, the image does not change")
            set_tiles = gr.Button("Apply tile settings", elem_id=f"mod_{tab}_apply_tiles")
            config = gr.Code(DEFAULT_CONFIG, language="json", label="Configuration (preset JSON: tiles, regions, passes)",
                             elem_id=f"mod_{tab}_config", interactive=True)
            status = gr.HTML("", elem_id=f"mod_{tab}_status")

        load.click(fn=_load_preset, inputs=[preset_name], outputs=[config, status])
        set_tiles.click(fn=_set_tiles, inputs=[config, tile_w, tile_h, overlap, batch], outputs=[config, status])
        config.change(fn=_check, inputs=[config], outputs=[status])

        self.infotext_fields = [
            (enabled, lambda params: pasted_config(params) is not None),
            (config, pasted_config),
        ]
        self.paste_field_names = [INFOTEXT_KEY]
        return [enabled, config]

    def setup(self, p, *args):
        p._mod_job = None

    def process(self, p, *args):
        p._mod_job = None
        try:
            enabled, preset = read_args(args)
        except PresetError as e:
            # Script hooks' exceptions are only logged by the WebUI; the denoiser hook raises
            # this at the first step, so the job stops and an API caller sees the message.
            p._mod_job = Job(p, None, error=e)
            return
        if not enabled:
            return
        job = Job(p, preset)
        p._mod_job = job
        # The resolved preset: px boxes carry the canvas they were drawn on, so a paste into
        # another size scales them.
        p.extra_generation_params[INFOTEXT_KEY] = infotext_value(job.preset)

    def process_batch(self, p, *args, **kwargs):
        job = getattr(p, "_mod_job", None)
        if job is not None and job.error is None:
            job.install_region_noise(p)

    def process_before_every_sampling(self, p, *args, **kwargs):
        # WebUI 1.10+: the hires pass's initial noise, for guide images there.
        job = getattr(p, "_mod_job", None)
        if job is not None and getattr(p, "is_hr_pass", False) and kwargs.get("noise") is not None:
            job.noise[True] = kwargs["noise"]



def _load_preset(name):
    if not name:
        return gr.update(), "Choose a preset first."
    try:
        preset = load_preset(bundled_presets()[name])
    except (KeyError, PresetError) as e:
        return gr.update(), _error_html(e)
    return preset.to_json(), f"Loaded <b>{name}</b>."


def _set_tiles(text, tile_w, tile_h, overlap, batch):
    try:
        obj = json.loads(text) if text and text.strip() else {"version": 1}
    except json.JSONDecodeError as e:
        return gr.update(), _error_html(e)
    obj["tiles"] = {"width": int(tile_w), "height": int(tile_h), "overlap": int(overlap), "batch_size": int(batch)}
    try:
        return parse_preset(obj).to_json(), "Tile settings applied."
    except PresetError as e:
        return gr.update(), _error_html(e)


def _check(text):
    try:
        loads_preset(text)
    except PresetError as e:
        return _error_html(e)
    return ""


def _error_html(error):
    import html

    return f"<pre style='color:var(--error-text-color, #c00);white-space:pre-wrap'>{html.escape(str(error))}</pre>"
