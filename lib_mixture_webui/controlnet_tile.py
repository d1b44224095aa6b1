"""The upscale workflow's ControlNet tile unit (the preset's ``upscale.controlnet_tile``).

Upscaling with a tile grid at a denoising strength that adds detail drifts from the source unless a
ControlNet tile model holds each tile to it. With the field set, the job gets one more
sd-webui-controlnet unit before any script's ``process``: that model, the ``tile_resample``
preprocessor at rate 1, weight 1, balanced, no image of its own, so ControlNet takes the img2img
image, which is the upscaled one, and `lib_mixture_webui.controlnet` gives each tile its crop. It
goes through ControlNet's own API for other extensions (``update_cn_script_in_processing``) into
the first disabled unit slot. An enabled unit that already uses the model (the user's own, or one
pasted back from an infotext) is left as it is and nothing is added.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from lib_mixture.preset import PresetError

from .args import SOURCE

FIELD = "upscale.controlnet_tile"
AUTO = "auto"
PREPROCESSOR = "tile_resample"


def _state():
    """sd-webui-controlnet's model list (``scripts.global_state``), or None without it."""
    return sys.modules.get("scripts.global_state")


def tile_models() -> list[str]:
    """The installed ControlNet models with "tile" in their name (ControlNet's ``"name [hash]"``
    keys), sorted case-insensitively; empty without sd-webui-controlnet."""
    names = getattr(_state(), "cn_models", None) or {}
    return sorted((n for n in names if n != "None" and "tile" in n.lower()), key=str.lower)


def family_fit(model: str) -> tuple[bool | None, str]:
    """Whether ControlNet's model ``model`` is for the loaded checkpoint's family, by ControlNet's
    own rule (its file name: "sd15", "xl"...): True, False, or None when the name does not say;
    and the loaded family's name."""
    enums, state = sys.modules.get("scripts.enums"), _state()
    versions = getattr(enums, "StableDiffusionVersion", None)
    if versions is None or not hasattr(state, "get_sd_version"):
        return None, "unknown"
    loaded, of_model = state.get_sd_version(), versions.detect_from_model_name(model)
    if versions.UNKNOWN in (loaded, of_model):
        return None, loaded.name
    return bool(loaded.is_compatible_with(of_model)), loaded.name


def find_model(name: str) -> str | None:
    """ControlNet's key of the model ``name`` gives, by ControlNet's own rule for a unit's model: the
    key itself, a file name without extension (any case), else the shortest file name containing it."""
    state = _state()
    keys, stems = getattr(state, "cn_models", None) or {}, getattr(state, "cn_models_names", None) or {}
    name = name.strip()
    if not name or name == "None":
        return None
    if name in keys:
        return name
    if name.lower() in stems:
        return stems[name.lower()]
    hashed = re.fullmatch(r"(.+) \[[0-9a-fA-F]{8,10}\]", name)
    if hashed:  # "name [hash]" from another machine's infotext: the same file name, another hash
        return find_model(hashed.group(1))
    containing = sorted((stem for stem in stems if name.lower() in stem), key=len)
    return stems[containing[0]] if containing else None


def resolve(spec: str) -> str:
    """The ControlNet model ``spec`` names: ``auto``, the first of `tile_models` named for the loaded
    checkpoint's family, else the first whose name does not say; otherwise as `find_model`.
    PresetError naming the field when none is installed, or when the model is for another family
    (ControlNet itself would only log that and run the job without it)."""
    if spec.strip().lower() == AUTO:
        found = tile_models()
        if not found:
            raise PresetError([f"{FIELD}: 'auto' found no ControlNet model with 'tile' in its name; put one (for "
                               "example control_v11f1e_sd15_tile) in models/ControlNet and refresh, or name the "
                               f"model, or set {FIELD} to ''"], SOURCE)
        fits = {m: family_fit(m) for m in found}
        usable = [m for m in found if fits[m][0]] + [m for m in found if fits[m][0] is None]  # named for it first
        if not usable:
            raise PresetError([f"{FIELD}: 'auto' found only tile models for another model family than the loaded "
                               f"checkpoint ({fits[found[0]][1]}): {', '.join(found)}; install one for it, or name it"],
                              SOURCE)
        return usable[0]
    model = find_model(spec)
    if model is None:
        choices = [n for n in (getattr(_state(), "cn_models", None) or {}) if n != "None"]
        raise PresetError([f"{FIELD}: no ControlNet model named {spec!r}; installed: {', '.join(choices) or 'none'}"],
                          SOURCE)
    fit, family = family_fit(model)
    if fit is False:
        raise PresetError([f"{FIELD}: {model} is a ControlNet model for another model family than the loaded "
                           f"checkpoint ({family}); choose one for it, or 'auto'"], SOURCE)
    return model


def add_unit(p: Any, spec: str) -> str:
    """Give the job ``p`` its ControlNet tile unit (see the module's text); returns a line for
    the console. PresetError naming the field without ControlNet or without the model."""
    code = sys.modules.get("internal_controlnet.external_code")
    if code is None or code.find_cn_script(getattr(p, "scripts", None)) is None:
        raise PresetError([f"{FIELD}: sd-webui-controlnet is not installed or not enabled in this WebUI; install "
                           f"it, or set {FIELD} to ''"], SOURCE)
    model = resolve(spec)
    units = code.get_all_units_in_processing(p)
    for i, unit in enumerate(units):
        if unit.enabled and unit.model and find_model(unit.model) == model:
            return f"ControlNet unit {i + 1} already uses {model}: its settings are kept"
    tile = code.ControlNetUnit(enabled=True, module=PREPROCESSOR, model=model, weight=1.0, image=None,
                               resize_mode="Crop and Resize", pixel_perfect=True, threshold_a=1.0,
                               control_mode="Balanced")
    free = next((i for i, unit in enumerate(units) if not unit.enabled), len(units))
    units[free:free + 1] = [tile]
    code.update_cn_script_in_processing(p, units)
    doubt = "" if "tile" in model.lower() else "; its name has no 'tile': is it a tile model?"
    return f"ControlNet unit {free + 1}: {model} ({PREPROCESSOR}, weight 1) on the upscaled image{doubt}"
