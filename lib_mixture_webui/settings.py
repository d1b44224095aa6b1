"""The server owner's settings (Settings -> Mixture of Diffusers): where guide image files may
be read from, and the resource limits of one request.

Every option is ``restrict_api``: an API caller cannot change it through ``override_settings``
or ``/sdapi/v1/options``, so a caller can never widen what the server reads or allows.
"""

from __future__ import annotations

import re
from typing import Any

from lib_mixture.guide_source import GuidePolicy
from lib_mixture.limits import DEFAULT_LIMITS, MIB, Limits

SECTION = ("mixture_of_diffusers", "Mixture of Diffusers")

# key: (default, label)
OPTIONS = {
    "mod_guide_folders": ("", "Guide image folders: files inside these folders (one per line) may be named as "
                              "guide images from the panel; your presets folder is always one. Empty: no others"),
    "mod_guide_paths_from_api": (False, "Accept guide image file paths from the API too (only inside the folders "
                                        "above; off: API callers send images as data:image/...;base64 URLs)"),
    "mod_max_regions": (DEFAULT_LIMITS.max_regions, "Most regions in one request"),
    "mod_max_crops": (DEFAULT_LIMITS.max_crops, "Most crops (tiles plus regions) per sampling step in one request"),
    "mod_max_guide_megapixels": (DEFAULT_LIMITS.max_image_pixels / 1e6, "Largest guide image, in megapixels "
                                                                         "(read from the header, before decoding)"),
    "mod_max_guide_mib": (DEFAULT_LIMITS.max_image_chars // MIB, "Longest guide image data URL or file, in MiB"),
    "mod_auto_memory_gib": (0.0, "Memory for \"auto\" tile and batch sizes and the tiled VAE, in GiB: at most "
                                 "this much for the whole job, weights included (0: no cap; the device's free memory "
                                 "caps it either way)"),
}
_MINIMUM = {"mod_auto_memory_gib": 0}  # the other numbers are counts and sizes: at least 1


def register() -> None:
    """Add the options to the WebUI's settings (``on_ui_settings``)."""
    import gradio as gr
    from modules import shared

    for key, (default, label) in OPTIONS.items():
        if isinstance(default, bool):
            component, args = gr.Checkbox, {}
        elif isinstance(default, str):
            component, args = gr.Textbox, {"lines": 3}
        else:
            component, args = gr.Number, {"precision": 0 if isinstance(default, int) else 1,
                                          "minimum": _MINIMUM.get(key, 1)}
        info = shared.OptionInfo(default, label, component, args, section=SECTION, restrict_api=True)
        shared.opts.add_option(key, info)


def _get(opts: Any, key: str) -> Any:
    value = getattr(opts, key, None) if opts is not None else None
    return OPTIONS[key][0] if value is None else value


def limits(opts: Any = None) -> Limits:
    """The limits in force (the defaults where an option is unset or not a positive number)."""
    opts = opts if opts is not None else _opts()

    def positive(key: str, scale: float = 1) -> int:
        try:
            value = int(float(_get(opts, key)) * scale)
        except (TypeError, ValueError):
            value = int(OPTIONS[key][0] * scale)
        return max(1, value)

    return Limits(max_regions=positive("mod_max_regions"), max_crops=positive("mod_max_crops"),
                  max_image_pixels=positive("mod_max_guide_megapixels", 1e6),
                  max_image_chars=positive("mod_max_guide_mib", MIB))


def auto_memory_bytes(opts: Any = None) -> float:
    """The owner's memory for automatic plans in bytes; 0: the device's free memory."""
    try:
        value = float(_get(opts if opts is not None else _opts(), "mod_auto_memory_gib"))
    except (TypeError, ValueError):
        return 0.0
    return value * 2**30 if value > 0 else 0.0


def guide_folders(opts: Any = None) -> tuple[str, ...]:
    text = str(_get(opts if opts is not None else _opts(), "mod_guide_folders") or "")
    return tuple(f.strip() for f in re.split(r"[\n,;]", text) if f.strip())


def guide_policy(from_api: bool, presets_folder: str, opts: Any = None) -> GuidePolicy:
    """Which guide sources this request may use: from the panel, files in the allowed folders
    (the owner's plus the presets folder); from the API, data URLs only unless the owner
    allowed paths there too. Hash references are looked up in the same folders."""
    opts = opts if opts is not None else _opts()
    folders = (*guide_folders(opts), presets_folder)
    paths = (not from_api) or bool(_get(opts, "mod_guide_paths_from_api"))
    hint = ("the WebUI API takes guide images as data:image/...;base64 URLs" if from_api else
            "give the image as a data:image/...;base64 URL, or put the file into your presets folder or a folder "
            "listed in Settings -> Mixture of Diffusers -> Guide image folders")
    return GuidePolicy(folders=folders, allow_paths=paths, limits=limits(opts), refusal_hint=hint)


def _opts() -> Any:
    try:
        from modules import shared

        return shared.opts
    except Exception:  # outside the WebUI: the defaults
        return None
