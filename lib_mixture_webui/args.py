"""Reading the script's arguments: UI values, API values and pasted infotext; writing the
infotext.

The UI passes ``(enabled, config_json)``. The API's ``args`` is always a JSON list (the
WebUI indexes it before any extension sees it): ``[{...}]`` (the preset object), ``["{...}"]``
(its JSON text) or ``[enabled, object-or-text]``. All become ``(enabled, Preset | None)``; a
bad preset raises `PresetError` naming the field. Plain Python: tested without the WebUI.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from lib_mixture.guide_source import infotext_guides
from lib_mixture.limits import DEFAULT_LIMITS, Limits
from lib_mixture.preset import Preset, PresetError, image_seed, loads_preset, parse_preset

INFOTEXT_KEY = "Mixture of Diffusers"
SOURCE = "Mixture of Diffusers argument"  # what PresetError messages call the script's arguments
WARNINGS_KEY = "Mixture of Diffusers warnings"
AUTO_KEY = "Mixture of Diffusers auto"  # how "auto" tile and batch sizes were chosen, and why


def read_args(args: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> tuple[bool, Preset | None]:
    """``(enabled, preset)`` from the script's positional arguments, within ``limits``."""
    values = list(args)
    if not values:
        return False, None
    first = values[0]
    if isinstance(first, dict):  # API: the preset object itself
        return True, parse_preset(first, SOURCE, limits)
    if isinstance(first, str) and first.strip().startswith("{"):
        return True, loads_preset(first, SOURCE, limits)
    enabled = _truthy(first)
    config = values[1] if len(values) > 1 else None
    if not enabled:
        return False, None
    if config is None or (isinstance(config, str) and not config.strip()):
        raise PresetError(["args[1]: the extension is enabled but has no configuration: give a preset object "
                           "(tiles and/or regions)"], SOURCE)
    if isinstance(config, dict):
        return True, parse_preset(config, SOURCE, limits)
    if isinstance(config, str):
        return True, loads_preset(config, SOURCE, limits)
    raise PresetError([f"args[1]: expected a preset object or JSON text, got {type(config).__name__}"],
                      SOURCE)


def _truthy(value: Any) -> bool:
    """The enabled flag: a boolean, 0 or 1, or its text; anything else is a caller's mistake."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise PresetError([f"args[0]: expected true or false (or the preset object, or its JSON text), got "
                       f"{type(value).__name__}"], SOURCE)


_FLAGS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False,
          "": False}


def infotext_value(preset: Preset, offset: int = 0, guide_refs: dict[str, str] | None = None) -> str:
    """The compact JSON written into one image's infotext (the WebUI quotes it, so commas are
    safe): region seeds moved by the image's seed ``offset`` (`image_seed`), and guide images
    as their ``sha256:`` references, never a path or the image itself."""
    obj = preset.to_dict()
    for region in obj["regions"]:
        region["seed"] = image_seed(region["seed"], offset)
    return json.dumps(infotext_guides(obj, guide_refs), separators=(",", ":"), ensure_ascii=False)


class ImageInfotext(str):
    """The infotext value of a job: the text for its first image, and callable per image.

    The WebUI calls callable ``extra_generation_params`` values for every image with
    `create_infotext`'s locals (``p``, ``index``, ``all_seeds``, ``use_main_prompt``, ...) and
    writes ``Seed: all_seeds[index]``; this writes the region seeds that went with that seed,
    so each image's PNG info reproduces it. Being a str, it reads as the first image's text
    wherever the value is not called (the API's ``info``, ``params.txt``).
    """

    def __new__(cls, preset: Preset, guide_refs: dict[str, str] | None = None):
        self = super().__new__(cls, infotext_value(preset, 0, guide_refs))
        self.preset, self.guide_refs = preset, dict(guide_refs or {})
        return self

    def __call__(self, p: Any = None, index: int = 0, all_seeds: Sequence[int] | None = None,
                 use_main_prompt: bool = False, **_: Any) -> str:
        first = getattr(p, "all_seeds", None)
        if use_main_prompt or not first or not all_seeds or index >= len(all_seeds):
            return str(self)
        return infotext_value(self.preset, int(all_seeds[index]) - int(first[0]), self.guide_refs)


def pasted_config(params: dict) -> str | None:
    """The configuration from pasted infotext params, or None when the image has none.

    The WebUI unquotes JSON-quoted values, but older images or hand edits may leave the
    object as a string inside quotes; both are accepted.
    """
    value = params.get(INFOTEXT_KEY)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    text = str(value).strip()
    if text.startswith('"'):
        try:
            text = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return None
    if not text.startswith("{"):
        return None
    return _without_guide_sources(text)


def _without_guide_sources(text: str) -> str:
    """A pasted configuration never names a file: guide images other than ``sha256:``
    references (a path, or anything a stranger's PNG put there) become empty, which the panel
    reports as "give the image again"."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text  # the panel shows the JSON error; nothing is read from it
    regions = obj.get("regions") if isinstance(obj, dict) else None
    if not isinstance(regions, list) or not any(isinstance(r, dict) and isinstance(r.get("guide"), dict)
                                                and isinstance(r["guide"].get("image"), str) for r in regions):
        return text
    for region in regions:
        guide = region.get("guide") if isinstance(region, dict) else None
        if isinstance(guide, dict) and isinstance(guide.get("image"), str):
            guide["image"] = guide["image"] if guide["image"].startswith("sha256:") else ""
    return json.dumps(obj, ensure_ascii=False)
