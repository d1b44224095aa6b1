"""The presets shipped in the extension's ``presets/`` folder: their names, files and contents.

One listing for the command line (``python -m lib_mixture presets``, a preset argument given by
name) and the WebUI panel's dropdown (``bundled/<name>``). Standard library only, like the CLI.
"""

from __future__ import annotations

from pathlib import Path

from .preset import Preset, load_preset

FOLDER = Path(__file__).resolve().parent.parent / "presets"


def bundled_presets() -> dict[str, Path]:
    """Every bundled preset's file by name, sorted; read from the folder on each call."""
    return {p.stem: p for p in sorted(FOLDER.glob("*.json"))}


def load_bundled(name: str) -> Preset:
    """A bundled preset by name, validated (PresetError names the bad field); KeyError when there is none."""
    return load_preset(bundled_presets()[name])
