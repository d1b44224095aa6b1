"""Mixture of Diffusers: the WebUI script (panel, arguments, infotext). The work is in
``lib_mixture`` (the engine) and ``lib_mixture_webui`` (the host adapter)."""

from __future__ import annotations

import html
import json

import gradio as gr

from modules import script_callbacks, scripts
from modules.ui_components import ToolButton

from lib_mixture.cli import bundled_presets
from lib_mixture.preset import (FITS, MAX_SCALE, MAX_SIDE, MIN_SIDE, PASSES, VAE_TILING, Preset, PresetError, TileGrid,
                                 load_preset, loads_preset)
from lib_mixture.weights import DEFAULT_VARIANCE, KINDS
from lib_mixture_webui import hook, settings, upscale, user_presets, vae
from lib_mixture_webui.args import INFOTEXT_KEY, ImageInfotext, pasted_config, read_args
from lib_mixture_webui.job import Job, read_guides

try:
    from modules.ui_components import InputAccordion
except ImportError:  # WebUI before 1.7
    InputAccordion = None

hook.install()
vae.install()
script_callbacks.on_ui_settings(settings.register)

DEFAULT_CONFIG = Preset(name="tile grid", tiles=TileGrid()).to_json()


class MixtureOfDiffusersScript(scripts.Script):
    def title(self):
        return "Mixture of Diffusers"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        # Side-effect free: the API builds this UI again to learn the default values. The whole
        # configuration is the one JSON text `config`; the controls and the region editor
        # (javascript/mixture_of_diffusers.js) write it and follow it.
        tab = "img2img" if is_img2img else "txt2img"

        def eid(name):
            return f"mod_{tab}_{name}"

        if InputAccordion is not None:
            enabled = InputAccordion(False, label="Mixture of Diffusers", elem_id=f"mod_{tab}_enabled")
            container = enabled
        else:
            container = gr.Accordion("Mixture of Diffusers", open=False)
        with container:
            if InputAccordion is None:
                enabled = gr.Checkbox(False, label="Enable", elem_id=f"mod_{tab}_enabled")
            with gr.Row(elem_classes=["mod-controls"]):
                gr.Radio(list(MODES), value="tiles", label="Mode", elem_id=eid("mode"),
                         info="tiles: one grid, main prompt; regions: your boxes; both")
                gr.Radio(list(PASSES), value="both", label="Hires fix passes", elem_id=eid("passes"),
                         visible=not is_img2img, info="which passes are mixed when hires fix is on")
                gr.Radio(list(KINDS), value="gaussian", label="Weighting", elem_id=eid("weighting"),
                         info="how crops fade into each other")
                gr.Slider(0.001, 1.0, DEFAULT_VARIANCE, step=0.001, label="Gaussian variance", elem_id=eid("variance"),
                          info="0.001 to 1 (paper: 0.01); larger = softer")
            with gr.Row(elem_classes=["mod-controls"]):
                gr.Slider(64, 4096, 768, step=8, label="Tile width (px)", elem_id=eid("tile_w"),
                          info="64 to 4096, snapped to 8")
                gr.Slider(64, 4096, 768, step=8, label="Tile height (px)", elem_id=eid("tile_h"),
                          info="64 to 4096, snapped to 8")
                gr.Slider(0, 1024, 64, step=8, label="Minimum tile overlap (px)", elem_id=eid("overlap"),
                          info="0 to tile size - 8, snapped to 8")
                gr.Slider(1, 64, 4, step=1, label="Tile batch size", elem_id=eid("batch"),
                          info="1 to 64 crops per model call")
            upscaler, upscalers = _upscale_controls(eid) if is_img2img else (None, [])
            with gr.Row(elem_classes=["mod-controls", "mod-vae"]):
                gr.Radio(list(VAE_TILING), value="auto", label="VAE tiling", elem_id=eid("vae_tiling"),
                         info="auto: tiled when a plain VAE pass would not fit in free memory; on: always; off: never")
                gr.Slider(0, 4096, 0, step=8, label="VAE tile size (px)", elem_id=eid("vae_tile"),
                          info="0: chosen from free memory; else 64 to 4096, snapped to 8")
            with gr.Row(elem_classes=["mod-tile-presets"]):
                for key, label in TILE_PRESET_BUTTONS:
                    gr.Button(label, size="sm", elem_id=eid(key), elem_classes=["mod-tile-preset"])
            gr.HTML(_editor_html(tab), elem_id=eid("editor"))
            problems = gr.HTML("", elem_id=eid("problems"))
            with gr.Row(elem_classes=["mod-presets"], equal_height=False):
                preset_name = gr.Dropdown(choices=_preset_choices(), value=None, label="Preset", scale=4,
                                          elem_id=eid("preset"))
                refresh = ToolButton("\U0001f504", elem_id=eid("refresh"))
                load = gr.Button("Load", elem_id=eid("load"), elem_classes=["mod-preset-button"])
                delete = gr.Button("Delete", elem_id=eid("delete"), elem_classes=["mod-preset-button"])
            with gr.Row(elem_classes=["mod-presets"], equal_height=False):
                save_name = gr.Textbox("", label="Save as", placeholder="name of your preset", max_lines=1, scale=4,
                                       elem_id=eid("save_name"))
                save = gr.Button("Save", elem_id=eid("save"), elem_classes=["mod-preset-button"])
                upload = gr.UploadButton("Import", file_types=[".json"], file_count="single", elem_id=eid("import"),
                                         elem_classes=["mod-preset-button"])
                gr.Button("Export", elem_id=eid("export"), elem_classes=["mod-preset-button"])
            with gr.Row(visible=False, elem_id=eid("confirm"), elem_classes=["mod-confirm"]) as confirm_row:
                confirm_text = gr.HTML("", elem_id=eid("confirm_text"))
                confirm_yes = gr.Button("Yes", variant="stop", elem_id=eid("confirm_yes"))
                confirm_no = gr.Button("Cancel", elem_id=eid("confirm_no"))
            status = gr.HTML("", elem_id=eid("status"))
            pending = gr.State("")
            with gr.Accordion("Preset JSON (the whole configuration)", open=False, elem_id=eid("json")):
                config = gr.Textbox(DEFAULT_CONFIG, lines=10, max_lines=40, label="Configuration (preset JSON)",
                                    elem_id=eid("config"), elem_classes=["mod-config"],
                                    info="What the panel sends to the generation and writes into the infotext. "
                                         "The editor and the controls write it; edit it here and they follow.")

        confirm_outputs = [confirm_row, confirm_text, pending]
        refresh.click(fn=_refresh_choices, inputs=[preset_name], outputs=[preset_name])
        load.click(fn=_load_preset, inputs=[preset_name], outputs=[config, status])
        save.click(fn=_save_preset, inputs=[config, save_name],
                   outputs=[config, status, preset_name, *confirm_outputs])
        delete.click(fn=_ask_delete, inputs=[preset_name], outputs=[status, *confirm_outputs])
        confirm_yes.click(fn=_confirmed, inputs=[pending, config],
                          outputs=[config, status, preset_name, *confirm_outputs])
        confirm_no.click(fn=_cancelled, inputs=[], outputs=[status, *confirm_outputs])
        upload.upload(fn=_import_preset, inputs=[upload], outputs=[config, status])
        config.change(fn=_check, inputs=[config], outputs=[problems], show_progress=False)
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
        vae.reset()  # whatever happened to the last job, this one starts from the plain VAE
        limits = settings.limits()
        try:
            enabled, preset = read_args(args, limits)
            if enabled:
                # Guide images are read first, before any work, from what this caller may use.
                policy = settings.guide_policy(bool(getattr(p, "is_api", False)), str(user_presets.presets_dir()))
                guides = read_guides(preset, policy)
                if preset.upscale is not None:
                    print(f"[Mixture of Diffusers] {upscale.apply(p, preset.upscale)}")
                job = Job(p, preset, limits=limits, guides=guides)  # after the upscale: its canvas
                job.check_plans(p)
        except PresetError as e:
            # Script hooks' exceptions are only logged by the WebUI; the denoiser hook raises
            # this at the first step, so the job stops and an API caller sees the message.
            p._mod_job = Job(p, None, error=e)
            return
        if not enabled:
            return
        vae.activate(p, preset.vae)  # before p.init(), which encodes img2img's init images
        p._mod_job = job
        # The resolved preset: px boxes carry the canvas they were drawn on, so a paste into
        # another size scales them; region seeds and guides as each image used them.
        p.extra_generation_params[INFOTEXT_KEY] = ImageInfotext(job.preset, job.guide_refs())

    def postprocess(self, p, processed, *args):
        route = getattr(p, "_mod_vae_route", None)
        if route is not None:
            p._mod_vae_log = route.log  # what was tiled, for the console and the tests
            for entry in route.log:
                what = "image" if entry["mode"] == "encode" else "latent"
                print(f"[Mixture of Diffusers] tiled VAE {entry['mode']} of a {entry['shape'][-1]}x{entry['shape'][-2]} "
                      f"{what}: {entry['tiles']} tiles, {entry['seconds']:.1f} s")
        vae.deactivate(p)

    def process_batch(self, p, *args, **kwargs):
        route = getattr(p, "_mod_vae_route", None)
        if route is not None:
            route.sampling_started = True
        job = getattr(p, "_mod_job", None)
        if job is not None and job.error is None:
            job.install_region_noise(p)

    def process_before_every_sampling(self, p, *args, **kwargs):
        # WebUI 1.10+: the hires pass's initial noise, for guide images there.
        job = getattr(p, "_mod_job", None)
        if job is not None and getattr(p, "is_hr_pass", False) and kwargs.get("noise") is not None:
            job.noise[True] = kwargs["noise"]



MODES = ("tiles", "regions", "both")  # the panel's view of a preset: a tile grid, regions, or both
MODE_INFO = ("tiles: a grid driven by the main prompt (large images, upscaling); regions: your boxes, each "
             "with its own prompt; both: the grid with regions on top")
# Buttons the editor's script handles: the size and the tile grid of an upscale in one click.
TILE_PRESET_BUTTONS = (("up2x", "2x"), ("upqhd", "QHD 2560\u00d71440"), ("up4k", "4K UHD 3840\u00d72160"))


# img2img's Upscale target radio; javascript/mixture_of_diffusers_core.js (UPSCALE_CHOICES) maps it to the JSON:
# off = no "upscale" section, 2x = scale 2, QHD/4K = that width and height, scale / size = the number fields.
UPSCALE_TARGETS = ("off", "2x", "QHD 2560\u00d71440", "4K UHD 3840\u00d72160", "scale", "size")


def _upscaler_names():
    """The WebUI's upscalers; Lanczos alone when the list cannot be read (the host adapter checks the name)."""
    try:
        from modules import shared
        names = [x.name for x in shared.sd_upscalers]
    except (ImportError, AttributeError, TypeError):
        names = []
    return names or ["Lanczos"]


def _upscale_controls(eid):
    """img2img: the preset's "upscale" section (the editor's script keeps them and the JSON in step).
    Returns the Upscaler dropdown and its choices. The labels are unique in the tab: the WebUI keeps
    ui-config.json defaults by tab/label, and img2img has its own "Scale"."""
    names = _upscaler_names()
    with gr.Row(elem_classes=["mod-controls", "mod-upscale"]):
        upscaler = gr.Dropdown(names, value="Lanczos" if "Lanczos" in names else names[0], label="Upscale with",
                               elem_id=eid("upscaler"),
                               info="resizes the source image once, before the tiled refinement")
        gr.Radio(list(UPSCALE_TARGETS), value="off", label="Upscale target", elem_id=eid("upscale_target"),
                 info="off; 2x; QHD / 4K: that size; scale / size: the fields below")
        gr.Radio(list(FITS), value="crop", label="Upscale fit", elem_id=eid("upscale_fit"),
                 info="another aspect ratio: crop fills and cuts, pad fits inside, stretch distorts")
    with gr.Row(elem_classes=["mod-controls", "mod-upscale"]):
        gr.Number(2.0, minimum=0.05, maximum=MAX_SCALE, step=0.05, label="Upscale scale", elem_id=eid("upscale_scale"),
                  info=f"0.05 to {MAX_SCALE:g} x the source, sides snapped to 8 px")
        gr.Number(3840, minimum=MIN_SIDE, maximum=MAX_SIDE, step=8, precision=0, label="Upscale width (px)",
                  elem_id=eid("upscale_width"), info=f"{MIN_SIDE} to {MAX_SIDE}, snapped to 8 (target: size)")
        gr.Number(2160, minimum=MIN_SIDE, maximum=MAX_SIDE, step=8, precision=0, label="Upscale height (px)",
                  elem_id=eid("upscale_height"), info=f"{MIN_SIDE} to {MAX_SIDE}, snapped to 8 (target: size)")
        gr.Slider(0.0, 1.0, 0.0, step=0.05, label="Upscale guide strength", elem_id=eid("upscale_guide"),
                  info="0 to 1: the share of steps the upscaled image guides the canvas; 0 = off")
    return upscaler, names


def _editor_html(tab):
    return (f'<div class="mod-editor" data-tab="{tab}">'
            '<div class="mod-editor-placeholder">The region editor needs the page\'s JavaScript; the '
            'configuration below still works.</div></div>')


def _preset_choices():
    try:
        return user_presets.choices()
    except OSError:  # an unreadable presets folder: the bundled ones still work
        return [f"{user_presets.BUNDLED}/{name}" for name in bundled_presets()]


def _refresh_choices(current):
    labels = _preset_choices()
    return gr.update(choices=labels, value=current if current in labels else None)


def _load_preset(label):
    if not label:
        return gr.update(), "Choose a preset first."
    try:
        preset = user_presets.load(label)
    except KeyError:
        return gr.update(), _error_html(f"no preset '{label}' (deleted or renamed? press \U0001f504)")
    except PresetError as e:
        return gr.update(), _error_html(e)
    return preset.to_json(), f"Loaded <b>{html.escape(label)}</b>."


_NO_CONFIRM = (gr.update(visible=False), "", "")


def _save_preset(text, name, overwrite=False):
    try:
        path = user_presets.save(text, name, overwrite=overwrite)
    except FileExistsError:
        clean = user_presets.safe_name(name)
        question = (f"A preset named <b>{html.escape(clean)}</b> exists. Replace it with the current "
                    "configuration?")
        return (gr.update(), "", gr.update(), gr.update(visible=True), question,
                json.dumps({"action": "overwrite", "name": clean}))
    except (ValueError, PresetError, OSError) as e:
        return (gr.update(), _error_html(f"not saved: {e}"), gr.update(), *_NO_CONFIRM)
    label = user_presets.label_for(user_presets.USER, path.stem)
    saved = load_preset(path)
    return (saved.to_json(), f"Saved <b>{html.escape(label)}</b> to <code>{html.escape(str(path))}</code>.",
            gr.update(choices=_preset_choices(), value=label), *_NO_CONFIRM)


def _ask_delete(label):
    try:
        kind, name, path = user_presets.resolve(label)
    except KeyError:
        return ("Choose one of your presets (user/...) first.", *_NO_CONFIRM)
    if kind != user_presets.USER:
        return (f"<b>{html.escape(label)}</b> is bundled with the extension; only your own presets can be deleted.",
                *_NO_CONFIRM)
    question = f"Delete your preset <b>{html.escape(name)}</b> (<code>{html.escape(str(path))}</code>)?"
    return ("", gr.update(visible=True), question, json.dumps({"action": "delete", "label": label}))


def _confirmed(pending, text):
    try:
        job = json.loads(pending) if pending else {}
    except json.JSONDecodeError:
        job = {}
    if job.get("action") == "overwrite":
        return _save_preset(text, job.get("name", ""), overwrite=True)
    if job.get("action") == "delete":
        try:
            path = user_presets.delete(job.get("label", ""))
        except (KeyError, ValueError, OSError) as e:
            return (gr.update(), _error_html(f"not deleted: {e}"), gr.update(), *_NO_CONFIRM)
        return (gr.update(), f"Deleted <code>{html.escape(str(path))}</code>.",
                gr.update(choices=_preset_choices(), value=None), *_NO_CONFIRM)
    return (gr.update(), "", gr.update(), *_NO_CONFIRM)


def _cancelled():
    return ("Cancelled.", *_NO_CONFIRM)


def _import_preset(file):
    path = getattr(file, "name", file)
    if not path:
        return gr.update(), "No file."
    try:
        preset = user_presets.import_file(path)
    except PresetError as e:
        return gr.update(), _error_html(e)
    return preset.to_json(), "Imported the file; <b>Save</b> keeps it among your presets."


def _check(text):
    try:
        loads_preset(text)
    except PresetError as e:
        return _error_html(e)
    return ""


def _error_html(error):
    return f"<pre class='mod-error'>{html.escape(str(error))}</pre>"
