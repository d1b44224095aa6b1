"""Mixture of Diffusers: the WebUI script (its panel from ``lib_mixture_webui.panel``, arguments,
infotext). The work is in ``lib_mixture`` (the engine) and ``lib_mixture_webui`` (the host adapter)."""

from __future__ import annotations

from modules import script_callbacks, scripts

from lib_mixture.preset import PresetError
from lib_mixture_webui import hook, panel, settings, upscale, user_presets, vae
from lib_mixture_webui.args import INFOTEXT_KEY, ImageInfotext, pasted_config, read_args
from lib_mixture_webui.job import Job, read_guides

hook.install()
vae.install()
script_callbacks.on_ui_settings(settings.register)


class MixtureOfDiffusersScript(scripts.Script):
    def title(self):
        return "Mixture of Diffusers"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        enabled, config = panel.build(is_img2img)  # lib_mixture_webui/panel.py: layout and events
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

