"""Boot the A1111 WebUI's Python modules inside the current process (no server, no UI).

For tests that call host internals directly (``modules.processing``,
``modules.sd_samplers_cfg_denoiser``, ``modules.scripts``).  Requirements:

* the interpreter is the WebUI's own venv python (``MOD_WEBUI_PYTHON``), because the host's
  pinned packages (gradio 3.41, transformers 4.30, ldm, k-diffusion, ...) must be importable;
* one boot per process: the WebUI patches torch, transformers and more at import, so never
  mix these tests with the project's other tests in one process;
* ``sys.argv`` holds the WebUI's flags while the first ``modules`` import runs (cmd args and
  ``--data-dir`` are parsed at import time); ``IGNORE_CMD_ARGS_ERRORS=1`` lets stray argv
  entries pass; ``COMMANDLINE_ARGS`` must not be set (it is appended to argv);
* the WebUI dir is first on ``sys.path`` and is the cwd.

    from inprocess import boot
    host = boot(ckpt)                    # returns modules.shared; model loaded
    res = txt2img(prompt="a cat", steps=4, width=64, height=64)

Other checkpoints (the tiny SDXL / refiner / SD 2.x ones of ``tiny_families``) are switched to
with the WebUI's own loader and back::

    with use_checkpoint(sdxl_path):      # loads it; the previous model is loaded again after
        txt2img(...)
    load_checkpoint(path)                # switch and stay; boot_checkpoint() is the SD1 one
    register_checkpoint(path).title      # a name for refiner_checkpoint=
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

OFFLINE_CPU_ARGS = (
    "--skip-torch-cuda-test",
    "--use-cpu", "all",
    "--no-half",
    "--precision", "full",
    "--opt-sdp-attention",
    "--no-download-sd-model",
)

_booted: Optional[dict] = None


def boot(ckpt, webui_dir=None, data_dir=None, extra_args: Sequence[str] = (),
         load_model: bool = True, load_scripts: bool = False):
    """Import and initialise the WebUI in this process; return ``modules.shared``.

    ``data_dir``: the WebUI's ``--data-dir`` (a fresh temporary folder by default; put
    extensions to load under ``<data_dir>/extensions`` before calling with load_scripts=True).
    Calling again with the same arguments returns the same host; other arguments raise.
    """
    global _booted
    webui = Path(webui_dir or os.environ.get("MOD_WEBUI_DIR") or "").resolve()
    key = dict(ckpt=str(Path(ckpt).resolve()), webui=str(webui), extra=tuple(extra_args),
               data_dir=str(data_dir) if data_dir else None)
    if _booted is not None:
        if _booted["key"] != key:
            raise RuntimeError("the WebUI is already booted in this process with other arguments")
        return _booted["shared"]
    if not (webui / "webui.py").is_file():
        raise RuntimeError(f"no WebUI at {webui!s} (set MOD_WEBUI_DIR)")

    data = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="mod-webui-inproc-"))
    os.chdir(webui)
    if str(webui) not in sys.path:
        sys.path.insert(0, str(webui))
    os.environ["IGNORE_CMD_ARGS_ERRORS"] = "1"
    os.environ.pop("COMMANDLINE_ARGS", None)
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                 ("GRADIO_ANALYTICS_ENABLED", "False")):
        os.environ.setdefault(k, v)

    saved_argv = sys.argv[:]
    sys.argv = ["webui.py", *OFFLINE_CPU_ARGS, "--ckpt", key["ckpt"], "--data-dir", str(data),
                *extra_args]
    try:
        from modules import initialize
        initialize.imports()  # torch, gradio, ldm/sgm, shared options, processing
    finally:
        sys.argv = saved_argv

    from modules import (extensions, script_callbacks, scripts, sd_hijack,
                         sd_hijack_optimizations, sd_models, sd_samplers, shared)

    sd_samplers.set_samplers()
    script_callbacks.on_list_optimizers(sd_hijack_optimizations.list_optimizers)
    sd_hijack.list_optimizers()
    sd_models.list_models()
    from modules import modelloader
    modelloader.load_upscalers()  # shared.sd_upscalers: Lanczos, Nearest, and any ESRGAN... models present
    if load_scripts:
        extensions.list_extensions()
        scripts.load_scripts()
        # the UI normally does this; it instantiates the Script objects of each tab
        scripts.scripts_txt2img.initialize_scripts(is_img2img=False)
        scripts.scripts_img2img.initialize_scripts(is_img2img=True)
    if load_model:
        sd_models.load_model()
    _booted = dict(key=key, shared=shared, data_dir=data)
    return shared


def data_dir() -> Path:
    if _booted is None:
        raise RuntimeError("not booted")
    return _booted["data_dir"]


def boot_checkpoint() -> Path:
    """The checkpoint the host was booted with."""
    if _booted is None:
        raise RuntimeError("not booted")
    return Path(_booted["key"]["ckpt"])


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def register_checkpoint(path):
    """The WebUI's ``CheckpointInfo`` for ``path``, registered in its checkpoint list (so that
    ``refiner_checkpoint=info.title`` or the file name finds it) and hashed, so its title is final.
    A file the WebUI already lists is returned as it is."""
    from modules import sd_models

    for info in list(sd_models.checkpoints_list.values()):
        if _same_file(info.filename, path):
            return info
    info = sd_models.CheckpointInfo(str(Path(path).resolve()))
    info.register()
    info.calculate_shorthash()  # re-registers under "name [hash]", as loading would
    return info


def ensure_sdxl_approx():
    """Write the random ``VAE-approx/vaeapprox-sdxl.pt`` into the WebUI's models dir if missing
    (every SDXL job loads it; offline, a missing one fails the job)."""
    from modules import paths
    import tiny_families

    path = Path(paths.models_path) / "VAE-approx" / tiny_families.APPROX_NAME
    if not path.is_file():
        tiny_families.write_sdxl_approx(paths.models_path)
    return path


def load_checkpoint(path):
    """Make ``path`` the loaded model with the WebUI's ``sd_models.reload_model_weights`` (which
    also makes it the ``sd_model_checkpoint`` option, as choosing it in the UI does); nothing
    happens when it is loaded already.  Returns ``shared.sd_model``."""
    from modules import sd_models, shared

    info = register_checkpoint(path)
    current = shared.sd_model
    if current is None or not _same_file(current.sd_checkpoint_info.filename, info.filename):
        sd_models.reload_model_weights(info=info)
    shared.opts.data["sd_model_checkpoint"] = shared.sd_model.sd_checkpoint_info.title
    if getattr(shared.sd_model, "is_sdxl", False):
        ensure_sdxl_approx()
    return shared.sd_model


@contextlib.contextmanager
def use_checkpoint(path):
    """Load ``path`` for the ``with`` block (yields ``shared.sd_model``); afterwards load again the
    checkpoint the WebUI had selected before (the one its next job would load: the base model
    when a refiner job left the refiner loaded)."""
    from modules import sd_models

    previous = sd_models.select_checkpoint().filename  # what the next job would load
    try:
        yield load_checkpoint(path)
    finally:
        load_checkpoint(previous)


def script_runner(scripts_with_args: Sequence[Tuple[Any, Sequence[Any]]], is_img2img=False):
    """A ScriptRunner holding only the given always-on Script objects and their args.

    Returns ``(runner, script_args)``; set ``p.scripts = runner`` and then
    ``p.script_args = script_args`` (in that order: the setter calls ``setup()``).
    """
    from modules import scripts

    runner = scripts.ScriptRunner()
    script_args: list = [0]  # slot 0: the selectable-script dropdown, 0 = None
    for script, args in scripts_with_args:
        script.is_txt2img = not is_img2img
        script.is_img2img = is_img2img
        script.args_from = len(script_args)
        script_args.extend(args)
        script.args_to = len(script_args)
        runner.scripts.append(script)
        runner.alwayson_scripts.append(script)
    return runner, script_args


@contextlib.contextmanager
def cfg_calls(interrupt_at: Optional[int] = None):
    """Count the host's CFG denoiser calls of the jobs run inside (one ``on_cfg_denoiser`` callback
    each) into the list it yields; with ``interrupt_at`` = n, interrupt the job at call n as the
    UI's Interrupt does. The callback is removed and the interrupt flag cleared afterwards."""
    from modules import script_callbacks, shared

    calls: list = []

    def count(params):
        calls.append(tuple(params.x.shape[-2:]))
        if len(calls) == interrupt_at:
            shared.state.interrupted = True
    script_callbacks.on_cfg_denoiser(count)
    try:
        yield calls
    finally:
        script_callbacks.remove_callbacks_for_function(count)
        shared.state.interrupted = False


def _processing(cls_name: str, scripts_with_args, is_img2img: bool, **kw):
    from modules import processing, shared

    defaults = dict(prompt="a photo of a cat", negative_prompt="", steps=4, width=64,
                    height=64, sampler_name="Euler", scheduler="Automatic", cfg_scale=7.0,
                    seed=1, do_not_save_samples=True, do_not_save_grid=True)
    defaults.update(kw)
    p = getattr(processing, cls_name)(sd_model=shared.sd_model, **defaults)
    if scripts_with_args:
        runner, args = script_runner(scripts_with_args, is_img2img=is_img2img)
        p.scripts = runner
        p.script_args = args
    return p


def txt2img(scripts_with_args=(), **kw):
    """Run StableDiffusionProcessingTxt2Img through process_images; return Processed."""
    from modules import processing

    p = _processing("StableDiffusionProcessingTxt2Img", scripts_with_args, False, **kw)
    try:
        return processing.process_images(p)
    finally:
        p.close()


def img2img(init_images, scripts_with_args=(), **kw):
    """Run StableDiffusionProcessingImg2Img (``init_images``: PIL images)."""
    from modules import processing

    kw.setdefault("denoising_strength", 0.75)
    p = _processing("StableDiffusionProcessingImg2Img", scripts_with_args, True,
                    init_images=list(init_images), **kw)
    try:
        return processing.process_images(p)
    finally:
        p.close()
