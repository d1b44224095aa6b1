"""Reading the script's arguments: UI values, API values and pasted infotext.

The UI passes ``(enabled, config_json)``. The API may pass the preset object alone
(``"args": [{...}]``), a JSON string, or ``[enabled, object-or-string]``. All become
``(enabled, Preset | None)``; a bad preset raises `PresetError` naming the field. Plain
Python: tested without the WebUI.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from lib_mixture.preset import Preset, PresetError, loads_preset, parse_preset

INFOTEXT_KEY = "Mixture of Diffusers"
WARNINGS_KEY = "Mixture of Diffusers warnings"


def read_args(args: Sequence[Any]) -> tuple[bool, Preset | None]:
    """``(enabled, preset)`` from the script's positional arguments."""
    values = list(args)
    if not values:
        return False, None
    first = values[0]
    if isinstance(first, dict):  # API: the preset object itself
        return True, parse_preset(first, "Mixture of Diffusers argument")
    if isinstance(first, str) and first.strip().startswith("{"):
        return True, loads_preset(first, "Mixture of Diffusers argument")
    enabled = _truthy(first)
    config = values[1] if len(values) > 1 else None
    if not enabled:
        return False, None
    if config is None or (isinstance(config, str) and not config.strip()):
        raise PresetError(["the extension is enabled but has no configuration: give a preset object "
                           "(tiles and/or regions)"], "Mixture of Diffusers argument")
    if isinstance(config, dict):
        return True, parse_preset(config, "Mixture of Diffusers argument")
    if isinstance(config, str):
        return True, loads_preset(config, "Mixture of Diffusers argument")
    raise PresetError([f"expected a preset object or JSON text, got {type(config).__name__}"],
                      "Mixture of Diffusers argument")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def infotext_value(preset: Preset) -> str:
    """The compact JSON written into the infotext (the WebUI quotes it, so commas are safe)."""
    return json.dumps(preset.to_dict(), separators=(",", ":"), ensure_ascii=False)


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
        except json.JSONDecodeError:
            return None
    return text if text.startswith("{") else None
