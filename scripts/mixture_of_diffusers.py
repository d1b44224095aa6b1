"""Mixture of Diffusers: the WebUI script (its panel from ``lib_mixture_webui.panel``, arguments,
infotext). The work is in ``lib_mixture`` (the engine) and ``lib_mixture_webui`` (the host adapter)."""

from __future__ import annotations

from modules import script_callbacks, scripts, shared

from lib_mixture.auto_plan import wants_choice
from lib_mixture.preset import PresetError
from lib_mixture_webui import context, controlnet_tile, families, panel, patches, settings, upscale, user_presets
from lib_mixture_webui.args import AUTO_KEY, INFOTEXT_KEY, ImageInfotext, pasted_config, read_args
from lib_mixture_webui.budget import host_budget
from lib_mixture_webui.guides import guide_refs, read_guides
from lib_mixture_webui.job import Job

patches.install()  # the class-level host patches, once (patches.REGISTRY)
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
        context.clear(p)

    def before_process(self, p, *args):
        # The img2img upscale runs before every script's process(): ControlNet, for one, reads the
        # img2img image and size there for a unit without a control image of its own.
        context.clear(p)
        try:
            enabled, preset, guides = configuration(p, args, settings.limits())
            line = prepare_upscale(p, preset.upscale) if enabled and preset.upscale is not None else None
        except PresetError as e:
            context.mark_prepared(p, context.Prepared(True, None, {}, error=e))  # process() stops the job with it
            return
        except families.UnsupportedModel:
            return  # override_settings may load another model before process(), which checks again
        context.mark_prepared(p, context.Prepared(enabled, preset, guides, line))

    def process(self, p, *args):
        ready = context.prepared(p)
        context.clear(p)
        host = patches.install()  # no-op when installed
        host.end_current()  # whatever happened to the last job, this one starts from the plain VAE
        limits = settings.limits()
        try:
            if ready is not None and ready.error is not None:
                raise ready.error
            enabled, preset, guides = ((ready.enabled, ready.preset, ready.guides) if ready is not None
                                       else configuration(p, args, limits))
            if enabled:
                families.check(shared.sd_model)  # again: override_settings may load another model after before_process
                if preset.upscale is not None:
                    print(f"[Mixture of Diffusers] {ready.upscaled if ready else prepare_upscale(p, preset.upscale)}")
                # after the upscale: its canvas; "auto" sizes for the memory free now, the weights loaded
                budget = host_budget(shared.sd_model) if wants_choice(preset) else None
                job = Job(p, preset, limits=limits, budget=budget)
                job.check(p)
        except (PresetError, families.UnsupportedModel) as e:
            # Script hooks' exceptions are only logged by the WebUI; the denoiser hook raises
            # this at the first step, so the job stops and an API caller sees the message.
            context.attach(p, context.JobContext(Job(p, None, error=e)))
            return
        if not enabled:
            return
        # Now, before p.init(), which encodes img2img's init images with the job's VAE settings.
        context.attach(p, context.JobContext(job, host, guides, preset.vae))
        # The resolved preset: px boxes carry the canvas they were drawn on, so a paste into
        # another size scales them; region seeds and guides as each image used them.
        # "auto" tile sizes as chosen (they shape the image), an "auto" batch as asked (it does not).
        shown = job.auto.shown
        p.extra_generation_params[INFOTEXT_KEY] = ImageInfotext(shown, guide_refs(shown, guides))
        if job.auto.note:
            p.extra_generation_params[AUTO_KEY] = job.auto.note
            print(f"[Mixture of Diffusers] {job.auto.note}")

    def postprocess(self, p, processed, *args):
        ctx = context.of(p)
        if ctx is not None:
            for entry in ctx.vae_log:
                what = "image" if entry["mode"] == "encode" else "latent"
                print(f"[Mixture of Diffusers] tiled VAE {entry['mode']} of a {entry['shape'][-1]}x{entry['shape'][-2]} "
                      f"{what}: {entry['tiles']} tile passes, {entry['seconds']:.1f} s")
        context.end(p)

    def process_batch(self, p, *args, **kwargs):
        ctx = context.of(p)
        if ctx is not None:
            ctx.batch_started(p)

    def process_before_every_sampling(self, p, *args, **kwargs):
        # WebUI 1.10+: the hires pass's initial noise, for guide images there.
        ctx = context.of(p)
        if ctx is not None and getattr(p, "is_hr_pass", False) and kwargs.get("noise") is not None:
            ctx.saw_hires_noise(kwargs["noise"])


def prepare_upscale(p, section):
    """img2img's upscale: the init images resized to the target, and the ControlNet tile unit when
    the section names one (before ControlNet's ``process`` reads the units). A console line;
    PresetError naming the field."""
    # the unit first: a missing model stops the job before a long upscale
    unit = controlnet_tile.add_unit(p, section.controlnet_tile) if section.controlnet_tile else None
    line = upscale.apply(p, section)
    return f"{line}; {unit}" if unit else line


def configuration(p, args, limits):
    """``(enabled, preset, guides)`` of a job, checked before any work: the arguments, the model
    family (SD3 stops here), then the guide images, read from what this caller may use. Raises
    PresetError or UnsupportedModel."""
    enabled, preset = read_args(args, limits)
    if not enabled:
        return False, preset, {}
    families.check(shared.sd_model)
    policy = settings.guide_policy(bool(getattr(p, "is_api", False)), str(user_presets.presets_dir()))
    return True, preset, read_guides(preset, policy)
